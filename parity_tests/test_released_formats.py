"""Released checkpoint formats: Meta's DINOv2 / DINOv3 torch.hub files, BAAI's EVA-02 and Apple's AIMv2
(PyTorch and Flax msgpack), built with their projects' names, shapes and dtypes
(parity_tests/released_files.py), read into both twins and written back (vit-convert --to).

References: transformers' Dinov2Model, Dinov2WithRegistersModel, DINOv3ViTModel and Aimv2VisionModel
with random weights, the same weights put in the released file; for EVA-02 (not in transformers)
the timm-named path, which parity ties to the float64 reference. Every output compared within the
float32 contract (NaN fails); the file written back has the released file's keys, shapes and
dtypes, and reads back bit-exact."""
import re

import numpy as np
import pytest
import torch
import transformers
from flax import serialization
from safetensors.numpy import load_file, save_file

import vit_jax
import vit_torch
from parity_tests import released_files as rf
from parity_tests.hf_families import hf_model, perturb_
from parity_tests.harness import FLOAT32_TOL, build_pair, nhwc_to_nchw, random_images, rel_error, run_jax, run_torch
from vit_common import TIMM, read_checkpoint
from vit_common.formats import detect_layout
from vit_common.cli.vit_convert import main as convert
from vit_common.cli.vit_convert import write_checkpoint
from vit_common.errors import CheckpointError
from vit_common.formats.aimv2 import implied_aimv2
from vit_common.formats.flax_msgpack import read_msgpack
from vit_common.formats.meta_dino import implied_dinov2
from vit_common.predict.defaults import resolve_preprocess

TINY = dict(hidden=48, layers=2, heads=3, patch=8, img=32)
OURS = dict(embed_dim=48, depth=2, num_heads=3, patch_size=8, img_size=32, num_classes=0)
DINOV3_HF = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 num_register_tokens=4, layer_norm_eps=1e-5, rope_theta=100.0, hidden_act="gelu",
                 attn_implementation="eager")
DINOV3_OURS = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, global_pool="token")


def _dinov3(**changes):
    return transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(**{**DINOV3_HF, **changes}))


# case -> (HF model, released file builder, file name, --to, our preset, our overrides, how HF pools)
CASES = {
    "dinov2": (lambda: hf_model("dinov2", **TINY, mlp=192), rf.dinov2_hub, "hub.pth", "dinov2",
               "vit_small_patch14_dinov2", OURS, "pooler"),
    "dinov2-giant-swiglu": (lambda: hf_model("dinov2", **TINY, mlp=192, swiglu=True), rf.dinov2_hub, "hub.pth",
                            "dinov2", "vit_giant_patch14_dinov2", dict(OURS, mlp_ratio=5.34), "pooler"),
    "dinov2-reg": (lambda: hf_model("dinov2_reg", **TINY, mlp=192, registers=2), rf.dinov2_hub, "hub.pth", "dinov2",
                   "vit_small_patch14_reg4_dinov2", dict(OURS, reg_tokens=2), "pooler"),
    "dinov3-qkvb": (lambda: _dinov3(intermediate_size=128), rf.dinov3_hub, "hub.pth", "dinov3",
                    "vit_base_patch16_dinov3_qkvb", DINOV3_OURS, "pooler"),
    "dinov3-swiglu": (lambda: _dinov3(intermediate_size=88, use_gated_mlp=True, hidden_act="silu", query_bias=False,
                                      value_bias=False), rf.dinov3_hub, "hub.pth", "dinov3",
                      "vit_small_plus_patch16_dinov3", dict(DINOV3_OURS, mlp_ratio=2.75), "pooler"),
    "aimv2": (lambda: hf_model("aimv2", **TINY, mlp=132), rf.aimv2_apple, "model.safetensors", "aimv2",
              "aimv2_large_patch14_224", dict(OURS, mlp_ratio=2.75), "mean"),
    "aimv2-flax": (lambda: hf_model("aimv2", **TINY, mlp=132), rf.aimv2_apple, "flax_model.msgpack", "aimv2_flax",
                   "aimv2_large_patch14_224", dict(OURS, mlp_ratio=2.75), "mean"),
}


def _save(path, released: dict) -> None:
    if path.suffix == ".pth":
        rf.save_pth(path, released)
    elif path.suffix == ".safetensors":
        save_file(released, path)
    else:
        path.write_bytes(serialization.msgpack_serialize(rf.aimv2_flax_variables(released)))


def _load(path) -> dict:
    if path.suffix == ".pth":
        return rf.load_pth(path)
    if path.suffix == ".safetensors":
        return load_file(path)
    return rf.flatten(serialization.msgpack_restore(path.read_bytes())["params"])


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    build, release, filename, fmt, preset, ours, pooling = CASES[request.param]
    torch.manual_seed(0)
    model = perturb_(build(), seed=0)
    path = tmp_path_factory.mktemp(request.param) / filename
    _save(path, release(model))
    images = random_images(vit_torch.get_config(preset, **ours), 2)
    with torch.no_grad():
        theirs = model(pixel_values=torch.from_numpy(nhwc_to_nchw(images)), output_hidden_states=True,
                       output_attentions=True)
    pooled = theirs.pooler_output if pooling == "pooler" else theirs.last_hidden_state.mean(1)
    return request.param, path, fmt, preset, ours, images, theirs, pooled.numpy()


def _worst(ours, theirs) -> float:
    return float(np.max([rel_error(a, b) for a, b in zip(ours, theirs, strict=True)]))


def test_released_file_matches_transformers_in_torch(case, record):
    _check_twin(case, "torch", record)


# The JAX twin on two cases: each reader is numpy and gives both twins the same canonical weights
# (test_roundtrip.py pins the twins' loading bit-exact), and on these transformers models
# test_hf_families.py and test_eva_transformers.py run the JAX twin already; these two keep a
# released file -> JAX, for Apple's Flax file and for Meta's DINOv3.
@pytest.mark.parametrize("case", ["aimv2-flax", "dinov3-qkvb"], indirect=True)
def test_released_file_matches_transformers_in_jax(case, record):
    _check_twin(case, "jax", record)


def _check_twin(case, twin: str, record) -> None:
    name, path, fmt, preset, ours, images, theirs, pooled = case
    assert detect_layout(_raw_names(path)) == fmt
    create, run = (vit_torch.create_model, run_torch) if twin == "torch" else (vit_jax.create_model, run_jax)
    out = run(create(preset, checkpoint=path, **ours), images)
    errors = {"pooled": rel_error(out.pooled, pooled), "hidden": _worst(out.hidden_states, theirs.hidden_states[1:]),
              "attention": _worst(out.attentions, theirs.attentions)}
    record(f"released {name}", f"{fmt} -> {twin}", errors)
    bad = {k: v for k, v in errors.items() if not v <= FLOAT32_TOL}  # NaN fails
    assert not bad, f"{name} ({twin}): {bad}"


def _raw_names(path) -> set[str]:
    return set(read_msgpack(path)) if path.suffix == ".msgpack" else set(_load(path))


def test_written_back_as_released_and_bit_exact(case, tmp_path):
    """--to FORMAT writes the released keys, shapes and dtypes; reading it gives the same canonical
    weights bit for bit. Values differ from the built file only where the format says so."""
    name, path, fmt, preset, ours, _, _, _ = case
    ckpt = read_checkpoint(path, preset, **ours)
    assert ckpt.meta["source_layout"] == fmt
    family = {"dinov2": "DINOv2", "dinov3": "DINOv3", "aimv2": "AIMv2", "aimv2_flax": "AIMv2"}[fmt]
    assert family in resolve_preprocess(ckpt.meta, ckpt.config)[1]  # vit-predict's default for the file
    dst = tmp_path / path.name
    write_checkpoint(ckpt, dst, to=fmt)
    released, written = _load(path), _load(dst)
    assert rf.signature(written) == rf.signature(released)
    again = read_checkpoint(dst, preset, **ours)
    assert again.config == ckpt.config and set(again.weights) == set(ckpt.weights)
    for k, v in ckpt.weights.items():
        assert again.weights[k].dtype == v.dtype and np.array_equal(again.weights[k], v), k
    changed = sorted(k for k in released if not np.array_equal(released[k], written[k]))
    expected = {"mask_token"}  # written as zeros
    if name == "dinov2-reg":
        expected |= {"cls_token", "pos_embed"}  # the class token's entry folded into the token
    if name.startswith("dinov3"):
        expected |= {f"blocks.{i}.attn.qkv.bias" for i in range(2)}  # the masked key bias written as zeros
    assert set(changed) <= expected, changed
    if name == "dinov2-reg":  # DINOv2 computes cls + pos[0]: the written pair gives the same sum
        assert np.array_equal(written["pos_embed"][:, :1], np.zeros_like(written["pos_embed"][:, :1]))
        np.testing.assert_allclose(written["cls_token"], released["cls_token"] + released["pos_embed"][:, :1], rtol=0,
                                   atol=0)


def test_presets_implied_by_width():
    """DINOv2 and AIMv2 files do not say their heads; the released widths name the preset."""
    proj = lambda c: {"patch_embed.proj.weight": np.zeros((c, 3, 14, 14), np.float32)}  # noqa: E731
    assert implied_dinov2(proj(1536), set()).model == "vit_giant_patch14_dinov2"
    assert implied_dinov2({**proj(768), "reg_token": np.zeros((1, 4, 768))}, set()).model == "vit_base_patch14_reg4_dinov2"
    assert implied_aimv2(proj(2048), set()).model == "aimv2_1b_patch14_224"
    for implied in (implied_dinov2, implied_aimv2):
        unknown = implied(proj(48), set())  # no preset: read_checkpoint raises this unless --num-heads is given
        assert unknown.model is None and re.search("width 48, .* pass --num-heads", unknown.needs["num_heads"])


@pytest.mark.parametrize("case", ["dinov2-giant-swiglu", "dinov2-reg", "aimv2-flax"], indirect=True)
def test_widths_no_preset_has_read_off_the_shapes_given_the_heads(case):
    """A file of a width no preset has (a custom fine-tune, these tiny ones) reads with --num-heads
    alone, every option taken from its entries, as its family's preset would give it."""
    name, path, fmt, preset, ours, *_ = case
    with pytest.raises(CheckpointError, match="pass --num-heads"):
        read_checkpoint(path)
    got = read_checkpoint(path, num_heads=ours["num_heads"]).config
    want = read_checkpoint(path, preset, **ours).config
    assert got.mlp_dim == want.mlp_dim and got == want.replace(mlp_ratio=got.mlp_ratio), (got, want)


def test_dinov3_through_the_cli(tmp_path, capsys):
    """No --model: DINOv3's shapes say the architecture (heads 64 wide); and back with --to dinov3."""
    torch.manual_seed(0)
    model = perturb_(_dinov3(hidden_size=128, num_hidden_layers=1, intermediate_size=512), seed=1)
    rf.save_pth(src := tmp_path / "dinov3_vitb16.pth", released := rf.dinov3_hub(model))
    assert convert([str(src), str(npz := tmp_path / "ours.npz")]) == 0
    assert "DINOv3 torch.hub" in capsys.readouterr().out
    assert convert([str(npz), str(back := tmp_path / "back.pth"), "--to", "dinov3"]) == 0
    assert rf.signature(rf.load_pth(back)) == rf.signature(released)
    assert convert([str(npz), str(tmp_path / "back.npz"), "--to", "dinov3"]) == 2
    assert "writes .pth, .pt or .safetensors" in capsys.readouterr().err


def test_writers_refuse_models_the_format_cannot_hold(tmp_path):
    ckpt = read_checkpoint(_dinov2_file(tmp_path), "vit_small_patch14_dinov2", **OURS)
    with pytest.raises(CheckpointError, match="no classifier"):
        write_checkpoint(read_checkpoint(_dinov2_file(tmp_path), "vit_small_patch14_dinov2", **{**OURS, "num_classes": 3}),
                         tmp_path / "x.pth", to="dinov2")
    for fmt in ("dinov3", "eva_baai", "aimv2"):
        with pytest.raises(CheckpointError, match=f"--to {fmt} cannot hold"):
            write_checkpoint(ckpt, tmp_path / "x.safetensors", to=fmt)


def _dinov2_file(tmp_path):
    path = tmp_path / "dinov2.pth"
    if not path.exists():
        torch.manual_seed(0)
        rf.save_pth(path, rf.dinov2_hub(perturb_(hf_model("dinov2", **TINY, mlp=192), seed=0)))
    return path


def test_dinov2_training_checkpoint_chunks_read(tmp_path):
    """DINOv2's training code chunks the blocks (blocks.<chunk>.<i>...); the index inside is global."""
    hub = rf.load_pth(_dinov2_file(tmp_path))
    chunked = {k.replace("blocks.1.", "blocks.0.1.").replace("blocks.0.norm", "blocks.0.0.norm")
               .replace("blocks.0.attn", "blocks.0.0.attn").replace("blocks.0.ls", "blocks.0.0.ls")
               .replace("blocks.0.mlp", "blocks.0.0.mlp"): v for k, v in hub.items()}
    assert any(k.startswith("blocks.0.1.") for k in chunked) and not any(k.startswith("blocks.1.") for k in chunked)
    rf.save_pth(path := tmp_path / "chunked.pth", chunked)
    a, b = (read_checkpoint(p, "vit_small_patch14_dinov2", **OURS).weights for p in (path, _dinov2_file(tmp_path)))
    assert all(np.array_equal(a[k], b[k]) for k in b) and set(a) == set(b)


# EVA-02 as BAAI released it -------------------------------------------------------------------------
EVA_TINY = dict(img_size=28, patch_size=7, embed_dim=64, depth=2, num_heads=1)


@pytest.mark.parametrize("name", ["eva02_tiny_patch14_336", "eva02_base_patch14_448"])
def test_eva02_baai_file_matches_the_timm_named_path(tmp_path, name, record):
    """BAAI's names (fused qkv + w12 / w3 for Ti and S; q/k/v_proj + w1 / w2 / ffn_ln / w3 for B
    and L) give both twins the outputs of the same weights under timm's names; --to eva_baai writes
    them back with BAAI's keys, shapes, dtypes and rotary tables, and --to timm writes timm's."""
    tm, _, weights = build_pair(name, "torch", **EVA_TINY, num_classes=5)
    images = random_images(tm.cfg, 2)
    want = run_torch(tm, images)
    grid = tm.cfg.grid_size
    released = rf.eva02_baai(TIMM.export(weights, tm.cfg), tm.cfg.head_dim, grid)
    rf.save_pth(path := tmp_path / "eva02.pt", released, wrapper="model")
    for create, run, twin in ((vit_torch.create_model, run_torch, "torch"), (vit_jax.create_model, run_jax, "jax")):
        out = run(create(name, checkpoint=path, **EVA_TINY, num_classes=5), images)
        errors = {"logits": rel_error(out.logits, want.logits), "hidden": _worst(out.hidden_states, want.hidden_states)}
        record(f"released {name} (BAAI)", f"eva_baai -> {twin}", errors)
        assert all(v <= FLOAT32_TOL for v in errors.values()), (twin, errors)
    ckpt = read_checkpoint(path, name, **EVA_TINY, num_classes=5)
    assert ckpt.meta["source_layout"] == "eva_baai"
    write_checkpoint(ckpt, back := tmp_path / "back.pt", to="eva_baai")
    written = rf.load_pth(back)
    assert rf.signature(written) == rf.signature(released)
    for k, v in released.items():  # weights bit-exact, rotary tables to float32 rounding
        if "rope" in k:
            np.testing.assert_allclose(written[k], v, rtol=0, atol=1e-6)
        else:
            assert np.array_equal(written[k], v), k
    again = read_checkpoint(back, name, **EVA_TINY, num_classes=5)
    assert all(np.array_equal(again.weights[k], v) for k, v in ckpt.weights.items())
    write_checkpoint(ckpt, timm := tmp_path / "timm.safetensors", to="timm")
    assert set(load_file(timm)) == set(tm.state_dict())


def test_eva02_mim_checkpoint_reads_as_timm_does(tmp_path):
    """MIM-pretrained files carry mask_token and lm_head (dropped) and a norm, which timm loads as fc_norm."""
    name = "eva02_tiny_patch14_224"
    tm, _, weights = build_pair(name, "torch", **EVA_TINY)
    released = rf.eva02_baai(TIMM.export(weights, tm.cfg), tm.cfg.head_dim, tm.cfg.grid_size)
    released = {k.replace("fc_norm", "norm"): v for k, v in released.items()}
    released.update({"mask_token": np.zeros((1, 1, 64), np.float32), "lm_head.weight": np.ones((32, 64), np.float32),
                     "lm_head.bias": np.ones(32, np.float32)})
    rf.save_pth(path := tmp_path / "eva02_mim.pt", released, wrapper="model")
    ckpt = read_checkpoint(path, name, **EVA_TINY)
    assert all(np.array_equal(ckpt.weights[k], v) for k, v in weights.items())
