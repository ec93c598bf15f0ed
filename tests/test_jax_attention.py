"""The CPU attention (vit_jax/models/attention.py) gives jax.nn.dot_product_attention's forward and
gradients within 1e-6, is what the models use on CPU in float32 when enabled, and leaves the
attention weights available when asked for."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vit_jax
from vit_jax.models import attention as attention_mod
from vit_jax.models import layers


def _assert_close(got, want, rel=1e-6):
    """The project's measure per array, max|got - want| / max(1, max|want|) <= rel; NaN fails."""
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        assert g.shape == w.shape and np.isfinite(g).all() and np.isfinite(w).all()
        np.testing.assert_allclose(g, w, rtol=0, atol=rel * max(1.0, np.abs(w).max()), equal_nan=False)


def _value_and_grads(fn, q, k, v, d_out):
    out, back = jax.vjp(fn, q, k, v)
    return out, back(d_out)


@pytest.mark.parametrize("shape", [(2, 5, 2, 8), (3, 17, 4, 16), (1, 50, 4, 16), (2, 197, 3, 64)],
                         ids=["tiny", "odd-tokens", "fashion-mnist", "vit-ti-197-tokens"])
def test_cpu_attention_forward_and_gradients_equal_the_fused_op(shape):
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v, d_out = (jax.random.normal(key, shape) for key in keys)
    run = jax.jit(lambda *a: (_value_and_grads(attention_mod.cpu_attention, *a),
                              _value_and_grads(jax.nn.dot_product_attention, *a)))
    got, want = run(q, k, v, d_out)
    _assert_close(got, want)


def test_cpu_attention_matches_a_float64_numpy_reference():
    rng = np.random.default_rng(0)
    # Sharper logits (inputs of std 2): the float32 sums of both formulations then sit up to ~1.2e-6
    # from float64 (measured for jax.nn.dot_product_attention's autodiff as well), hence 2e-6.
    q, k, v, d_out = (2 * rng.standard_normal((2, 9, 2, 8)) for _ in range(4))
    out, (dq, dk, dv) = jax.jit(lambda *a: _value_and_grads(attention_mod.cpu_attention, *a))(
        *(jnp.asarray(a, jnp.float32) for a in (q, k, v, d_out)))
    # Textbook attention in float64, per batch and head: O = P V, dV = P^T dO, dP = dO V^T,
    # dS = P * (dP - rowsum(P * dP)), dQ = dS K / sqrt(D), dK = dS^T Q / sqrt(D).
    qh, kh, vh, dh = (np.swapaxes(a, 1, 2) for a in (q, k, v, d_out))
    s = qh @ np.swapaxes(kh, -1, -2) / np.sqrt(8)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dp = dh @ np.swapaxes(vh, -1, -2)
    ds = p * (dp - (p * dp).sum(-1, keepdims=True)) / np.sqrt(8)
    want = [p @ vh, ds @ kh, np.swapaxes(ds, -1, -2) @ qh, np.swapaxes(p, -1, -2) @ dh]
    _assert_close([out, dq, dk, dv], [np.swapaxes(a, 1, 2) for a in want], rel=2e-6)


def test_dispatch_per_backend_and_dtype(monkeypatch):
    monkeypatch.setattr(attention_mod, "CPU_ATTENTION", True)
    calls = []
    monkeypatch.setattr(attention_mod, "cpu_attention", lambda *a: calls.append("cpu") or jnp.zeros(a[0].shape))
    monkeypatch.setattr(jax.nn, "dot_product_attention", lambda *a: calls.append("fused") or jnp.zeros(a[0].shape))
    x = jnp.ones((1, 3, 2, 4))
    attention_mod.dot_product_attention(x, x, x)
    attention_mod.dot_product_attention(x.astype(jnp.bfloat16), x.astype(jnp.bfloat16), x.astype(jnp.bfloat16))
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    attention_mod.dot_product_attention(x, x, x)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    monkeypatch.setattr(attention_mod, "CPU_ATTENTION", False)  # the default until measured faster
    attention_mod.dot_product_attention(x, x, x)
    assert calls == ["cpu", "fused", "fused", "fused"]


@pytest.fixture(scope="module")
def tiny_vit():
    model = vit_jax.create_model("vit_base_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2,
                                 num_heads=3, num_classes=10, rngs=nnx.Rngs(0))
    model.eval()
    return model


def _loss_and_grads(model, images):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        logits = nnx.merge(graphdef, params, rest)(images)
        return jnp.sum(jax.nn.log_softmax(logits) * jnp.arange(10.0)), logits

    (value, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return logits, nnx.to_pure_dict(grads)


def test_model_gradients_equal_those_with_the_fused_op(tiny_vit, monkeypatch):
    images = jax.random.uniform(jax.random.key(0), (3, 32, 32, 3), minval=-1, maxval=1)
    monkeypatch.setattr(layers, "dot_product_attention", attention_mod.cpu_attention)
    got = jax.jit(lambda x: _loss_and_grads(tiny_vit, x))(images)
    monkeypatch.setattr(layers, "dot_product_attention", jax.nn.dot_product_attention)
    want = jax.jit(lambda x: _loss_and_grads(tiny_vit, x))(images)  # a new function: traced afresh
    _assert_close(got, want)


def test_attention_weights_still_returned_and_consistent(tiny_vit):
    block = tiny_vit.blocks[0]
    x = block.norm1(jax.random.normal(jax.random.key(1), (2, 17, 48)))
    fast, none = block.attn(x)  # the fast path (the CPU attention where enabled)
    slow, weights = block.attn(x, return_weights=True)  # the explicit einsum + softmax path
    assert none is None and weights.shape == (2, 3, 17, 17)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
    _assert_close(fast, slow)
