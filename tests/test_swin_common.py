"""vit_common for Swin (numpy only): presets, validation, the canonical layout and timm's names,
the window tables, checkpoint reading (timm, Microsoft, canonical), inference and adaptation."""
import json

import numpy as np
import pytest

from vit_common import (
    TIMM, CheckpointError, ConfigError, SwinConfig, ViTConfig, WeightsMismatchError, canonical_shapes, check_weights, config_from_dict,
    count_params, get_config, list_models, read_checkpoint, save_npz, save_safetensors,
)
from vit_common.weights import FLAX
from vit_common.weights.infer import summarize_swin_timm, swin_config_from_summary
from vit_common.formats.detect import detect_layout
from vit_common.formats.microsoft_swin import microsoft_swin_to_timm
from vit_common.config.windows import (
    MASK_VALUE, full_attention, relative_position_index, shifted_window_mask, window_partition, window_reverse,
)
from tests.checkpoint_factories import as_microsoft_swin, random_canonical

# timm's parameter counts for the same names (1000 classes), as timm.create_model(name) reports them.
SWIN_TIMM_COUNTS = {
    "swin_tiny_patch4_window7_224": 28_288_354,
    "swin_small_patch4_window7_224": 49_606_258,
    "swin_base_patch4_window7_224": 87_768_224,
    "swin_base_patch4_window12_384": 87_903_584,
}
TINY = dict(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), num_classes=10)
TINY_NAME = "swin_tiny_patch4_window7_224"


@pytest.mark.parametrize("name,count", [*SWIN_TIMM_COUNTS.items(), ("swin_large_patch4_window7_224", 196_532_476),
                                        ("swin_large_patch4_window12_384", 196_735_516)])
def test_parameter_counts_match_timm(name, count):
    assert count_params(get_config(name)) == count


def test_presets_and_derived_values():
    assert set(SWIN_TIMM_COUNTS) <= set(list_models("swin_*"))
    cfg = get_config("swin_base_patch4_window12_384")
    assert isinstance(cfg, SwinConfig) and isinstance(get_config("vit_base_patch16_224"), ViTConfig)
    assert (cfg.embed_dim, cfg.depths, cfg.num_heads, cfg.window_size, cfg.img_size) == (
        128, (2, 2, 18, 2), (4, 8, 16, 32), 12, 384)
    assert [cfg.stage_resolution(i) for i in range(4)] == [96, 48, 24, 12]
    assert [cfg.stage_shift(i) for i in range(4)] == [6, 6, 6, 0]  # one 12x12 window in the last stage
    assert cfg.num_features == 1024 and cfg.depth == 24
    tiny = get_config(TINY_NAME)
    assert tiny.drop_path_rate == 0.1 and tiny.global_pool == "avg"  # timm's SwinTransformer defaults
    rates = get_config(TINY_NAME, drop_path_rate=0.2).drop_path_rates()
    assert [len(r) for r in rates] == [2, 2, 6, 2]
    assert sum(rates, []) == pytest.approx(np.linspace(0, 0.2, 12))  # linear over all blocks, as timm


def test_window_shrinks_to_small_resolutions():
    cfg = get_config(TINY_NAME, img_size=32, patch_size=2, window_size=4, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4))
    assert [cfg.stage_resolution(i) for i in range(4)] == [16, 8, 4, 2]
    assert [cfg.stage_window(i) for i in range(4)] == [4, 4, 4, 2]
    assert [cfg.stage_shift(i) for i in range(4)] == [2, 2, 0, 0]
    assert canonical_shapes(cfg)["layers_3/blocks_0/attn/relative_position_bias_table"] == (9, 4)


@pytest.mark.parametrize("overrides,message", [
    (dict(img_size=225), "img_size 225 is not divisible by patch_size 4"),
    (dict(img_size=256), "stage 0 resolution 64x64 is not divisible by window_size 7"),
    (dict(img_size=32, patch_size=2, window_size=4, depths=(1,) * 6, num_heads=(1,) * 6),
     "stage 5 halves a 1x1 grid by patch merging, which needs an even resolution"),
    (dict(num_heads=(3, 5, 12, 24)), "stage 1 width 192 (embed_dim * 2**1) is not divisible by num_heads[1] = 5"),
    (dict(depths=(2, 2)), "give different numbers of stages"),
    (dict(depths=(2, 0, 6, 2)), "depths must be a non-empty sequence of positive integers"),
    (dict(global_pool="token"), "global_pool must be 'avg' or '' for Swin"),
    (dict(window_size=0), "window_size must be a positive integer"),
    (dict(drop_path_rate=1.0), "drop_path_rate must be in [0, 1)"),
    (dict(class_token=False), "unknown keyword override(s) ['class_token']"),
])
def test_bad_configs_fail_with_clear_errors(overrides, message):
    with pytest.raises(ConfigError) as err:
        get_config(TINY_NAME, **overrides)
    assert message in str(err.value)


def test_config_roundtrips_through_json_and_says_its_family():
    cfg = get_config(TINY_NAME, **TINY)
    data = json.loads(cfg.to_json())
    assert data["arch"] == "swin" and data["depths"] == [2, 2]
    assert config_from_dict(data) == cfg and SwinConfig.from_dict(data) == cfg
    vit = get_config("vit_base_patch16_224")
    assert "arch" not in vit.to_dict() and config_from_dict(vit.to_dict()) == vit  # old files stay readable
    with pytest.raises(ConfigError, match="unknown model arch 'convnext'"):
        config_from_dict({"arch": "convnext"})
    with pytest.raises(ConfigError, match="Swin configs have no field"):
        cfg.replace(depth=3)


# The layout --------------------------------------------------------------------------------------
def test_canonical_names_follow_timms_structure():
    shapes = canonical_shapes(get_config(TINY_NAME))
    assert shapes["patch_embed/proj/kernel"] == (4, 4, 3, 96)
    assert shapes["layers_0/blocks_1/attn/qkv/kernel"] == (96, 288)
    assert shapes["layers_0/blocks_1/attn/relative_position_bias_table"] == (169, 3)
    assert shapes["layers_1/downsample/norm/scale"] == (384,)
    assert shapes["layers_1/downsample/reduction/kernel"] == (384, 192)
    assert "layers_1/downsample/reduction/bias" not in shapes and "layers_0/downsample/norm/scale" not in shapes
    assert shapes["layers_3/blocks_1/mlp/fc1/kernel"] == (768, 3072)
    assert shapes["norm/scale"] == (768,) and shapes["head/fc/kernel"] == (768, 1000)


# timm's SwinTransformer(...).state_dict() keys, two stages of one block each.
TIMM_SWIN_KEYS = [
    "patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.norm.weight", "patch_embed.norm.bias",
    *[f"layers.{i}.blocks.0.{k}" for i in (0, 1) for k in (
        "norm1.weight", "norm1.bias", "attn.relative_position_bias_table", "attn.qkv.weight", "attn.qkv.bias",
        "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
        "mlp.fc2.weight", "mlp.fc2.bias")],
    "layers.1.downsample.norm.weight", "layers.1.downsample.norm.bias", "layers.1.downsample.reduction.weight",
    "norm.weight", "norm.bias", "head.fc.weight", "head.fc.bias",
]


def test_timm_names_shapes_and_roundtrips():
    cfg = get_config(TINY_NAME, **{**TINY, "depths": (1, 1)})
    w = random_canonical(cfg)
    sd = TIMM.export(w, cfg)
    assert sorted(sd) == sorted(TIMM_SWIN_KEYS)
    assert sd["patch_embed.proj.weight"].shape == (16, 3, 2, 2)
    assert sd["layers.1.blocks.0.attn.qkv.weight"].shape == (96, 32)
    assert sd["layers.1.downsample.reduction.weight"].shape == (32, 64)
    assert sd["head.fc.weight"].shape == (10, 32)
    for layout in (TIMM, FLAX):
        back = layout.import_(layout.export(w, cfg), cfg)
        assert back.keys() == w.keys() and all(np.array_equal(back[k], w[k]) for k in w)
    assert "layers.1.blocks.0.attn.relative_position_bias_table" in FLAX.export(w, cfg)


def test_check_weights_names_the_swin_model():
    cfg = get_config(TINY_NAME, **TINY)
    w = random_canonical(cfg)
    w["layers_1/blocks_0/attn/relative_position_bias_table"] = np.zeros((9, 4), np.float32)
    with pytest.raises(WeightsMismatchError) as err:
        check_weights(w, cfg, what="swin.npz")
    assert "depths=(2, 2), num_heads=(2, 4), window_size=4" in str(err.value)
    assert "relative_position_bias_table: expected (49, 4), found (9, 4)" in str(err.value)


# Window tables -----------------------------------------------------------------------------------
@pytest.mark.parametrize("window", [1, 2, 3, 7])
def test_relative_position_index_brute_force(window):
    index = relative_position_index(window)
    side = 2 * window - 1
    for a in range(window * window):
        for b in range(window * window):
            (ya, xa), (yb, xb) = divmod(a, window), divmod(b, window)
            assert divmod(int(index[a, b]), side) == (ya - yb + window - 1, xa - xb + window - 1)
    assert index.min() == 0 and index.max() == side * side - 1 and len(np.unique(index)) == side * side


@pytest.mark.parametrize("res,window,shift", [(8, 4, 2), (16, 4, 2), (14, 7, 3), (12, 6, 3), (9, 3, 1)])
def test_shifted_window_mask_brute_force(res, window, shift):
    """Inside each shifted window, two tokens may attend iff the cyclic roll did not separate them:
    their offset on the rolled grid equals their offset on the original grid, on both axes."""
    mask = shifted_window_mask(res, window, shift)
    n = res // window
    assert mask.shape == (n * n, window * window, window * window) and mask.dtype == np.float32
    for k in range(n * n):
        ty, tx = divmod(k, n)
        for a in range(window * window):
            for b in range(window * window):
                rolled = [(ty * window + p // window, tx * window + p % window) for p in (a, b)]
                original = [((y + shift) % res, (x + shift) % res) for y, x in rolled]
                same = all(rolled[0][d] - rolled[1][d] == original[0][d] - original[1][d] for d in (0, 1))
                assert mask[k, a, b] == (0.0 if same else MASK_VALUE), (k, a, b)
    assert shifted_window_mask(res, window, 0) is None


def test_window_partition_roundtrip_and_full_attention():
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3))
    win = window_partition(x, 4)
    assert win.shape == (8, 16, 3)
    np.testing.assert_array_equal(win[1].reshape(4, 4, 3), x[0, :4, 4:])  # window 1: top-right tile
    np.testing.assert_array_equal(window_reverse(win, 4, 8), x)
    # Window attention put back on the grid keeps every row a distribution and zero across windows.
    maps = np.random.default_rng(1).random((8, 2, 16, 16))
    maps /= maps.sum(-1, keepdims=True)
    for shift in (0, 2):
        full = full_attention(maps, 8, 4, shift)
        assert full.shape == (2, 2, 64, 64)
        np.testing.assert_allclose(full.sum(-1), 1.0)
        assert (full > 0).sum(-1).max() == 16  # each token sees its own window only
    full = full_attention(maps, 8, 4, 0)
    np.testing.assert_array_equal(full[0, :, 0, :4], maps[0, :, 0, :4])  # token (0,0), keys (0,0..3)


# Checkpoint reading ------------------------------------------------------------------------------
def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("overrides,img_size", [
    ({}, 16),  # two stages of 4x4 windows: the smallest image whose last stage is one window
    (dict(qkv_bias=False, num_classes=0, mlp_ratio=2.0), 16),
    (dict(depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4)), 32),  # the last stage's 2x2 window fixes the size
])
def test_timm_state_dicts_inferred(tmp_path, overrides, img_size):
    cfg = get_config(TINY_NAME, **{**TINY, **overrides})
    w = random_canonical(cfg)
    save_safetensors(tmp_path / "m.safetensors", TIMM.export(w, cfg))  # no config inside
    ckpt = read_checkpoint(tmp_path / "m.safetensors")
    assert ckpt.meta["source_layout"] == "timm"
    _same(ckpt.weights, w)
    # Everything the weights can say; no Swin weight depends on the image size, save through the windows.
    assert ckpt.config == cfg.replace(img_size=img_size)
    assert read_checkpoint(tmp_path / "m.safetensors", img_size=32).config == cfg.replace(img_size=32)


@pytest.mark.parametrize("name", ["swin_tiny_patch4_window7_224", "swin_base_patch4_window12_384"])
def test_released_sizes_are_inferred_exactly(name):
    cfg = get_config(name, depths=(2, 2, 2, 2))  # shallower, the same shapes per block
    state_dict = TIMM.export({k: np.zeros(s, np.float32) for k, s in canonical_shapes(cfg).items()}, cfg)
    assert swin_config_from_summary(summarize_swin_timm(state_dict)) == cfg  # img_size 224 / 384 included


def test_microsoft_checkpoint_converts_to_canonical(tmp_path):
    cfg = get_config(TINY_NAME, **{**TINY, "depths": (2, 2, 2), "num_heads": (2, 2, 4)})
    w = random_canonical(cfg)
    ms = as_microsoft_swin(w, cfg)
    assert "layers.0.downsample.reduction.weight" in ms and "head.weight" in ms
    assert ms["layers.0.blocks.1.attn_mask"].shape == (16, 16, 16) and "layers.2.blocks.1.attn_mask" not in ms
    assert detect_layout(ms) == "swin_ms" and detect_layout(TIMM.export(w, cfg)) == "timm"
    assert microsoft_swin_to_timm(ms).keys() == TIMM.export(w, cfg).keys()
    save_safetensors(tmp_path / "ms.safetensors", ms)
    ckpt = read_checkpoint(tmp_path / "ms.safetensors")
    _same(ckpt.weights, w)
    assert ckpt.config.replace(drop_path_rate=cfg.drop_path_rate) == cfg
    assert ckpt.meta["preprocess"]["mean"] == [0.485, 0.456, 0.406]  # ImageNet pixels, as the weights expect
    # timm's names with the buffers saved anyway (a state dict from other code) stay timm's layout.
    timm_sd = TIMM.export(w, cfg)
    timm_sd.update({k: v for k, v in ms.items() if k.endswith(("relative_position_index", "attn_mask"))})
    assert detect_layout(timm_sd) == "timm"
    save_safetensors(tmp_path / "timm.safetensors", timm_sd)
    _same(read_checkpoint(tmp_path / "timm.safetensors").weights, w)


def test_canonical_npz_and_model_name(tmp_path):
    cfg = get_config(TINY_NAME, **TINY)
    w = random_canonical(cfg)
    np.savez(tmp_path / "plain.npz", **w)  # no config inside
    ckpt = read_checkpoint(tmp_path / "plain.npz")
    assert ckpt.meta["source_layout"] == "swin_canonical" and "preprocess" not in ckpt.meta
    _same(ckpt.weights, w)
    save_npz(tmp_path / "with_config.npz", w, cfg)
    assert read_checkpoint(tmp_path / "with_config.npz").config == cfg
    structure = {k: TINY[k] for k in ("embed_dim", "depths", "num_heads")}
    pinned = read_checkpoint(tmp_path / "plain.npz", TINY_NAME, drop_rate=0.1, img_size=32, **structure)
    assert pinned.config == cfg.replace(drop_rate=0.1)
    with pytest.raises(WeightsMismatchError, match="patch_embed/proj/kernel: expected \\(2, 2, 3, 96\\)"):
        read_checkpoint(tmp_path / "plain.npz", TINY_NAME)  # the preset's widths do not fit
    with pytest.raises(CheckpointError, match="holds a Swin Transformer, but --model vit_base_patch16_224 is a ViT"):
        read_checkpoint(tmp_path / "plain.npz", "vit_base_patch16_224")
    with pytest.raises(ConfigError, match="window_size applies to Swin Transformers only"):
        read_checkpoint(_vit_file(tmp_path), window_size=7)


def _vit_file(tmp_path):
    cfg = get_config("vit_base_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=3)
    save_npz(path := tmp_path / "vit.npz", random_canonical(cfg), cfg)
    return path


def test_window_change_resamples_every_table_and_new_head(tmp_path):
    cfg = get_config(TINY_NAME, **TINY)
    w = random_canonical(cfg)
    save_npz(tmp_path / "w4.npz", w, cfg)
    ckpt = read_checkpoint(tmp_path / "w4.npz", window_size=8, num_classes=3)
    assert ckpt.config == cfg.replace(window_size=8, num_classes=3)
    assert ckpt.weights["layers_0/blocks_1/attn/relative_position_bias_table"].shape == (225, 2)
    assert ckpt.weights["layers_1/blocks_0/attn/relative_position_bias_table"].shape == (225, 4)
    assert ckpt.weights["head/fc/kernel"].shape == (32, 3) and not ckpt.weights["head/fc/kernel"].any()
    assert any("stage 0 relative position bias tables resampled for 4x4 -> 8x8 windows (bicubic)" in c
               for c in ckpt.meta["adapted"])
    # A larger image with the same windows changes no weight.
    big = read_checkpoint(tmp_path / "w4.npz", img_size=64)
    assert big.config.img_size == 64 and "adapted" not in big.meta
    _same(big.weights, w)
    # A smaller image where the last stage drops below the window: its tables shrink.
    small = read_checkpoint(tmp_path / "w4.npz", img_size=12, patch_size=2, window_size=3)
    assert small.config.stage_window(1) == 3
    assert small.weights["layers_1/blocks_0/attn/relative_position_bias_table"].shape == (25, 4)


def test_swin_modules_import_no_framework():
    import subprocess
    import sys

    code = ("import sys, vit_common.config.windows, vit_common.weights.tables, vit_common.weights.module_tables, vit_common.cli.vit_convert, "
            "vit_common.predict.attention_maps; "
            "assert not {'jax', 'torch'} & set(sys.modules), sorted({'jax', 'torch'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("grid,window,shift", [((8, 12), 4, 2), ((12, 4), 4, 1), ((14, 21), 7, 3)])
def test_shifted_window_mask_of_a_rectangular_grid_brute_force(grid, window, shift):
    """As the square case: on an (H, W) grid of whole windows, two tokens of a shifted window may
    attend iff the roll did not separate them on either axis."""
    rh, rw = grid
    mask = shifted_window_mask(grid, window, shift)
    nh, nw = rh // window, rw // window
    assert mask.shape == (nh * nw, window * window, window * window)
    for k in range(nh * nw):
        ty, tx = divmod(k, nw)
        for a in range(window * window):
            for b in range(window * window):
                rolled = [(ty * window + p // window, tx * window + p % window) for p in (a, b)]
                original = [((y + shift) % rh, (x + shift) % rw) for y, x in rolled]
                same = all(rolled[0][d] - rolled[1][d] == original[0][d] - original[1][d] for d in (0, 1))
                assert mask[k, a, b] == (0.0 if same else MASK_VALUE), (k, a, b)
