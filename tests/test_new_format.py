"""Adding a format takes what docs/architecture.md says: one module with its LAYOUTS, one line in
detect.DETECTION_ORDER. A toy format, written to a temporary module, is then detected, read
(with what its hook implies), written by write_checkpoint and by vit-convert --to, and read back."""
import re
from pathlib import Path

import numpy as np
import pytest

from vit_common import get_config, read_checkpoint
from vit_common.cli.vit_convert import main as convert
from vit_common.formats import Checkpoint, detect, write_checkpoint
from vit_common.formats.containers import read_safetensors
from tests.checkpoint_factories import random_canonical

# The module a contributor writes, as docs/architecture.md shows it (its first python block):
# timm's names under "toy.", a file that does not say its heads (the format implies 2) and runs
# the tanh GELU.
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
TOY_MODULE = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
CFG = get_config("vit_base_patch16_224", img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2,
                 num_classes=3, act_layer="gelu_tanh")


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (package := tmp_path / "toy_formats").mkdir()  # outside vit_common: a dotted name in the order
    (package / "__init__.py").write_text("")
    (package / "toy.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(detect, "DETECTION_ORDER", ["toy_formats.toy", *detect.DETECTION_ORDER])  # the one line


def _same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_toy_format_reads_and_writes_through_read_and_write(toy, tmp_path):
    weights = random_canonical(CFG)
    write_checkpoint(Checkpoint(weights, CFG, {}), path := tmp_path / "m.safetensors", to="toy")
    raw = read_safetensors(path)[0]
    assert raw and all(k.startswith("toy.") for k in raw) and detect.detect_layout(raw) == "toy"
    ckpt = read_checkpoint(path)  # no config inside: the shapes, completed by what the hook implies
    assert ckpt.meta["source_layout"] == "toy" and ckpt.meta["notes"] == ["a toy file"]
    assert (ckpt.config.num_heads, ckpt.config.act_layer, ckpt.config.embed_dim) == (2, "gelu_tanh", 32)
    assert ckpt.config.replace(mlp_ratio=CFG.mlp_ratio) == CFG
    _same(ckpt.weights, weights)


def test_toy_format_through_vit_convert(toy, tmp_path, capsys):
    weights = random_canonical(CFG)
    write_checkpoint(Checkpoint(weights, CFG, {}), src := tmp_path / "src.safetensors", to="toy")
    assert convert([str(src), str(npz := tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert "read  " in out and "(toy state dict)" in out and "note  a toy file" in out
    _same(read_checkpoint(npz).weights, weights)
    assert convert([str(npz), str(back := tmp_path / "back.safetensors"), "--to", "toy"]) == 0
    _same(read_safetensors(back)[0], read_safetensors(src)[0])
    assert convert([str(npz), str(tmp_path / "x.npz"), "--to", "toy"]) == 2  # the Layout's suffixes
    assert "--to toy writes .safetensors, not .npz" in capsys.readouterr().err
