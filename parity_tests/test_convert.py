"""vit-convert end to end: every input layout to every output format, then both twins load the
result with no flags and give the reference model's logits."""
import numpy as np
import pytest
import scipy.ndimage
import torch

import vit_jax
import vit_torch
from vit_common import TIMM, get_config, read_checkpoint, save_npz, save_safetensors
from vit_common.cli.vit_convert import main as convert
from parity_tests import reference
from parity_tests.harness import FLOAT32_TOL, random_images, rel_error, run_jax, run_torch
from tests.checkpoint_factories import as_big_vision, as_hf, as_linen, as_opt_target, random_canonical

TI = dict(img_size=32, patch_size=8, embed_dim=192, depth=2, num_heads=3, num_classes=10)


def _write_source(tmp_path, layout, cfg, w):
    if layout == "npz pre-linen":
        np.savez(path := tmp_path / "src.npz", **as_opt_target(w))
    elif layout == "npz linen":
        np.savez(path := tmp_path / "src.npz", **as_linen(w))
    elif layout == "npz big_vision":
        np.savez(path := tmp_path / "src.npz", **as_big_vision(w))
    elif layout == "timm .pt (DDP training checkpoint)":
        sd = {f"module.{k}": torch.from_numpy(v) for k, v in TIMM.export(w, cfg).items()}
        torch.save({"model": sd, "epoch": 3}, path := tmp_path / "src.pt")
    elif layout == "timm .pth":
        torch.save({k: torch.from_numpy(v) for k, v in TIMM.export(w, cfg).items()}, path := tmp_path / "src.pth")
    elif layout == "hf .safetensors":
        save_safetensors(path := tmp_path / "src.safetensors", as_hf(w, cfg))
    return path


CASES = {
    "npz pre-linen": ("vit_base_patch16_224", {}),
    "npz linen": ("vit_base_patch16_224", dict(representation_size=64)),
    "npz big_vision": ("vit_base_patch16_siglip_224", {}),
    "timm .pt (DDP training checkpoint)": ("deit_tiny_distilled_patch16_224", {}),
    "timm .pth": ("vit_base_patch16_224", dict(global_pool="avg")),
    "hf .safetensors": ("vit_base_patch16_224", {}),
}


@pytest.mark.parametrize("dst_suffix", [".npz", ".safetensors", ".pt"])
@pytest.mark.parametrize("layout", list(CASES))
def test_every_layout_to_every_format(tmp_path, capsys, layout, dst_suffix):
    preset, extra = CASES[layout]
    cfg = get_config(preset, **{**TI, **extra})
    w = random_canonical(cfg)
    src = _write_source(tmp_path, layout, cfg, w)
    dst = tmp_path / f"out{dst_suffix}"
    assert convert([str(src), str(dst)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {dst}" in printed
    if layout.startswith("npz"):  # Google's files, read without a name, run Google's tanh GELU, and say so
        cfg = cfg.replace(act_layer="gelu_tanh")
        assert "note  act_layer='gelu_tanh'" in printed
    if layout.startswith("hf"):  # a transformers file resizes its position table as transformers does
        cfg = cfg.replace(pos_embed_interp="transformers")
    images = random_images(cfg, 2)
    want, _, _ = reference.forward(w, cfg, images)
    for model in (vit_torch.create_model(checkpoint=dst), vit_jax.create_model(checkpoint=dst)):
        assert model.cfg == cfg  # the config travelled inside DST, the activation chosen with it
        run = run_torch if isinstance(model, torch.nn.Module) else run_jax
        assert rel_error(run(model, images).logits, want) <= FLOAT32_TOL


def test_converter_never_overwrites_source_and_leaves_nothing_on_failure(tmp_path, capsys):
    cfg = get_config("vit_base_patch16_224", **TI)
    src = tmp_path / "src.npz"
    np.savez(src, **random_canonical(cfg))
    before = src.read_bytes()
    assert convert([str(src), str(src)]) == 2
    assert "refusing to overwrite the source" in capsys.readouterr().err
    assert src.read_bytes() == before
    assert convert([str(src), str(tmp_path / "out.safetensors"), "--model", "vit_small_patch16_224"]) == 2
    assert "does not fit the model" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.npz"]
    assert convert([str(src), str(tmp_path / "out.h5")]) == 2
    assert "cannot write '.h5'" in capsys.readouterr().err


def test_resampling_on_conversion_matches_googles_zoom(tmp_path, capsys):
    cfg = get_config("vit_base_patch16_224", **TI)  # 4x4 grid + class token
    w = random_canonical(cfg)
    src = tmp_path / "src.npz"
    save_npz(src, w, cfg)
    assert convert([str(src), str(tmp_path / "big.npz"), "--img-size", "56"]) == 0
    assert "position embedding resampled 4x4 -> 7x7 (zoom)" in capsys.readouterr().out
    ckpt = read_checkpoint(tmp_path / "big.npz")
    assert ckpt.config.img_size == 56
    table = w["Transformer/posembed_input/pos_embedding"]
    grid = table[0, 1:].reshape(4, 4, -1).astype(np.float64)
    want = scipy.ndimage.zoom(grid, (7 / 4, 7 / 4, 1), order=1).reshape(1, 49, -1)  # what Google's code does
    got = ckpt.weights["Transformer/posembed_input/pos_embedding"]
    np.testing.assert_array_equal(got[:, :1], table[:, :1])  # the class token's entry is kept
    np.testing.assert_allclose(got[:, 1:], want, rtol=0, atol=1e-6)
    # Both twins run the resampled model identically.
    images = random_images(ckpt.config, 2)
    out_t = run_torch(vit_torch.create_model(checkpoint=tmp_path / "big.npz"), images)
    out_j = run_jax(vit_jax.create_model(checkpoint=tmp_path / "big.npz"), images)
    assert rel_error(out_j.logits, out_t.logits) <= FLOAT32_TOL


def test_patch_size_change_keeps_the_tokens_of_upsampled_images(tmp_path):
    cfg = get_config("vit_base_patch16_224", **{**TI, "img_size": 32, "patch_size": 8})
    w = random_canonical(cfg)
    save_npz(tmp_path / "p8.npz", w, cfg)
    big = read_checkpoint(tmp_path / "p8.npz", patch_size=16, img_size=64)  # same 4x4 grid
    assert big.config.grid_size == 4
    # A 2x-upsampled image through the PI-resized kernel gives the original patch tokens.
    from vit_common.weights.resample import resize_matrix
    images = random_images(cfg, 1)
    m = resize_matrix(8, 16, "bilinear")
    up = np.stack([np.einsum("hi,wj,bijc->bhwc", np.kron(np.eye(4), m), np.kron(np.eye(4), m), images)])[0]
    small_model = vit_torch.create_model(checkpoint=tmp_path / "p8.npz")
    big_model = vit_torch.load_canonical_(vit_torch.create_model("vit_base_patch16_224", **{**TI, "img_size": 64,
                                                                                            "patch_size": 16}), big.weights)
    with torch.no_grad():
        a = small_model.patch_embed(torch.from_numpy(images.transpose(0, 3, 1, 2)))
        b = big_model.patch_embed(torch.from_numpy(np.ascontiguousarray(up.transpose(0, 3, 1, 2)).astype(np.float32)))
    assert rel_error(b.numpy(), a.numpy()) <= FLOAT32_TOL


# timm's _load_weights reads Linen names (MultiHeadDotProductAttention_0...) only under big_vision's
# `params/` prefix; without it, it expects pre-Linen names, so a vision_transformer Linen file
# (as_linen) fails there with a KeyError. The Linen case timm reads is big_vision's unscanned form;
# vision_transformer's own Linen files are checked against transformers below.
TIMM_NPZ_CASES = {
    "pre-linen opt/target": (as_opt_target, {}),
    "linen names, big_vision unscanned": (lambda w: as_big_vision(w, scanned=False), dict(no_embed_class=True)),
    "big_vision scanned": (as_big_vision, dict(no_embed_class=True)),
}


@pytest.mark.parametrize("case", list(TIMM_NPZ_CASES))
def test_same_state_dict_as_timms_own_npz_loader(tmp_path, case):
    timm = pytest.importorskip("timm")  # timm needs torchvision, which has no CPU build on CI machines
    from timm.models.vision_transformer import _load_weights

    build, extra = TIMM_NPZ_CASES[case]
    cfg = get_config("vit_base_patch16_224", **{**TI, **extra})
    w = random_canonical(cfg)
    np.savez(src := tmp_path / "google.npz", **build(w))
    theirs = timm.create_model("vit_base_patch16_224", pretrained=False, **TI, no_embed_class=cfg.no_embed_class)
    _load_weights(theirs, str(src))
    ours = TIMM.export(read_checkpoint(src).weights, cfg)
    for k, v in theirs.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), ours[k], err_msg=k)


def test_linen_npz_gives_transformers_logits(tmp_path):
    """The read the timm test cannot make here (timm needs torchvision): a vision_transformer
    Linen .npz holding HF ViT weights runs in both twins as HF's model does."""
    import transformers  # a dev dependency, unlike timm: missing, this fails rather than skip

    torch.manual_seed(0)
    hf = transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=192, image_size=32,
        patch_size=8, num_labels=10, layer_norm_eps=1e-6, hidden_act="gelu")).eval()
    with torch.no_grad():
        for _, p in sorted(hf.named_parameters()):
            p.add_(0.1 * torch.randn(p.shape))
    hf.save_pretrained(tmp_path / "hf")
    w = read_checkpoint(tmp_path / "hf" / "model.safetensors", num_heads=3).weights
    np.savez(src := tmp_path / "linen.npz", **as_linen(w))
    assert read_checkpoint(src).meta["source_layout"] == "linen"
    images = random_images(get_config("vit_base_patch16_224", **{**TI, "embed_dim": 48}), 2)
    with torch.no_grad():
        want = hf(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).logits.numpy()
    # HF's ViT runs exact GELU; a Google .npz read without a config runs Google's tanh unless told.
    assert rel_error(run_torch(vit_torch.create_model(checkpoint=src), images).logits, want) > 2 * FLOAT32_TOL
    exact = dict(checkpoint=src, act_layer="gelu")
    assert rel_error(run_torch(vit_torch.create_model(**exact), images).logits, want) <= FLOAT32_TOL
    assert rel_error(run_jax(vit_jax.create_model(**exact), images).logits, want) <= FLOAT32_TOL


@pytest.mark.parametrize("layout", ["linen", "big_vision", "run folder"])
def test_writing_the_other_layouts_and_run_folders(tmp_path, capsys, layout):
    cfg = get_config("vit_base_patch16_siglip_224", **TI)  # no class token: every layout can hold it
    w = random_canonical(cfg)
    save_npz(src := tmp_path / "src.npz", w, cfg)
    dst = tmp_path / ("run" if layout == "run folder" else "out.npz")
    extra = [] if layout == "run folder" else ["--layout", layout]
    assert convert([str(src), str(dst), *extra]) == 0
    if layout != "run folder":
        with np.load(dst) as f:
            assert any(k.startswith("params/" if layout == "big_vision" else "Transformer/encoderblock_0/LayerNorm_1")
                       for k in f.files)
    back = read_checkpoint(dst)
    assert back.config == cfg and back.weights.keys() == w.keys()
    assert all(np.array_equal(back.weights[k], w[k]) for k in w)
    images = random_images(cfg, 2)
    want, _, _ = reference.forward(w, cfg, images)
    assert rel_error(run_jax(vit_jax.create_model(checkpoint=dst), images).logits, want) <= FLOAT32_TOL
    assert rel_error(run_torch(vit_torch.create_model(checkpoint=dst), images).logits, want) <= FLOAT32_TOL


def test_big_vision_cannot_hold_a_class_token_position(tmp_path, capsys):
    cfg = get_config("vit_base_patch16_224", **TI)
    save_npz(src := tmp_path / "src.npz", random_canonical(cfg), cfg)
    assert convert([str(src), str(tmp_path / "bv.npz"), "--layout", "big_vision"]) == 2
    assert "big_vision adds the position embedding before the class token" in capsys.readouterr().err
    assert not (tmp_path / "bv.npz").exists()
