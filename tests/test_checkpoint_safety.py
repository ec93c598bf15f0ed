"""Checkpoints that would load into a model that runs but lies: non-finite or non-float weights
are refused on every reading path, half precision is widened with a stated cast, and damaged
embedded JSON is a one-line CheckpointError naming the file."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import vit_jax
import vit_torch
from vit_common import (
    TIMM, CheckpointError, WeightsMismatchError, get_config, load_canonical, read_checkpoint, save_npz,
    save_safetensors,
)
from vit_common.cli.vit_convert import main as convert
from vit_common.weights.canonical import check_values
from tests.checkpoint_factories import random_canonical

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)
CFG = get_config("vit_base_patch16_224", **TINY)
HEAD = "head/kernel"
BLOCK = "Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"
NORM = "Transformer/encoder_norm/scale"


def _nan_checkpoint(tmp_path):
    w = random_canonical(CFG)
    w[BLOCK] = w[BLOCK].copy()
    w[BLOCK][3] = np.nan
    save_npz(path := tmp_path / "nan.npz", w, CFG)
    return path


def _one_line(message: str) -> str:
    assert "\n" not in message.strip(), message
    return message


# --- the check itself -------------------------------------------------------------------------

def test_check_values_names_every_offender_by_kind():
    w = random_canonical(CFG)
    w[HEAD] = np.full_like(w[HEAD], np.inf)
    w[BLOCK] = w[BLOCK].copy()
    w[BLOCK][0] = np.nan
    w["cls"] = w["cls"].astype(np.int64)
    w[NORM] = w[NORM] > 0
    with pytest.raises(WeightsMismatchError) as err:
        check_values(w, "m.npz")
    msg = _one_line(str(err.value))
    assert msg.startswith("m.npz: ")
    assert f"not floating point: {NORM} (bool), cls (int64)" in msg
    assert f"NaN or inf values: {BLOCK}, {HEAD}" in msg
    # The finite float entries are not named.
    assert "embedding/kernel" not in msg


def test_check_values_widens_half_precision_and_says_so():
    import ml_dtypes

    w = random_canonical(CFG)
    halves = {HEAD: np.float16, BLOCK: np.float16, "cls": ml_dtypes.bfloat16}
    for k, dtype in halves.items():
        w[k] = w[k].astype(dtype)
    out, notes = check_values(w)
    assert notes == ["1 bfloat16 weight cast to float32 (exact)", "2 float16 weights cast to float32 (exact)"]
    for k in halves:
        assert out[k].dtype == np.float32
        np.testing.assert_array_equal(out[k], w[k].astype(np.float64), err_msg=k)  # exact widening
    assert out.keys() == w.keys()


def test_infinite_half_values_are_refused_after_widening():
    w = random_canonical(CFG)
    w[HEAD] = w[HEAD].astype(np.float16)
    w[HEAD][1, 2] = np.inf  # what a float32 value beyond 65504 becomes in float16
    with pytest.raises(WeightsMismatchError, match=f"NaN or inf values: {HEAD}$"):
        check_values(w)


# --- every reading path -----------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["nan", "int", "bool"])
def test_read_checkpoint_and_load_canonical_refuse(tmp_path, bad):
    w = random_canonical(CFG)
    if bad == "nan":
        w[HEAD] = w[HEAD].copy()
        w[HEAD][0, 0] = np.nan
    else:
        w[HEAD] = w[HEAD].astype(np.int32 if bad == "int" else bool)
    save_npz(path := tmp_path / "m.npz", w, CFG)
    for read in (lambda: read_checkpoint(path), lambda: load_canonical(path, CFG)):
        with pytest.raises(WeightsMismatchError, match=f"{path}: unusable weights.*{HEAD}"):
            read()


def test_timm_state_dict_reports_canonical_names(tmp_path):
    sd = TIMM.export(random_canonical(CFG), CFG)
    sd["blocks.1.mlp.fc1.bias"] = sd["blocks.1.mlp.fc1.bias"].copy()
    sd["blocks.1.mlp.fc1.bias"][-1] = -np.inf
    save_safetensors(path := tmp_path / "m.safetensors", sd, CFG)
    with pytest.raises(WeightsMismatchError, match=f"NaN or inf values: {BLOCK}$"):
        read_checkpoint(path)


@pytest.mark.parametrize("create_model", [vit_torch.create_model, vit_jax.create_model], ids=["torch", "jax"])
def test_create_model_refuses_nan_weights(tmp_path, create_model):
    with pytest.raises(WeightsMismatchError, match=BLOCK):
        create_model(checkpoint=_nan_checkpoint(tmp_path))


def test_half_precision_files_load_as_float32_with_the_cast_recorded(tmp_path):
    w = random_canonical(CFG)
    sd = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in TIMM.export(w, CFG).items()}
    want = {k: v.float().numpy() for k, v in sd.items()}  # independent widening, by torch
    torch.save({"state_dict": sd, "config": CFG.to_dict()}, pt := tmp_path / "m.pt")  # as vit-convert writes
    save_npz(npz := tmp_path / "m.npz", {k: v.astype(np.float16) for k, v in w.items()}, CFG)
    n = len(w)
    ckpt = read_checkpoint(pt)
    assert ckpt.meta["adapted"] == [f"{n} bfloat16 weights cast to float32 (exact)"]
    back = TIMM.export(ckpt.weights, CFG)
    for k in want:
        assert back[k].dtype == np.float32
        np.testing.assert_array_equal(back[k], want[k], err_msg=k)
    ckpt = read_checkpoint(npz, num_classes=5)  # the cast comes before the other adaptations
    assert ckpt.meta["adapted"][0] == f"{n} float16 weights cast to float32 (exact)"
    assert "head replaced" in ckpt.meta["adapted"][1]
    assert all(v.dtype == np.float32 for v in ckpt.weights.values())


def test_vit_convert_prints_the_cast(tmp_path, capsys):
    w = {k: v.astype(np.float16) for k, v in random_canonical(CFG).items()}
    save_npz(src := tmp_path / "half.npz", w, CFG)
    assert convert([str(src), str(dst := tmp_path / "out.npz")]) == 0
    assert f"adapt {len(w)} float16 weights cast to float32 (exact)" in capsys.readouterr().out
    with np.load(dst) as data:
        assert data[HEAD].dtype == np.float32


# --- the commands -----------------------------------------------------------------------------

def test_vit_convert_and_vit_predict_exit_2_on_a_nan_weight(tmp_path, capsys):
    from vit_common.cli.vit_predict import main as predict

    src = _nan_checkpoint(tmp_path)
    assert convert([str(src), str(tmp_path / "out.npz")]) == 2
    err = _one_line(capsys.readouterr().err)
    assert err.startswith("vit-convert: error: ") and BLOCK in err and "NaN or inf" in err
    assert not (tmp_path / "out.npz").exists()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image := tmp_path / "x.png")
    assert predict([str(image), "--checkpoint", str(src), "--framework", "torch"]) == 2
    captured = capsys.readouterr()
    err = _one_line(captured.err)
    assert err.startswith("vit-predict: error: ") and BLOCK in err
    assert "nan" not in captured.out.lower()


# --- damaged embedded JSON --------------------------------------------------------------------

def _damaged_npz(tmp_path, key, text):
    arrays = dict(random_canonical(CFG), __config__=np.array(CFG.to_json()))
    arrays[key] = np.array(text)
    np.savez(path := tmp_path / "damaged.npz", **arrays)
    return path


def _damaged_safetensors(tmp_path, key, text):
    from safetensors.numpy import save_file

    metadata = {"__config__": CFG.to_json(), key: text}
    save_file(TIMM.export(random_canonical(CFG), CFG), str(path := tmp_path / "damaged.safetensors"), metadata)
    return path


@pytest.mark.parametrize("make", [_damaged_npz, _damaged_safetensors], ids=["npz", "safetensors"])
@pytest.mark.parametrize("key,text", [
    ("__config__", '{"embed_dim": 48, "depth":'),  # truncated
    ("__meta__", "{'class_names': ['a']}"),  # Python repr, not JSON
    ("__meta__", '["a", "b"]'),  # JSON, but not an object
    ("__config__", '{"embed_dim": 48, "colour": "red"}'),  # an object, but no model config
])
def test_damaged_embedded_json_is_a_one_line_checkpoint_error(tmp_path, make, key, text):
    path = make(tmp_path, key, text)
    what = "config" if key == "__config__" else "metadata"
    with pytest.raises(CheckpointError, match=f"^{path}: its embedded {what} is damaged") as err:
        read_checkpoint(path)
    _one_line(str(err.value))


@pytest.mark.parametrize("text", ['{"model": {"embed_dim": 48,', '{"train": {}}', '[1, 2]'])
def test_damaged_run_config_is_a_one_line_checkpoint_error(tmp_path, text, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step_000000001.pt").write_bytes(b"")
    (run / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=f"^{run / 'config.json'}: damaged") as err:
        read_checkpoint(run)
    _one_line(str(err.value))
    assert convert([str(run), str(tmp_path / "out.npz")]) == 2
    assert _one_line(capsys.readouterr().err).startswith(f"vit-convert: error: {run / 'config.json'}: damaged")


def test_a_sound_run_config_still_reads(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    w = random_canonical(CFG)
    torch.save({"model": {k: torch.from_numpy(v) for k, v in TIMM.export(w, CFG).items()}},
               run / "checkpoints" / "step_000000001.pt")
    (run / "config.json").write_text(json.dumps({"model": CFG.to_dict()}))
    ckpt = read_checkpoint(run)
    assert ckpt.config == CFG and all(np.array_equal(ckpt.weights[k], w[k]) for k in w)
