"""Reading every checkpoint layout in the wild, inferring the architecture, and the errors."""
import re

import numpy as np
import pytest

from vit_common import TIMM, CheckpointError, WeightsMismatchError, get_config, read_checkpoint, save_safetensors
from vit_common.formats.detect import detect_layout
from tests.checkpoint_factories import as_big_vision, as_hf, as_linen, as_opt_target, random_canonical

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)
# timm and HF fuse the heads, so those layouts need an official width to infer them (192 -> 3).
TI = dict(img_size=32, patch_size=8, embed_dim=192, depth=2, num_heads=3, num_classes=10)


def _same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def _check_arch(got, want):
    for field in ("embed_dim", "depth", "num_heads", "patch_size", "img_size", "num_classes", "class_token",
                  "distilled", "no_embed_class", "global_pool", "has_fc_norm", "representation_size", "qkv_bias",
                  "mlp_ratio", "in_chans", "pos_embed"):
        assert getattr(got, field) == getattr(want, field), field


GOOGLE_CASES = {
    "pre-linen": ("vit_base_patch16_224", dict(representation_size=24), lambda w: w),
    "pre-linen opt/target": ("vit_base_patch16_224", {}, as_opt_target),
    "linen": ("vit_base_patch16_224", {}, as_linen),
    "big_vision tok scanned": ("vit_base_patch16_224", dict(no_embed_class=True), as_big_vision),
    "big_vision tok unscanned": ("vit_base_patch16_224", dict(no_embed_class=True), lambda w: as_big_vision(w, False)),
    "big_vision gap": ("vit_base_patch16_gap_224", {}, as_big_vision),
    "big_vision map": ("vit_base_patch16_siglip_224", {}, as_big_vision),
    "big_vision sincos2d gap": ("vit_base_patch16_gap_224", dict(pos_embed="sincos2d", img_size=224), as_big_vision),
    "big_vision map features": ("vit_base_patch16_siglip_224", dict(num_classes=0), as_big_vision),
}


@pytest.mark.parametrize("case", list(GOOGLE_CASES))
def test_google_npz_layouts(tmp_path, case):
    preset, extra, build = GOOGLE_CASES[case]
    cfg = get_config(preset, **{**TINY, **extra})
    canonical = random_canonical(cfg)
    path = tmp_path / "ckpt.npz"
    np.savez(path, **build(canonical))  # no config inside: the architecture is inferred
    ckpt = read_checkpoint(path)
    _same(ckpt.weights, canonical)
    _check_arch(ckpt.config, cfg)
    # No config and no timm name: Google's code computes the tanh GELU, and the reader says so.
    assert ckpt.config.act_layer == "gelu_tanh" and "gelu_tanh" in ckpt.meta["notes"][0]
    assert read_checkpoint(path, act_layer="gelu").config.act_layer == "gelu"  # as timm runs it


def test_a_google_npz_read_under_a_timm_name_keeps_timms_gelu(tmp_path):
    cfg = get_config("vit_tiny_patch16_224", img_size=32, num_classes=10)
    np.savez(tmp_path / "ckpt.npz", **random_canonical(cfg))
    ckpt = read_checkpoint(tmp_path / "ckpt.npz", "vit_tiny_patch16_224")
    assert ckpt.config == cfg and ckpt.config.act_layer == "gelu" and "notes" not in ckpt.meta


# One preset per option of the later families (tiny: 48 wide, 2 blocks, 32 px).
FAMILY_CASES = ["deit3_small_patch16_224", "vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2",
                "vit_giant_patch14_dinov2", "vit_base_patch16_clip_224", "vit_base_patch16_clip_quickgelu_224",
                "vit_base_patch16_siglip_224", "vit_base_patch32_siglip_256", "vit_base_patch16_siglip_gap_224",
                "aimv2_large_patch14_224"]


def _family_tiny(name: str):
    patch = get_config(name).patch_size
    return get_config(name, **dict(TINY, img_size=4 * patch, patch_size=patch,
                                   num_classes=get_config(name).num_classes and 10))


@pytest.mark.parametrize("name", FAMILY_CASES)
@pytest.mark.parametrize("layout", ["canonical", "timm"])
def test_later_family_options_inferred_from_shapes(tmp_path, name, layout):
    """Registers, LayerScale, norm_pre, SwiGLU packed / split, RMSNorm, projection bias and the
    patch-embedding norm are read off the entries present; the activation, which no weight
    holds, is SwiGLU's SiLU, Google's tanh GELU for a Google .npz, timm's exact GELU otherwise."""
    cfg = _family_tiny(name)
    canonical = random_canonical(cfg)
    if layout == "canonical":
        np.savez(tmp_path / "m.npz", **canonical)
        ckpt = read_checkpoint(tmp_path / "m.npz")
    else:
        save_safetensors(tmp_path / "m.safetensors", TIMM.export(canonical, cfg))
        ckpt = read_checkpoint(tmp_path / "m.safetensors", num_heads=3)
    _same(ckpt.weights, canonical)
    act = "silu" if cfg.mlp_layer != "mlp" else "gelu_tanh" if layout == "canonical" else "gelu"
    assert ckpt.config.mlp_dim == cfg.mlp_dim  # the ratio is read as mlp_dim / embed_dim
    assert ckpt.config == cfg.replace(act_layer=act, mlp_ratio=ckpt.config.mlp_ratio)


def test_every_later_family_preset_is_read_back_from_its_shapes():
    """At full size, from the shapes alone (zero-stride arrays: nothing is allocated)."""
    from vit_common import canonical_shapes, list_models
    from vit_common.weights.infer import config_from_summary, summarize_canonical

    names = [n for n in list_models() if re.match(r"^(deit3_|aimv2_|vit_.*_(dinov2$|clip_|siglip_))", n)]
    assert len(names) > 70
    for name in names:
        cfg = get_config(name)
        shapes = {k: np.broadcast_to(np.float32(0), s) for k, s in canonical_shapes(cfg).items()}
        got = config_from_summary(summarize_canonical(shapes))
        act = "silu" if cfg.mlp_layer != "mlp" else got.act_layer  # gelu: no weight says which GELU
        assert got.mlp_dim == cfg.mlp_dim, name
        assert got == cfg.replace(act_layer=act, mlp_ratio=got.mlp_ratio), name


def test_heads_of_the_later_families_widths():
    """timm's fused qkv cannot say the head count (its summary has none): the widths of SigLIP
    so400m, DINOv2 giant and AIMv2 (heads 128 wide) give their released counts."""
    from vit_common import canonical_shapes
    from vit_common.weights.infer import config_from_summary, summarize_canonical

    for name in ("vit_so400m_patch14_siglip_224", "vit_giant_patch14_dinov2", "aimv2_large_patch14_224",
                 "aimv2_huge_patch14_224", "aimv2_1b_patch14_224", "aimv2_3b_patch14_224"):
        cfg = get_config(name, depth=1)
        summary = summarize_canonical({k: np.broadcast_to(np.float32(0), s) for k, s in canonical_shapes(cfg).items()})
        assert config_from_summary(dict(summary, num_heads=None)).num_heads == cfg.num_heads, name


@pytest.mark.parametrize("layout", ["canonical", "timm"])
def test_a_recorded_config_keeps_what_shapes_cannot_say(tmp_path, layout):
    """The activation and eps of a converted file come from the config it records."""
    from vit_common import save_npz

    cfg = _family_tiny("vit_base_patch16_clip_quickgelu_224").replace(norm_eps=1e-4)
    canonical = random_canonical(cfg)
    path = tmp_path / ("m.npz" if layout == "canonical" else "m.safetensors")
    if layout == "canonical":
        save_npz(path, canonical, cfg)
    else:
        save_safetensors(path, TIMM.export(canonical, cfg), cfg)
    ckpt = read_checkpoint(path)
    assert ckpt.config == cfg and "notes" not in ckpt.meta


@pytest.mark.parametrize("name,extra", [("vit_base_patch16_224", {}), ("deit_tiny_distilled_patch16_224", {}),
                                        ("vit_base_patch16_224", dict(global_pool="map", class_token=False))])
def test_timm_safetensors_inferred(tmp_path, name, extra):
    cfg = get_config(name, **{**TI, **extra})
    canonical = random_canonical(cfg)
    save_safetensors(tmp_path / "m.safetensors", TIMM.export(canonical, cfg))  # no config inside
    ckpt = read_checkpoint(tmp_path / "m.safetensors")
    _same(ckpt.weights, canonical)
    _check_arch(ckpt.config, cfg)


@pytest.mark.parametrize("name", ["vit_base_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_huggingface_state_dicts(tmp_path, name):
    cfg = get_config(name, **TI)
    canonical = random_canonical(cfg)
    hf = as_hf(canonical, cfg)
    assert detect_layout(hf) == "hf"
    save_safetensors(tmp_path / "hf.safetensors", hf)
    ckpt = read_checkpoint(tmp_path / "hf.safetensors")
    _same(ckpt.weights, canonical)
    _check_arch(ckpt.config, cfg)


def test_heads_that_shapes_cannot_tell(tmp_path):
    cfg = get_config("vit_base_patch16_224", **TINY)  # width 48: not an official width
    save_safetensors(tmp_path / "m.safetensors", TIMM.export(random_canonical(cfg), cfg))
    with pytest.raises(CheckpointError, match="cannot infer the number of heads for width 48"):
        read_checkpoint(tmp_path / "m.safetensors")
    assert read_checkpoint(tmp_path / "m.safetensors", num_heads=3).config.num_heads == 3


def test_model_name_pins_the_architecture(tmp_path):
    cfg = get_config("deit_tiny_patch16_224", img_size=64, num_classes=7, depth=12)
    canonical = random_canonical(cfg)
    save_safetensors(tmp_path / "m.safetensors", TIMM.export(canonical, cfg))
    ckpt = read_checkpoint(tmp_path / "m.safetensors", "deit_tiny_patch16_224")
    assert ckpt.config == cfg  # grid and class count from the weights, the rest from the preset
    with pytest.raises(WeightsMismatchError) as err:
        read_checkpoint(tmp_path / "m.safetensors", "deit_small_patch16_224")
    text = str(err.value)
    assert "blocks.0.norm1.weight: found (192,), which does not hold 1 x (384,)" in text
    assert text.count("\n") < 25 and "more" in text  # capped, not the whole model


def test_unknown_layout_and_broken_checkpoints(tmp_path):
    np.savez(tmp_path / "odd.npz", foo=np.zeros(3), bar=np.ones(2))
    with pytest.raises(CheckpointError, match="unknown weight layout.*found bar, foo"):
        read_checkpoint(tmp_path / "odd.npz")
    cfg = get_config("vit_base_patch16_224", **TINY)
    w = random_canonical(cfg)
    w["Transformer/posembed_input/pos_embedding"] = w["Transformer/posembed_input/pos_embedding"][:, :15]
    np.savez(tmp_path / "pos.npz", **w)
    with pytest.raises(CheckpointError, match="position embedding of 15 entries fits no square grid"):
        read_checkpoint(tmp_path / "pos.npz")
    bv = as_big_vision(random_canonical(cfg.replace(no_embed_class=True)))
    bv["params/Transformer/encoderblock/LayerNorm_0/scale"] = bv["params/Transformer/encoderblock/LayerNorm_0/scale"][:1]
    np.savez(tmp_path / "bv.npz", **bv)
    with pytest.raises(CheckpointError, match="scanned encoder blocks disagree on depth: \\[1, 2\\]"):
        read_checkpoint(tmp_path / "bv.npz")
    hf = as_hf(random_canonical(get_config("vit_base_patch16_224", **TI)), get_config("vit_base_patch16_224", **TI))
    del hf["vit.encoder.layer.1.attention.attention.key.weight"]
    save_safetensors(tmp_path / "hf.safetensors", hf)
    with pytest.raises(CheckpointError, match=r"encoder.layer.1.attention.attention.\{query\|key\|value\}.weight needs all of"):
        read_checkpoint(tmp_path / "hf.safetensors")


def test_mismatched_checkpoint_lists_every_offender(tmp_path):
    cfg = get_config("vit_base_patch16_224", **TINY)
    w = random_canonical(cfg)
    w["Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"] = np.zeros((48, 100), np.float32)
    del w["Transformer/encoder_norm/bias"]
    np.savez(tmp_path / "bad.npz", **w)
    with pytest.raises(WeightsMismatchError) as err:
        read_checkpoint(tmp_path / "bad.npz", "vit_base_patch16_224", **{k: v for k, v in TINY.items()})
    text = str(err.value)
    assert "encoderblock_1/MlpBlock_3/Dense_0/kernel: expected (48, 192), found (48, 100)" in text
    assert "Transformer/encoder_norm/bias: expected (48,)" in text


def test_new_class_count_gives_a_zero_head(tmp_path):
    cfg = get_config("deit_tiny_distilled_patch16_224", **TI)
    canonical = random_canonical(cfg)
    np.savez(tmp_path / "m.npz", **canonical)
    ckpt = read_checkpoint(tmp_path / "m.npz", num_classes=3)
    assert ckpt.weights["head/kernel"].shape == (192, 3) and not ckpt.weights["head/kernel"].any()
    assert ckpt.weights["head_dist/kernel"].shape == (192, 3)
    assert any("head replaced" in c for c in ckpt.meta["adapted"])
    body = [k for k in canonical if not k.startswith("head")]
    _same({k: ckpt.weights[k] for k in body}, {k: canonical[k] for k in body})


def test_writers_produce_the_official_layouts():
    from vit_common.formats.google import canonical_to_big_vision, canonical_to_linen

    cfg = get_config("vit_base_patch16_siglip_224", **TINY)
    w = random_canonical(cfg)
    for ours, independent in [(canonical_to_linen(w), as_linen(w)), (canonical_to_big_vision(w), as_big_vision(w)),
                              (canonical_to_big_vision(w, scanned=False), as_big_vision(w, scanned=False))]:
        _same(ours, independent)
    bv = canonical_to_big_vision(w)
    assert bv["params/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"].shape == (2, 48, 192)
    assert bv["params/Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel"].shape == (2, 48, 3, 16)
    assert bv["params/pos_embedding"].shape == (1, 16, 48) and "params/MAPHead_0/probe" in bv
    assert "Transformer/encoderblock_1/LayerNorm_1/scale" in canonical_to_linen(w)


SWIN_TINY = dict(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), num_classes=10)
_HF_SWIN_BLOCK = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
                  "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
_HF_SWIN_TOP = {"patch_embed.proj": "embeddings.patch_embeddings.projection", "patch_embed.norm": "embeddings.norm",
                "norm": "layernorm"}


def _as_hf_swin(w: dict, cfg) -> dict:
    """SwinForImageClassification as save_pretrained writes it (the transformers test checks a real one)."""
    out = {}
    for name, value in TIMM.export(w, cfg).items():
        module, leaf = name.rsplit(".", 1)
        if module == "head.fc":
            out[f"classifier.{leaf}"] = value
        elif module in _HF_SWIN_TOP:
            out[f"swin.{_HF_SWIN_TOP[module]}.{leaf}"] = value
        elif m := re.match(r"^layers\.(\d+)\.downsample\.(.+)$", name):  # ends the previous stage in HF
            out[f"swin.encoder.layers.{int(m[1]) - 1}.downsample.{m[2]}"] = value
        else:
            stage, block, rest = re.match(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$", name).groups()
            prefix = f"swin.encoder.layers.{stage}.blocks.{block}"
            if rest == "attn.relative_position_bias_table":
                out[f"{prefix}.attention.self.relative_position_bias_table"] = value
            elif rest.startswith("attn.qkv."):
                for part, chunk in zip(("query", "key", "value"), np.split(value, 3)):
                    out[f"{prefix}.attention.self.{part}.{leaf}"] = chunk
            else:
                out[f"{prefix}.{_HF_SWIN_BLOCK[rest.rsplit('.', 1)[0]]}.{leaf}"] = value
    return out


def test_huggingface_swin_state_dict(tmp_path):
    cfg = get_config("swin_tiny_patch4_window7_224", **SWIN_TINY)
    canonical = random_canonical(cfg)
    hf = _as_hf_swin(canonical, cfg)
    assert "swin.encoder.layers.0.downsample.reduction.weight" in hf
    assert detect_layout(hf) == "hf_swin"
    assert detect_layout(as_hf(random_canonical(get_config("vit_base_patch16_224", **TI)),
                               get_config("vit_base_patch16_224", **TI))) == "hf"
    save_safetensors(tmp_path / "hf.safetensors", hf)
    ckpt = read_checkpoint(tmp_path / "hf.safetensors", img_size=32)  # Swin weights do not say the image size
    _same(ckpt.weights, canonical)
    assert ckpt.config.replace(drop_path_rate=cfg.drop_path_rate) == cfg

    broken = dict(hf)
    del broken["swin.encoder.layers.1.blocks.1.attention.self.value.bias"]
    save_safetensors(tmp_path / "broken.safetensors", broken)
    with pytest.raises(CheckpointError, match=r"encoder.layers.1.blocks.1.attention.self.\{query\|key\|value\}.bias needs all of"):
        read_checkpoint(tmp_path / "broken.safetensors")
    ape = {**hf, "swin.embeddings.position_embeddings": np.zeros((1, 256, 16), np.float32)}
    save_safetensors(tmp_path / "ape.safetensors", ape)
    with pytest.raises(CheckpointError, match="absolute position embedding"):
        read_checkpoint(tmp_path / "ape.safetensors")


def test_a_name_that_fights_the_stored_config_says_so_in_one_line(tmp_path):
    """create_model(NAME, checkpoint=RUN/final.npz) of a run that changed the preset: one line naming the
    fields and the fix, not a list of every mismatched tensor."""
    from vit_common import save_npz
    from vit_common.weights import canonical_shapes

    cfg = get_config("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, embed_dim=96, num_heads=3,
                     global_pool="avg", num_classes=10, in_chans=1)
    save_npz(tmp_path / "final.npz", {k: np.zeros(s, np.float32) for k, s in canonical_shapes(cfg).items()}, cfg)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(tmp_path / "final.npz", "vit_tiny_patch16_224")
    message = str(e.value)
    assert "\n" not in message
    assert "in_chans=1 (the preset's 3)" in message and "depth=2 (the preset's 12)" in message
    assert "embed_dim=96 (the preset's 192)" in message and "leave the name out" in message
    assert read_checkpoint(tmp_path / "final.npz").config == cfg  # as the message says
