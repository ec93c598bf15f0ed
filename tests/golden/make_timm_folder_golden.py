"""Regenerate tests/golden/timm_folder.json and timm_folder_logits.npz: timm itself opening the timm
Hub folders `vit-convert --to timm` writes (tests/timm_folder_cases.py), strictly, and its logits.

timm needs torchvision, which does not import beside the project's CPU torch; run this in a venv
that has both (it imports only numpy, safetensors and vit_common from the project):

    python3 -m venv /tmp/timmvenv && /tmp/timmvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm
    PYTHONPATH=. /tmp/timmvenv/bin/python tests/golden/make_timm_folder_golden.py
"""
import json
import tempfile
from pathlib import Path

import numpy as np
import timm
import torch

from tests.timm_folder_cases import CASES, case_input, case_weights
from vit_common.formats.timm_hub import write_folder

HERE = Path(__file__).parent


def main() -> None:
    configs, logits = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            cfg, weights, meta = case_weights(name)
            folder = Path(tmp) / name
            write_folder(weights, cfg, meta, folder)
            model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()  # strict load
            with torch.no_grad():
                logits[name] = model(torch.from_numpy(case_input(name))).numpy()
            configs[name] = dict(json.loads((folder / "config.json").read_text()), timm_class=type(model).__name__,
                                 timm_data_config=timm.data.resolve_data_config({}, model=model),
                                 timm_version=timm.__version__)
    (HERE / "timm_folder.json").write_text(json.dumps(configs, indent=1, default=list) + "\n")
    np.savez(HERE / "timm_folder_logits.npz", **logits)


if __name__ == "__main__":
    main()
