"""vit-export on tiny models: what it writes beside the artifact, the check it runs before writing,
and what it refuses (overwriting, a wrong suffix, torchscript). The full-size families in fresh
runtime processes are test_export_runtimes.py's."""
from __future__ import annotations

import json

import jax
import onnxruntime
import pytest
import torch

import vit_jax.export
import vit_torch
from parity_tests.harness import FLOAT32_TOL, perturb, rel_error
from vit_common import get_config, read_checkpoint, save_npz
from vit_common.cli.vit_convert import write_checkpoint
from vit_common.cli.vit_export import main as vit_export
from vit_common.export import check_images

VIT = ("vit_base_patch16_224", dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=4))
SWIN = ("swin_tiny_patch4_window7_224", dict(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(2, 2),
                                            num_heads=(2, 4), num_classes=3))
EVA = ("eva02_tiny_patch14_224", dict(img_size=28, patch_size=7, embed_dim=32, depth=2, num_heads=2))  # features
RECORDED = {"mean": [0.1, 0.2, 0.3], "std": [0.9, 0.8, 0.7], "crop_pct": 0.95, "interpolation": "bilinear",
            "resize": "shorter_side"}
CLASSES = ["cat", "dog", "fox", "owl"]


def _checkpoint(path, name, overrides, meta=None):
    cfg = get_config(name, **overrides)
    torch.manual_seed(0)
    save_npz(path, perturb(vit_torch.to_canonical(vit_torch.build_model(cfg)), seed=1), cfg, meta)
    return path


@pytest.fixture(scope="module")
def vit_src(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("src") / "vit.npz", *VIT,
                       meta={"class_names": CLASSES, "preprocess": RECORDED})


@pytest.fixture(scope="module")
def onnx_export(vit_src, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "vit.onnx"
    return out, vit_export([str(vit_src), str(out)])


def test_onnx_sidecar_says_how_to_feed_it(onnx_export, vit_src):
    out, code = onnx_export
    assert code == 0
    side = json.loads(out.with_name("vit.onnx.json").read_text())
    assert side["format"] == "onnx" and side["artifact"] == "vit.onnx"
    assert side["input"] == {"name": "pixel_values", "layout": "NCHW", "dtype": "float32",
                             "shape": ["batch", 3, 32, 32], "dynamic": ["batch"]}
    assert side["output"]["name"] == "logits" and side["output"]["shape"] == ["batch", 4]
    assert {k: side["preprocess"][k] for k in RECORDED} == RECORDED
    assert side["preprocess"]["source"] == "recorded in the checkpoint"
    assert side["class_names"] == CLASSES
    assert side["config"]["embed_dim"] == 48
    assert 0 <= side["check"]["max_relative_error"] <= FLOAT32_TOL
    assert side["check"]["runtime"].startswith("onnxruntime") and side["check"]["batches"] == [1, 3]
    assert side["exported_with"]["opset"] == "18"


def test_onnx_runs_in_onnxruntime_at_any_batch(onnx_export, vit_src):
    out, _ = onnx_export
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert min(o.version for o in __import__("onnx").load(str(out)).opset_import if o.domain in ("", "ai.onnx")) >= 18
    ckpt = read_checkpoint(vit_src)
    model = vit_torch.load_canonical_(vit_torch.build_model(ckpt.config), ckpt.weights).eval()
    for batch in (1, 5):  # 5: a size neither the trace (2) nor the CLI's check (1, 3) used
        x = check_images(ckpt.config, batch, seed=3).transpose(0, 3, 1, 2).copy()
        with torch.inference_mode():
            want = model(torch.from_numpy(x)).numpy()
        assert rel_error(session.run(None, {"pixel_values": x})[0], want) <= FLOAT32_TOL


def test_check_prints_error_and_feature_model_exports_features(tmp_path, capsys):
    src = _checkpoint(tmp_path / "eva.npz", *EVA)
    out = tmp_path / "eva.jax"
    assert vit_export([str(src), str(out), "--platforms", "cpu,cuda"]) == 0  # lowered for a GPU server too
    assert jax.export.deserialize(bytearray(out.read_bytes())).platforms == ("cpu", "cuda")
    printed = capsys.readouterr().out
    assert "check   jax.export.deserialize" in printed and "max|a-b| / max(1, max|b|) = " in printed
    side = json.loads((tmp_path / "eva.jax.json").read_text())
    assert side["input"]["layout"] == "NHWC" and side["input"]["shape"] == ["batch", 28, 28, 3]
    assert side["output"]["name"] == "features" and side["output"]["shape"] == ["batch", 32]
    assert side["class_names"] is None
    assert side["preprocess"]["source"].startswith("family default")
    assert side["exported_with"]["platforms"] == "cpu,cuda"


def test_swin_onnx(tmp_path, capsys):
    """Shifted windows: attention under a mask, which the ONNX exporter traces with the math kernel."""
    src = _checkpoint(tmp_path / "swin.npz", *SWIN)
    assert vit_export([str(src), str(tmp_path / "swin.onnx")]) == 0
    side = json.loads((tmp_path / "swin.onnx.json").read_text())
    assert side["check"]["max_relative_error"] <= FLOAT32_TOL and side["output"]["shape"] == ["batch", 3]


def test_torch_export_from_a_run_folder(vit_src, tmp_path):
    run = tmp_path / "run"
    write_checkpoint(read_checkpoint(vit_src), run)  # a folder laid out like a train.py run
    out = tmp_path / "vit.pt2"
    assert vit_export([str(run), str(out)]) == 0
    side = json.loads((tmp_path / "vit.pt2.json").read_text())
    assert side["class_names"] == CLASSES and side["check"]["max_relative_error"] <= FLOAT32_TOL
    program = torch.export.load(out).module()
    assert program(torch.zeros(4, 3, 32, 32)).shape == (4, 4)


def test_never_writes_over_a_file_unasked(vit_src, tmp_path, capsys):
    out = tmp_path / "vit.jax"
    out.write_bytes(b"keep")
    assert vit_export([str(vit_src), str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep"
    out.unlink()
    (tmp_path / "vit.jax.json").write_text("{}")  # the sidecar too
    assert vit_export([str(vit_src), str(out)]) == 2
    assert not out.exists()
    assert vit_export([str(vit_src), str(out), "--overwrite", "--no-verify"]) == 0
    assert json.loads((tmp_path / "vit.jax.json").read_text())["check"] is None
    assert vit_export([str(out), str(out)]) == 2
    assert "refusing to write over the source" in capsys.readouterr().err


def test_failed_check_writes_nothing(vit_src, tmp_path, monkeypatch, capsys):
    real = vit_jax.export.run_artifact
    monkeypatch.setattr(vit_jax.export, "run_artifact", lambda *a: real(*a) + 1e-3)  # an artifact that is off
    out = tmp_path / "vit.jax"
    assert vit_export([str(vit_src), str(out)]) == 1
    assert "differs from its twin by 0.001" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,message", [
    (["--format", "onnx", "x.pt2"], "onnx artifacts are written as .onnx; name OUT x.onnx"),
    (["x.bin"], "cannot tell the format from '.bin'"),
    (["x.jax", "--platforms", "cpu", "--format", "torch-export"], "torch-export artifacts are written as .pt2"),
    (["x.pt2", "--platforms", "cpu"], "--platforms applies to --format jax-export only"),
    (["x.onnx", "--opset", "17"], "opset 18 or later"),
])
def test_bad_arguments_one_line(vit_src, tmp_path, capsys, argv, message):
    argv = [str(tmp_path / a) if a.startswith("x.") else a for a in argv]
    assert vit_export([str(vit_src), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_torchscript_refused_naming_its_replacement(vit_src, tmp_path, capsys):
    assert vit_export([str(vit_src), str(tmp_path / "vit.pt"), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert "--format torchscript is not offered" in err and "use --format torch-export" in err
    assert list(tmp_path.iterdir()) == []


def test_torchscript_still_cannot_compile_the_models():
    """The refusal above stays true: when torch.jit.script compiles the models, offer it instead."""
    model = vit_torch.build_model(get_config(VIT[0], **VIT[1])).eval()
    with pytest.raises(RuntimeError):  # where it stops moves as the models change; that it stops must not
        torch.jit.script(model)
