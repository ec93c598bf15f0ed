"""Every pitfall of the numerical contract (docs/parity.md), pinned against the independent reference.

For each one: both twins match the float64 reference, and the broken variant (tanh GELU,
eps 1e-5, a missing NHWC/NCHW transpose, the other position-embedding convention) is caught
by a margin above the float32 tolerance.
"""
import jax
import numpy as np
import pytest
import torch

import vit_torch
from parity_tests import reference
from parity_tests.grid import SMALL_GRID, small
from parity_tests.harness import (
    FLOAT32_TOL, build_pair, full_precision, nhwc_to_nchw, random_images, rel_error, run_jax, run_torch,
)

CAUGHT = 2 * FLOAT32_TOL  # a broken variant must clear the tolerance (float32 noise here is ~5e-7)


def _twins_and_reference(name, **ref_kwargs):
    preset, overrides = small(name)
    tm, jm, weights = build_pair(preset, "torch", **overrides)
    images = random_images(tm.cfg, 2)
    logits, hidden, maps = reference.forward(weights, tm.cfg, images, **ref_kwargs)
    return tm, jm, weights, images, logits, hidden, maps


@pytest.mark.parametrize("name", [name for name in SMALL_GRID if name != "features-only"])
def test_twins_match_independent_reference(name):
    tm, jm, weights, images, logits, hidden, maps = _twins_and_reference(name)
    probe = reference.forward_with_pool(weights, tm.cfg, images)[3]  # MAP models: the probe's attention
    for out in (run_torch(tm, images), run_jax(jm, images)):
        assert rel_error(out.logits, logits) <= FLOAT32_TOL
        for got, want in zip(out.hidden_states, hidden, strict=True):
            assert rel_error(got, want) <= FLOAT32_TOL
        for got, want in zip(out.attentions, maps, strict=True):
            assert rel_error(got, want) <= FLOAT32_TOL
        assert (out.pool_attention is None) == (probe is None)
        if probe is not None:
            assert rel_error(out.pool_attention, probe) <= FLOAT32_TOL


def test_gelu_is_exact_erf():
    tm, jm, _, images, _, _, _ = _twins_and_reference("token")
    tanh_logits, _, _ = reference.forward(reference_weights(tm), tm.cfg, images, gelu_kind="tanh")
    for out in (run_torch(tm, images), run_jax(jm, images)):
        assert rel_error(out.logits, tanh_logits) > CAUGHT
    # A twin switched to the tanh approximation is caught by the cross-framework comparison.
    for block in tm.blocks:
        block.mlp.act = torch.nn.GELU(approximate="tanh")
    assert rel_error(run_torch(tm, images).hidden_states[-1], run_jax(jm, images).hidden_states[-1]) > CAUGHT


def test_jax_tanh_gelu_would_be_caught(monkeypatch):
    tm, jm, _, images, _, _, _ = _twins_and_reference("token")
    exact = jax.nn.gelu
    monkeypatch.setattr(jax.nn, "gelu", lambda x, approximate=True: exact(x, approximate=True))
    jax.clear_caches()
    broken = run_jax(jm, images)
    monkeypatch.undo()
    jax.clear_caches()
    assert rel_error(broken.hidden_states[-1], run_torch(tm, images).hidden_states[-1]) > CAUGHT


def reference_weights(model):
    return vit_torch.to_canonical(model)


def _shrink_embedding(name):
    """Small token variance, as in real checkpoints' quiet channels, where eps matters."""
    preset, overrides = small(name)
    tm, jm, weights = build_pair(preset, "torch", **overrides)
    weights = dict(weights)
    weights["embedding/kernel"] = weights["embedding/kernel"] * 1e-3
    weights["embedding/bias"] = weights["embedding/bias"] * 1e-3
    weights["Transformer/posembed_input/pos_embedding"] = weights["Transformer/posembed_input/pos_embedding"] * 1e-3
    weights["cls"] = weights["cls"] * 1e-3
    import vit_jax
    vit_torch.load_canonical_(tm, weights)
    vit_jax.load_canonical_(jm, weights)
    return tm, jm, weights


def test_layernorm_eps_is_1e6():
    tm, jm, weights = _shrink_embedding("token")
    images = random_images(tm.cfg, 2)
    right, _, _ = reference.forward(weights, tm.cfg, images, eps=1e-6)
    wrong, _, _ = reference.forward(weights, tm.cfg, images, eps=1e-5)
    assert rel_error(wrong, right) > CAUGHT
    for out in (run_torch(tm, images), run_jax(jm, images)):
        assert rel_error(out.logits, right) <= FLOAT32_TOL
    for module in tm.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-5  # PyTorch's default
    assert rel_error(run_torch(tm, images).logits, run_jax(jm, images).logits) > CAUGHT


def test_missing_nhwc_nchw_transpose_is_caught():
    tm, jm, _, images, logits, _, _ = _twins_and_reference("token")
    b, h, w, c = images.shape
    reshaped = torch.from_numpy(np.ascontiguousarray(images).reshape(b, c, h, w))  # the bug: reshape, no transpose
    with torch.no_grad():
        wrong = tm(reshaped).numpy()
    assert rel_error(wrong, logits) > CAUGHT
    with torch.no_grad():
        right = tm(torch.from_numpy(nhwc_to_nchw(images))).numpy()
    assert rel_error(right, logits) <= FLOAT32_TOL


def test_conv_kernel_hwio_to_oihw_is_caught():
    tm, jm, weights, images, logits, _, _ = _twins_and_reference("token")
    swapped = dict(weights)
    swapped["embedding/kernel"] = np.ascontiguousarray(weights["embedding/kernel"].transpose(1, 0, 2, 3))  # H<->W
    vit_torch.load_canonical_(tm, swapped)
    assert rel_error(run_torch(tm, images).logits, logits) > CAUGHT


@pytest.mark.parametrize("name,on_prefix", [("token", True), ("posemb-no-cls", False), ("deit-distilled", True)])
def test_position_embedding_convention(name, on_prefix):
    tm, jm, weights, images, logits, _, _ = _twins_and_reference(name)
    other, _, _ = reference.forward(weights, tm.cfg, images, posemb_on_prefix=not on_prefix)
    assert rel_error(other, logits) > CAUGHT
    for out in (run_torch(tm, images), run_jax(jm, images)):
        assert rel_error(out.logits, logits) <= FLOAT32_TOL


def test_parity_runs_pin_full_precision():
    with full_precision():
        assert jax.config.jax_default_matmul_precision == "highest"
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
