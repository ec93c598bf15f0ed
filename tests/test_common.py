"""vit_common: presets, validation, the canonical layout, file I/O (numpy only)."""
import json

import numpy as np
import pytest

from vit_common import (
    TIMM, CheckpointError, ConfigError, ViTConfig, WeightsMismatchError, canonical_shapes, check_weights,
    count_params, get_config, list_models, load_canonical, load_npz, load_state_dict, save_npz, save_safetensors,
)
from vit_common.atomic import atomic_write
from vit_common.config.posemb import fixed_pos_embed, sincos_1d, sincos_2d

# timm's parameter counts for the same names (1000 classes).
TIMM_COUNTS = {
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224": 86_567_656,
    "vit_large_patch16_224": 304_326_632,
    "deit_tiny_distilled_patch16_224": 5_910_800,
    "deit_small_distilled_patch16_224": 22_436_432,
    "deit_base_distilled_patch16_224": 87_338_192,
}


@pytest.mark.parametrize("name,count", TIMM_COUNTS.items())
def test_parameter_counts_match_timm(name, count):
    assert count_params(get_config(name, num_classes=1000)) == count


def test_vit_huge_counts():
    # timm's only ViT-H/14 weights are ImageNet-21k features, so its preset has no head:
    # 630,764,800 is timm's count for the name; a 1000-class head adds 1280 * 1000 + 1000.
    assert get_config("vit_huge_patch14_224").num_classes == 0
    assert count_params(get_config("vit_huge_patch14_224")) == 630_764_800
    assert count_params(get_config("vit_huge_patch14_224", num_classes=1000)) == 630_764_800 + 1_281_000


def test_preset_grid():
    names = list_models()
    for size in ("tiny", "small", "base", "large"):
        assert f"vit_{size}_patch16_224" in names and f"vit_{size}_patch16_384" in names
    assert {"vit_base_patch8_224", "vit_base_patch32_384", "vit_huge_patch14_224"} <= set(names)
    assert {f"deit_{s}_distilled_patch16_224" for s in ("tiny", "small", "base")} <= set(names)
    assert get_config("vit_large_patch16_384").grid_size == 24
    assert list_models("deit_*distilled*") == [n for n in names if n.startswith("deit") and "distilled" in n]


@pytest.mark.parametrize("name,overrides,message", [
    ("vit_bsae_patch16_224", {}, "unknown model name 'vit_bsae_patch16_224'; did you mean vit_base_patch16_224"),
    ("vit_base_patch16_224", dict(img_size=225), "img_size 225 is not divisible by patch_size 16"),
    ("vit_base_patch16_224", dict(num_heads=5), "embed_dim 768 is not divisible by num_heads 5"),
    ("vit_base_patch16_224", dict(global_pool="max"), "global_pool must be one of"),
    ("vit_base_patch16_224", dict(class_token=False), "global_pool='token' needs class_token=True"),
    ("vit_base_patch16_224", dict(pos_embed="rope"), "pos_embed must be one of"),
    ("vit_base_patch16_224", dict(drop_path_rate=1.0), "drop_path_rate must be in [0, 1)"),
    ("vit_base_patch16_224", dict(pos_drop_rate=-0.1), "pos_drop_rate must be in [0, 1)"),
    ("vit_base_patch16_224", dict(proj_drop_rate=1.0), "proj_drop_rate must be in [0, 1)"),
    ("vit_base_patch16_224", dict(num_classses=10), "unknown keyword override(s) ['num_classses']"),
    ("deit_base_distilled_patch16_224", dict(global_pool="avg"), "distilled models pool"),
    ("vit_base_patch16_224", dict(patch_size=0), "patch_size must be a positive integer"),
])
def test_bad_configs_fail_with_clear_errors(name, overrides, message):
    with pytest.raises(ConfigError) as err:
        get_config(name, **overrides)
    assert message in str(err.value)


def test_config_derived_values_and_json_roundtrip():
    cfg = get_config("deit_small_distilled_patch16_224", drop_path_rate=0.3, depth=4)
    assert (cfg.num_patches, cfg.num_prefix_tokens, cfg.num_pos_embed) == (196, 2, 198)
    assert cfg.drop_path_rates() == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert ViTConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ConfigError, match="unknown config fields"):
        ViTConfig.from_dict({"width": 3})
    assert get_config("vit_base_patch16_224", no_embed_class=True).num_pos_embed == 196
    assert get_config("vit_base_patch16_224", global_pool="avg").has_fc_norm
    assert not get_config("vit_base_patch16_gap_224").has_fc_norm


def test_dropout_fields_are_timms_and_old_configs_still_load():
    cfg = get_config("vit_base_patch16_224")
    assert (cfg.drop_rate, cfg.pos_drop_rate, cfg.proj_drop_rate, cfg.attn_drop_rate, cfg.drop_path_rate) == (0,) * 5
    # A config written before pos_drop_rate / proj_drop_rate existed (its drop_rate drove all three
    # dropouts) loads, with drop_rate in timm's meaning (the head's dropout); inference is unchanged.
    old = {k: v for k, v in cfg.replace(drop_rate=0.1, attn_drop_rate=0.1).to_dict().items()
           if k not in ("pos_drop_rate", "proj_drop_rate")}
    loaded = ViTConfig.from_dict(old)
    rates = (loaded.drop_rate, loaded.pos_drop_rate, loaded.proj_drop_rate, loaded.attn_drop_rate)
    assert rates == (0.1, 0.0, 0.0, 0.1)
    assert loaded.replace(drop_rate=0.0, attn_drop_rate=0.0) == cfg


def _random_canonical(cfg, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in canonical_shapes(cfg).items()}


def test_canonical_names_follow_google_checkpoints():
    names = canonical_shapes(get_config("vit_base_patch16_224"))
    assert names["embedding/kernel"] == (16, 16, 3, 768)
    assert names["Transformer/posembed_input/pos_embedding"] == (1, 197, 768)
    assert names["Transformer/encoderblock_11/MultiHeadDotProductAttention_1/query/kernel"] == (768, 12, 64)
    assert names["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/out/kernel"] == (12, 64, 768)
    assert names["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"] == (768, 3072)
    assert names["Transformer/encoderblock_0/LayerNorm_2/scale"] == (768,)
    assert names["head/kernel"] == (768, 1000) and names["cls"] == (1, 1, 768)
    assert "Transformer/encoder_norm/scale" in names


# timm's state-dict keys (timm.create_model(name).state_dict()) for a depth-1 model.
TIMM_KEYS_DEPTH1 = [
    "cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
    "blocks.0.norm1.weight", "blocks.0.norm1.bias", "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias",
    "blocks.0.attn.proj.weight", "blocks.0.attn.proj.bias", "blocks.0.norm2.weight", "blocks.0.norm2.bias",
    "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1.bias", "blocks.0.mlp.fc2.weight", "blocks.0.mlp.fc2.bias",
    "norm.weight", "norm.bias", "head.weight", "head.bias",
]


def test_timm_names_and_shapes():
    cfg = get_config("vit_base_patch16_224", depth=1)
    sd = TIMM.export(_random_canonical(cfg), cfg)
    assert sorted(sd) == sorted(TIMM_KEYS_DEPTH1)
    assert sd["blocks.0.attn.qkv.weight"].shape == (2304, 768)
    assert sd["patch_embed.proj.weight"].shape == (768, 3, 16, 16)
    deit = get_config("deit_base_distilled_patch16_224", depth=1)
    assert {"dist_token", "head_dist.weight", "head_dist.bias"} <= set(TIMM.export(_random_canonical(deit), deit))
    mapped = get_config("vit_base_patch16_224", depth=1, global_pool="map", class_token=False)
    keys = set(TIMM.export(_random_canonical(mapped), mapped))
    assert {"attn_pool.latent", "attn_pool.q.weight", "attn_pool.kv.weight", "attn_pool.proj.weight",
            "attn_pool.norm.weight", "attn_pool.mlp.fc1.weight"} <= keys


def test_timm_qkv_layout_matches_per_head_kernels():
    cfg = get_config("vit_base_patch16_224", depth=1, embed_dim=8, num_heads=2)
    w = _random_canonical(cfg)
    sd = TIMM.export(w, cfg)
    prefix = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1"
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    q_timm = (x @ sd["blocks.0.attn.qkv.weight"].T)[:, :8].reshape(5, 2, 4)  # timm: rows q|k|v, head-major
    q_canon = np.einsum("tc,chd->thd", x, w[f"{prefix}/query/kernel"])
    np.testing.assert_allclose(q_timm, q_canon, rtol=1e-5, atol=1e-6)


def test_timm_roundtrip_is_bit_exact():
    for name, kw in [("vit_base_patch16_224", {}), ("deit_tiny_distilled_patch16_224", {}),
                     ("vit_base_patch16_224", dict(global_pool="map", qkv_bias=False, representation_size=32))]:
        cfg = get_config(name, depth=2, embed_dim=64, num_heads=4, **kw)
        w = _random_canonical(cfg)
        back = TIMM.import_(TIMM.export(w, cfg), cfg)
        assert back.keys() == w.keys() and all(np.array_equal(w[k], back[k]) for k in w)


def test_check_weights_names_every_problem():
    cfg = get_config("vit_base_patch16_224", depth=2, embed_dim=64, num_heads=4, num_classes=10)
    w = _random_canonical(cfg)
    w["head/kernel"] = np.zeros((64, 5), np.float32)
    del w["cls"]
    w["extra/thing"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsMismatchError) as err:
        check_weights(w, cfg, what="ckpt.npz")
    text = str(err.value)
    assert "ckpt.npz does not fit" in text
    assert "head/kernel: expected (64, 10), found (64, 5)" in text
    assert "cls: expected (1, 1, 64)" in text and "extra/thing: found (3,)" in text


def test_timm_import_rejects_wrong_shapes():
    cfg = get_config("vit_base_patch16_224", depth=1, embed_dim=64, num_heads=4)
    sd = TIMM.export(_random_canonical(cfg), cfg)
    sd["blocks.0.attn.qkv.weight"] = sd["blocks.0.attn.qkv.weight"][:100]
    with pytest.raises(WeightsMismatchError, match=r"blocks.0.attn.qkv.weight: found \(100, 64\)"):
        TIMM.import_(sd, cfg)
    del sd["head.bias"]
    with pytest.raises(WeightsMismatchError, match="missing:\n  head.bias"):
        TIMM.import_(sd, cfg)


def test_npz_and_safetensors_files_roundtrip(tmp_path):
    cfg = get_config("deit_tiny_distilled_patch16_224", depth=1, num_classes=7)
    w = _random_canonical(cfg)
    save_npz(tmp_path / "m.npz", w, cfg)
    loaded, loaded_cfg = load_npz(tmp_path / "m.npz")
    assert loaded_cfg == cfg and all(np.array_equal(loaded[k], w[k]) for k in w)
    save_safetensors(tmp_path / "m.safetensors", TIMM.export(w, cfg), cfg)
    sd, sd_cfg = load_state_dict(tmp_path / "m.safetensors")
    assert sd_cfg == cfg
    back = load_canonical(tmp_path / "m.safetensors", cfg)
    assert all(np.array_equal(back[k], w[k]) for k in w)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_opt_target_prefix_is_accepted(tmp_path):
    cfg = get_config("vit_base_patch16_224", depth=1, embed_dim=64, num_heads=4)
    w = _random_canonical(cfg)
    np.savez(tmp_path / "old.npz", **{f"opt/target/{k}": v for k, v in w.items()})
    assert load_canonical(tmp_path / "old.npz", cfg).keys() == w.keys()


def test_atomic_write_never_leaves_partial_files(tmp_path):
    target = tmp_path / "weights.npz"
    target.write_bytes(b"old contents")

    def failing_writer(f):
        f.write(b"half a file")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing_writer)
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.npz"]


def test_unreadable_checkpoints_fail_clearly(tmp_path):
    cfg = get_config("vit_base_patch16_224", depth=1, embed_dim=64, num_heads=4)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_canonical(tmp_path / "nope.npz", cfg)
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="not a readable .npz"):
        load_canonical(bad, cfg)
    bad_st = tmp_path / "broken.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match="not a readable .safetensors"):
        load_canonical(bad_st, cfg)
    odd = tmp_path / "weights.h5"
    odd.write_bytes(b"")
    with pytest.raises(CheckpointError, match="unknown checkpoint format '.h5'"):
        load_canonical(odd, cfg)


def test_sincos_tables():
    t1 = sincos_1d(10, 8)
    pos = 7  # channel 2i = 6 (i = 3) is sin, 7 is cos, at frequency 10000^(-2i/d)
    np.testing.assert_allclose(t1[pos, 6], np.sin(pos / 10000 ** (6 / 8)))
    np.testing.assert_allclose(t1[pos, 7], np.cos(pos / 10000 ** (6 / 8)))
    t2 = sincos_2d(4, 16)
    assert t2.shape == (16, 16)
    np.testing.assert_allclose(t2[0], [0] * 4 + [1] * 4 + [0] * 4 + [1] * 4)  # origin: sin 0, cos 1
    row, col = 2, 3
    np.testing.assert_allclose(t2[row * 4 + col, 0], np.sin(col))  # x = column, frequency 1
    np.testing.assert_allclose(t2[row * 4 + col, 8], np.sin(row))  # y = row
    cfg = get_config("vit_base_patch16_224", pos_embed="sincos2d", img_size=64)
    table = fixed_pos_embed(cfg)
    assert table.shape == (1, 17, 768) and table.dtype == np.float32 and np.all(table[0, 0] == 0)


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    save_npz(tmp_path / "w.npz", {"a": np.zeros(2, np.float32)})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "w.npz").stat().st_mode & 0o777 == 0o666 & ~umask


def test_train_command_line_presets_and_overrides():
    from vit_common.train.recipe import PRESETS, parse_train_args

    for name in PRESETS:  # every documented recipe resolves to a valid model
        parse_train_args(["--preset", name]).model_config()
    merged = parse_train_args(["--model-args", '{"depth": 2}']).model_config()
    assert (merged.embed_dim, merged.depth) == (96, 2)  # the digits preset's width, the new depth
    # Another model starts from its own architecture, not the preset's overrides for its model.
    small = parse_train_args(["--model", "vit_small_patch16_224"]).model_config()
    assert (small.embed_dim, small.depth, small.img_size, small.patch_size) == (384, 12, 16, 4)
    swin = parse_train_args(["--preset", "fashion_mnist_swin"]).model_config()
    assert swin.arch == "swin" and swin.grid_size == 14
    assert [swin.stage_window(i) for i in range(2)] == [7, 7] and [swin.stage_shift(i) for i in range(2)] == [3, 0]
    with pytest.raises(ConfigError, match=r"unknown keyword override\(s\) \['depth'\] for swin_tiny"):
        parse_train_args(["--model", "swin_tiny_patch4_window7_224", "--model-args", '{"depth": 2}'])


def test_resuming_with_a_changed_recipe_says_what_changed(tmp_path, capsys):
    import dataclasses

    from vit_common.formats.run_folder import torch_step_name
    from vit_common.train.recipe import parse_train_args
    from vit_common.train.run import check_workdir

    def config(*args):
        return parse_train_args(["--workdir", str(tmp_path), "--framework", "torch", *args])

    (tmp_path / "config.json").write_text(json.dumps(dict(train=dataclasses.asdict(config()))))
    check_workdir(config("--epochs", "30"))  # no checkpoint yet: a fresh start, nothing to say
    assert capsys.readouterr().err == ""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / torch_step_name(5)).write_bytes(b"")
    check_workdir(config("--log-every", "3"))  # bookkeeping only
    assert capsys.readouterr().err == ""
    check_workdir(config("--epochs", "30", "--model-args", '{"depth": 2}'))
    err = capsys.readouterr().err
    assert "changed recipe" in err and "epochs: 40 -> 30" in err and "model_args.depth: 4 -> 2" in err
    with pytest.raises(ConfigError, match="holds a --framework torch run"):
        check_workdir(parse_train_args(["--workdir", str(tmp_path)]))
