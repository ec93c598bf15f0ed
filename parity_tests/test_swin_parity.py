"""Swin Transformer checkpoints (timm, Microsoft, our files) through vit-convert, vit-parity and
vit-predict into both twins. The forward, gradient, round-trip and bf16 parity of Swin run with
ViT's, over parity_tests.grid.SWIN_GRID."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import vit_jax
import vit_jax.predict
import vit_torch
import vit_torch.predict
from parity_tests.grid import small
from parity_tests.harness import FLOAT32_TOL, build_pair, compare, random_images, rel_error, run_jax, run_torch
from parity_tests.parity_cli import main as parity
from tests import swin_reference
from tests.checkpoint_factories import as_microsoft_swin
from vit_common import TIMM, Checkpoint, read_checkpoint, save_npz, save_safetensors
from vit_common.predict.attention_maps import attention_rollout, last_layer_cls_attention, swin_last_stage_attention
from vit_common.cli.vit_convert import main as convert
from vit_common.cli.vit_predict import main as predict_cli


# Files --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".pt"])
def test_create_model_loads_swin_files_in_both_twins(tmp_path, suffix):
    preset, overrides = small("swin")
    tm, _, weights = build_pair(preset, "torch", **overrides)
    path = tmp_path / f"swin{suffix}"
    if suffix == ".npz":
        save_npz(path, weights, tm.cfg)
    elif suffix == ".safetensors":
        save_safetensors(path, TIMM.export(weights, tm.cfg), tm.cfg)
    else:
        torch.save({"state_dict": tm.state_dict(), "epoch": 3}, path)  # a training checkpoint, no config
    images = random_images(tm.cfg, 2)
    ref = run_torch(tm, images).logits
    for model in (vit_torch.create_model(checkpoint=path, img_size=32), vit_jax.create_model(checkpoint=path, img_size=32)):
        assert model.cfg == tm.cfg
        out = run_torch(model, images) if isinstance(model, torch.nn.Module) else run_jax(model, images)
        assert rel_error(out.logits, ref) <= FLOAT32_TOL


# Microsoft's checkpoints and the command-line tools ----------------------------------------------------
@pytest.fixture(scope="module")
def swin_weights():
    """A tiny three-stage Swin: timm's init plus N(0, 0.02^2) noise, canonical weights and config."""
    preset, overrides = small("swin-3-stages")
    torch.manual_seed(0)
    tm = vit_torch.create_model(preset, **overrides)
    weights = vit_torch.to_canonical(tm)
    rng = np.random.default_rng(0)
    weights = {k: (v + 0.02 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in weights.items()}
    weights["head/fc/kernel"] *= 30  # spread the probabilities apart
    return weights, tm.cfg


def test_microsoft_checkpoint_through_vit_convert(tmp_path, capsys, swin_weights):
    weights, cfg = swin_weights
    ms = {k: torch.from_numpy(v) for k, v in as_microsoft_swin(weights, cfg).items()}
    torch.save({"model": ms}, src := tmp_path / "swin_tiny_patch4_window7_224.pth")  # as Microsoft releases them
    assert convert([str(src), str(dst := tmp_path / "swin.npz")]) == 0
    out = capsys.readouterr().out
    assert "Microsoft Swin-Transformer state dict" in out and "depths=2,2,2 num_heads=2,2,4 window_size=4" in out
    ckpt = read_checkpoint(dst)
    assert ckpt.config == cfg  # the image size follows from the windows: 32
    assert ckpt.weights.keys() == weights.keys() and all(np.array_equal(ckpt.weights[k], weights[k]) for k in weights)
    images = random_images(cfg, 2)
    want, _, _, _ = swin_reference.forward(weights, cfg, images)
    for path in (src, dst):
        out_t = run_torch(vit_torch.create_model(checkpoint=path), images)
        out_j = run_jax(vit_jax.create_model(checkpoint=path), images)
        assert rel_error(out_t.logits, want) <= FLOAT32_TOL and rel_error(out_j.logits, want) <= FLOAT32_TOL
        assert rel_error(out_j.logits, out_t.logits) <= FLOAT32_TOL


def test_same_state_dict_as_timms_checkpoint_filter(swin_weights):
    pytest.importorskip("timm")  # timm needs torchvision, which has no CPU build on CI machines
    import timm
    from timm.models.swin_transformer import checkpoint_filter_fn

    weights, cfg = swin_weights
    model = timm.create_model("swin_tiny_patch4_window7_224", img_size=cfg.img_size, patch_size=cfg.patch_size,
                              window_size=cfg.window_size, embed_dim=cfg.embed_dim, depths=cfg.depths,
                              num_heads=cfg.num_heads, num_classes=cfg.num_classes)
    ms = {k: torch.from_numpy(v) for k, v in as_microsoft_swin(weights, cfg).items()}
    theirs = checkpoint_filter_fn({"model": ms}, model)
    ours = TIMM.export(weights, cfg)
    assert theirs.keys() == ours.keys()
    for k, v in theirs.items():
        np.testing.assert_array_equal(v.numpy(), ours[k], err_msg=k)


def test_window_change_on_conversion(tmp_path, capsys, swin_weights):
    weights, cfg = swin_weights
    save_npz(src := tmp_path / "w4.npz", weights, cfg)
    assert convert([str(src), str(dst := tmp_path / "w8.safetensors"), "--window-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "stage 0 relative position bias tables resampled for 4x4 -> 8x8 windows (bicubic)" in out
    ckpt = read_checkpoint(dst)
    assert ckpt.config.window_size == 8 and [ckpt.config.stage_window(i) for i in range(3)] == [8, 8, 4]
    table = weights["layers_1/blocks_1/attn/relative_position_bias_table"]  # (49, 2) -> (225, 2)
    grid = torch.from_numpy(table.astype(np.float64)).T.reshape(1, 2, 7, 7)
    want = F.interpolate(grid, size=(15, 15), mode="bicubic", align_corners=False).reshape(2, 225).T.numpy()
    np.testing.assert_allclose(ckpt.weights["layers_1/blocks_1/attn/relative_position_bias_table"], want,
                               rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ckpt.weights["layers_2/blocks_0/attn/relative_position_bias_table"],
                                  weights["layers_2/blocks_0/attn/relative_position_bias_table"])  # 4x4 stays
    images = random_images(ckpt.config, 2)
    out_t = run_torch(vit_torch.create_model(checkpoint=dst), images)
    out_j = run_jax(vit_jax.create_model(checkpoint=dst), images)
    assert compare(out_j, out_t)["logits"] <= FLOAT32_TOL


def test_parity_cli_on_a_swin_checkpoint(tmp_path, capsys, swin_weights):
    weights, cfg = swin_weights
    save_npz(path := tmp_path / "swin.npz", weights, cfg)
    assert parity([str(path), "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "canonical Swin layout" in out and "depths=2,2,2" in out
    assert "block  5 attention" in out and "stage 2 output" in out and "-> PASS" in out


def test_predict_maps_agree_and_cli_writes_them(tmp_path, capsys, swin_weights):
    weights, cfg = swin_weights
    tm = vit_torch.predict.load_model(Checkpoint(weights, cfg, {}))
    jm = vit_jax.predict.load_model(Checkpoint(weights, cfg, {}))
    images = random_images(cfg, 2)
    probs_t, att_t = vit_torch.predict.predict(tm, images)
    probs_j, att_j = vit_jax.predict.predict(jm, images)
    assert rel_error(probs_j, probs_t) <= FLOAT32_TOL and len(att_t) == len(att_j) == 6
    maps_t, maps_j = swin_last_stage_attention(att_t, cfg), swin_last_stage_attention(att_j, cfg)
    assert len(maps_t) == 2 and maps_t[0].shape == (2, 4, 16, 16)  # the last stage: a 4x4 grid, 4 heads
    for fn in (lambda m: attention_rollout(m, 0, 4), lambda m: last_layer_cls_attention(m, 0, 4)):
        assert rel_error(fn(maps_j), fn(maps_t)) <= FLOAT32_TOL
    save_npz(ckpt := tmp_path / "swin.npz", weights, cfg)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(img := tmp_path / "a.png")
    assert predict_cli(["--checkpoint", str(ckpt), "--framework", "torch", "--attention-map",
                        str(tmp_path / "maps"), str(img)]) == 0
    png = tmp_path / "maps" / "a.png"
    assert f"attention map: {png}" in capsys.readouterr().out
    with Image.open(png) as im:
        assert im.format == "PNG"



def test_run_folder_roundtrip(tmp_path, swin_weights):
    """vit-convert writes a Swin model as a train.py run folder (orbax) and reads it back exactly."""
    weights, cfg = swin_weights
    save_npz(src := tmp_path / "swin.npz", weights, cfg)
    assert convert([str(src), str(run := tmp_path / "run")]) == 0
    back = read_checkpoint(run)
    assert back.config == cfg and back.weights.keys() == weights.keys()
    assert all(np.array_equal(back.weights[k], weights[k]) for k in weights)
