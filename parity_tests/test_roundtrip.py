"""Conversion round trips are bit-exact, through memory and through every file format."""
import numpy as np
import pytest
import torch
from flax import nnx

import vit_jax
import vit_torch
from vit_common import TIMM, load_npz, save_npz, save_safetensors
from parity_tests.grid import EVA_GRID, SMALL_GRID, small
from parity_tests.harness import FLOAT32_TOL, build_pair, random_images, run_jax, run_torch


def _bitwise_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("name", [*SMALL_GRID, "swin", "swin-shrink", "swin-no-qkv-bias", *EVA_GRID])
def test_torch_canonical_jax_canonical_torch_is_bit_exact(name):
    preset, overrides = small(name)
    tm, _, _ = build_pair(preset, "torch", **overrides)
    start = {k: v.clone() for k, v in tm.state_dict().items()}
    canonical = vit_torch.to_canonical(tm)
    jm = vit_jax.load_canonical_(vit_jax.create_model(preset, rngs=nnx.Rngs(9), **overrides), canonical)
    back = vit_jax.to_canonical(jm)
    _bitwise_equal(canonical, back)
    tm2 = vit_torch.load_canonical_(vit_torch.create_model(preset, **overrides), back)
    end = tm2.state_dict()
    assert start.keys() == end.keys()
    assert all(torch.equal(start[k], end[k]) for k in start)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".pt"])
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_create_model_loads_checkpoint_files(tmp_path, suffix, framework):
    preset, overrides = small("deit-distilled")
    tm, _, weights = build_pair(preset, "torch", **overrides)
    path = tmp_path / f"model{suffix}"
    if suffix == ".npz":
        save_npz(path, weights, tm.cfg)
        loaded, cfg = load_npz(path)
        assert cfg == tm.cfg
        _bitwise_equal(loaded, weights)
    elif suffix == ".safetensors":
        save_safetensors(path, TIMM.export(weights, tm.cfg), tm.cfg)
    else:
        torch.save({"model": tm.state_dict()}, path)  # a training checkpoint wraps the weights
    create = vit_torch.create_model if framework == "torch" else vit_jax.create_model
    model = create(preset, checkpoint=path, **overrides)
    got = vit_torch.to_canonical(model) if framework == "torch" else vit_jax.to_canonical(model)
    _bitwise_equal(got, weights)
    images = random_images(tm.cfg, 2)
    ref = run_torch(tm, images).logits
    out = run_torch(model, images).logits if framework == "torch" else run_jax(model, images).logits
    if framework == "torch":  # the same weights in the same model on the same images: the same bits
        np.testing.assert_array_equal(out, ref)
    else:  # the other twin: float32 sums in another order, the numerical contract's tolerance
        assert np.abs(out - ref).max() <= FLOAT32_TOL
