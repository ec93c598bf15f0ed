"""Eva checkpoints (EVA-02, DINOv3) through the files and tools: timm's state-dict names,
canonical .npz and timm .safetensors (with or without a config) into both twins, vit-convert,
vit-parity and vit-predict."""
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import vit_jax
import vit_torch
from parity_tests.harness import FLOAT32_TOL, build_pair, random_images, rel_error, run_jax, run_torch
from parity_tests.parity_cli import main as parity
from vit_common import TIMM, read_checkpoint, save_npz
from vit_common.cli.vit_convert import main as convert
from vit_common.cli.vit_predict import main as predict_cli

TINY = dict(img_size=28, patch_size=7, embed_dim=64, depth=2, num_heads=1)

# timm's Eva state-dict names of block 0 and the rest, as timm's eva.py registers them.
TIMM_NAMES = {
    "eva02_tiny_patch14_336": (  # fused qkv + q/v bias, packed SwiGLU, fc_norm, head
        ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "fc_norm.weight",
         "fc_norm.bias", "head.weight", "head.bias"],
        ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.q_bias", "attn.v_bias", "attn.proj.weight",
         "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
         "mlp.fc2.bias"]),
    "eva02_base_patch14_448": (  # q/k/v projections (k without bias), split SwiGLU with its LayerNorm
        ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "fc_norm.weight",
         "fc_norm.bias", "head.weight", "head.bias"],
        ["norm1.weight", "norm1.bias", "attn.q_proj.weight", "attn.q_proj.bias", "attn.k_proj.weight",
         "attn.v_proj.weight", "attn.v_proj.bias", "attn.proj.weight", "attn.proj.bias", "norm2.weight",
         "norm2.bias", "mlp.fc1_g.weight", "mlp.fc1_g.bias", "mlp.fc1_x.weight", "mlp.fc1_x.bias",
         "mlp.norm.weight", "mlp.norm.bias", "mlp.fc2.weight", "mlp.fc2.bias"]),
    "vit_small_patch16_dinov3": (  # registers, no absolute embedding, LayerScale, final norm, no head
        ["cls_token", "reg_token", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"],
        ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight", "attn.proj.bias", "gamma_1",
         "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
         "gamma_2"]),
}


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_state_dict_names_are_timms(name):
    top, block = TIMM_NAMES[name]
    cfg = vit_torch.get_config(name, **TINY)
    want = set(top) | {f"blocks.{i}.{n}" for i in range(cfg.depth) for n in block}
    model = vit_torch.build_model(cfg)
    assert set(model.state_dict()) == want
    assert set(TIMM.export(vit_torch.to_canonical(model), cfg)) == want


def _timm_file(path, tm):
    save_file({k: v.contiguous() for k, v in tm.state_dict().items()}, path)  # as timm saves: no config


@pytest.mark.parametrize("name", ["eva02_tiny_patch14_336", "vit_small_patch16_dinov3_qkvb"])
def test_files_load_in_both_twins(tmp_path, name):
    """Canonical .npz with its config, and a timm .safetensors read by preset name (the shapes fix
    the rest) and with no name at all (the family's conventions, see weights/infer_eva.py)."""
    tm, _, weights = build_pair(name, "torch", **TINY, num_classes=5)
    images = random_images(tm.cfg, 2)
    want = run_torch(tm, images)
    save_npz(npz := tmp_path / "eva.npz", weights, tm.cfg)
    _timm_file(st := tmp_path / "eva.safetensors", tm)
    structural = {k: TINY[k] for k in ("embed_dim", "depth", "num_heads")}
    loads = [dict(checkpoint=npz), dict(checkpoint=st, name=name, **structural, img_size=28),
             dict(checkpoint=st, num_heads=1, img_size=28)]
    for kwargs in loads:
        for create, run in ((vit_torch.create_model, run_torch), (vit_jax.create_model, run_jax)):
            model = create(**kwargs)
            assert model.cfg.arch == "eva" and model.cfg.mlp_dim == tm.cfg.mlp_dim
            out = run(model, images)
            assert rel_error(out.logits, want.logits) <= FLOAT32_TOL, kwargs
            assert rel_error(out.hidden_states[-1], want.hidden_states[-1]) <= FLOAT32_TOL, kwargs


def test_image_size_change_resamples_eva02_position_embedding(tmp_path):
    tm, _, weights = build_pair("eva02_tiny_patch14_336", "torch", **TINY, num_classes=5)
    save_npz(src := tmp_path / "eva.npz", weights, tm.cfg)
    ckpt = read_checkpoint(src, img_size=42)
    assert ckpt.weights["pos_embed"].shape == (1, 1 + 36, 64) and ckpt.config.ref_feat_shape == 16
    assert any("position embedding resampled 4x4 -> 6x6" in c for c in ckpt.meta["adapted"])
    images = random_images(ckpt.config, 2)
    out_t = run_torch(vit_torch.create_model(checkpoint=src, img_size=42), images)
    out_j = run_jax(vit_jax.create_model(checkpoint=src, img_size=42), images)
    assert rel_error(out_j.logits, out_t.logits) <= FLOAT32_TOL


def test_vit_convert_and_parity(tmp_path, capsys):
    tm, _, _ = build_pair("eva02_base_patch14_448", "torch", **TINY, num_classes=5)
    _timm_file(src := tmp_path / "eva02_base.safetensors", tm)
    args = ["--model", "eva02_base_patch14_448", "--num-heads", "1", "--img-size", "28"]
    assert convert([str(src), str(dst := tmp_path / "eva.npz"), *args]) != 0  # embed_dim is no convert flag
    capsys.readouterr()
    assert convert([str(src), str(dst), "--num-heads", "1"]) == 0  # inferred: EVA-02, rope 'cat'
    out = capsys.readouterr().out
    assert "timm state dict" in out and "eva embed_dim=64 depth=2 num_heads=1" in out and "rope=cat" in out
    ckpt = read_checkpoint(dst)
    assert ckpt.config.qkv_fused is False and ckpt.config.scale_mlp and ckpt.config.num_classes == 5
    assert ckpt.meta["preprocess"]["mean"] == [0.48145466, 0.4578275, 0.40821073]  # OpenAI CLIP's
    assert convert([str(dst), str(tmp_path / "linen.npz"), "--layout", "linen"]) == 2
    assert "no linen layout" in capsys.readouterr().err
    assert parity([str(dst), "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "canonical Eva layout" in out and "block  1 attention" in out and "-> PASS" in out


def test_vit_predict_eva02_with_attention_maps(tmp_path, capsys):
    tm, _, weights = build_pair("eva02_tiny_patch14_336", "torch", **TINY, num_classes=5)
    save_npz(ckpt := tmp_path / "eva.npz", weights, tm.cfg)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(img := tmp_path / "a.png")
    for framework in ("torch", "jax"):
        assert predict_cli(["--checkpoint", str(ckpt), "--framework", framework, "--attention-map",
                            str(tmp_path / f"maps-{framework}"), str(img)]) == 0
        png = tmp_path / f"maps-{framework}" / "a.png"
        out = capsys.readouterr().out
        assert "family default: timm EVA-02" in out and f"attention map: {png}" in out
    dinov3, _, weights = build_pair("vit_small_patch16_dinov3", "torch", **TINY)
    save_npz(features := tmp_path / "dinov3.npz", weights, dinov3.cfg)
    saved = {}
    for framework in ("torch", "jax"):  # a feature model: vit-predict gives its embeddings
        assert predict_cli(["--checkpoint", str(features), "--framework", framework, "--save-features",
                            str(out := tmp_path / f"features-{framework}.npy"), str(img)]) == 0
        saved[framework] = np.load(out)
    assert saved["torch"].shape == (1, dinov3.cfg.embed_dim)
    assert rel_error(saved["jax"], saved["torch"]) < 1e-5
