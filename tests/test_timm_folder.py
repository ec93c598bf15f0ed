"""vit-convert --to timm FOLDER writes timm's Hub layout. timm itself opened these very folders when
tests/golden/ was made (make_timm_folder_golden.py: strict load, its class, data config and logits),
so CI checks, without timm, that the folders we write now are those and compute those logits."""
import json
from pathlib import Path

import numpy as np
import pytest

from tests.timm_folder_cases import CASES, case_input, case_weights
from vit_common import CheckpointError, read_checkpoint, save_npz
from vit_common.formats import write_checkpoint
from vit_common.cli.vit_convert import main as vit_convert

GOLDEN = Path(__file__).parent / "golden"
TIMM_CONFIGS = json.loads((GOLDEN / "timm_folder.json").read_text())


@pytest.fixture(scope="module")
def timm_logits():
    with np.load(GOLDEN / "timm_folder_logits.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("name", sorted(CASES))
def test_timm_opens_the_folder_we_write(name, tmp_path, timm_logits):
    import vit_torch

    cfg, weights, meta = case_weights(name)
    save_npz(tmp_path / "src.npz", weights, cfg, meta=meta)
    assert vit_convert([str(tmp_path / "src.npz"), str(tmp_path / "timm"), "--to", "timm"]) == 0
    written = json.loads((tmp_path / "timm" / "config.json").read_text())
    golden = TIMM_CONFIGS[name]
    # What timm read: the same architecture, class count, keyword arguments and preprocessing.
    for key in ("architecture", "num_classes", "num_features", "global_pool", "model_args"):
        assert written[key] == golden[key], key
    assert written["pretrained_cfg"] == golden["pretrained_cfg"]

    # Read back by the twins, the model computes timm's logits from that folder.
    ckpt = read_checkpoint(tmp_path / "timm")
    assert ckpt.meta["class_names"] == meta["class_names"]
    assert ckpt.meta["preprocess"] == dict(meta["preprocess"], mean=list(meta["preprocess"]["mean"]))
    model = vit_torch.load_canonical_(vit_torch.models.build_model(ckpt.config), ckpt.weights).eval()
    import torch

    with torch.no_grad():
        ours = model(torch.from_numpy(case_input(name))).numpy()
    theirs = timm_logits[name]
    assert np.isfinite(ours).all()
    assert np.abs(ours - theirs).max() / max(1.0, np.abs(theirs).max()) <= 1e-5


def test_a_model_timm_cannot_build_by_keywords_is_refused(tmp_path):
    cfg, weights, _ = case_weights("vit_avg_gray")
    cfg = cfg.replace(norm_eps=1e-4)  # no preset has it, and timm takes no LayerNorm epsilon keyword
    save_npz(tmp_path / "src.npz", weights, cfg)
    with pytest.raises(CheckpointError, match=r"timm has no keyword for norm_eps=0.0001 .*write a timm state dict"):
        write_checkpoint(read_checkpoint(tmp_path / "src.npz"), tmp_path / "out", to="timm")
    assert not (tmp_path / "out").exists()
