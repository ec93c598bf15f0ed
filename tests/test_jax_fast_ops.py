"""The JAX twin's CPU speed-ups give the numbers of the formulations they replace (within 1e-6)
and leave parameters, and so checkpoints, as they were."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vit_jax
from vit_common.train.recipe import TrainConfig
from vit_jax.models.fast_ops import FastLayerNorm, patch_matmul
from vit_jax.train.optim import make_optimizer
from vit_jax.train.step import Steps, initial_state, make_mesh, state_shardings
from jax.sharding import NamedSharding, PartitionSpec as P

TOL = dict(rtol=1e-6, atol=1e-6, equal_nan=False)  # a NaN on both sides fails


def _close(got, want):
    jax.tree.map(lambda g, w: np.testing.assert_allclose(np.asarray(g), np.asarray(w), **TOL), got, want)


def _randomise(module, scale=1.0):
    rng = np.random.default_rng(1)
    state = nnx.state(module, nnx.Param)
    nnx.update(module, jax.tree.map(lambda x: x + scale * rng.standard_normal(x.shape, np.float32), state))
    return module


@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_layer_norm_forward_and_gradients_equal_autodiff(eps):
    fast = _randomise(FastLayerNorm(48, epsilon=eps, use_fast_variance=False, rngs=nnx.Rngs(0)))
    plain = nnx.LayerNorm(48, epsilon=eps, use_fast_variance=False, rngs=nnx.Rngs(0))
    nnx.update(plain, nnx.state(fast))
    x = 3 * jax.random.normal(jax.random.key(0), (4, 17, 48)) + 1
    dy = jax.random.normal(jax.random.key(1), x.shape)

    def vjp(module, x):  # the output, and the gradients of <y, dy> w.r.t. x, scale and bias
        graphdef, state = nnx.split(module)
        y, back = jax.vjp(lambda x, state: nnx.merge(graphdef, state)(x), x, state)
        return y, back(dy)

    run = jax.jit(lambda x: (vjp(fast, x), vjp(plain, x)))
    got, want = run(x)
    (y, (dx, dstate)), (y_want, (dx_want, dstate_want)) = got, want
    _close((y, dx), (y_want, dx_want))
    # dscale and dbias sum 4 x 17 = 68 rows, in an order each side's compiled code picks: where the
    # orders differ, float32 rounding of a 68-term sum of terms up to ~10 reaches a few 1e-6 (1.8e-6
    # measured with the suite's cheap LLVM settings, conftest.py), so those get 68 float32 epsilons.
    jax.tree.map(lambda g, w: np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6,
                                                         atol=68 * np.finfo(np.float32).eps, equal_nan=False),
                 dstate, dstate_want)
    grads = nnx.to_pure_dict(dstate)
    assert set(grads) == {"scale", "bias"}
    for g in (dx, grads["scale"], grads["bias"]):  # FastLayerNorm's closed-form dscale, dbias are checked
        assert np.abs(np.asarray(g)).min() > 0


def test_layer_norm_bf16_forward_equals_nnx():
    fast = _randomise(FastLayerNorm(32, dtype=jnp.bfloat16, use_fast_variance=False, rngs=nnx.Rngs(0)))
    plain = nnx.LayerNorm(32, dtype=jnp.bfloat16, use_fast_variance=False, rngs=nnx.Rngs(0))
    nnx.update(plain, nnx.state(fast))
    x = jax.random.normal(jax.random.key(0), (8, 32))
    got, want = fast(x), plain(x)
    assert got.dtype == want.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_layer_norm_state_is_nnx_layer_norms():
    fast, plain = FastLayerNorm(8, rngs=nnx.Rngs(0)), nnx.LayerNorm(8, rngs=nnx.Rngs(0))
    _close(nnx.to_pure_dict(nnx.state(fast)), nnx.to_pure_dict(nnx.state(plain)))


@pytest.mark.parametrize("patch, chans, size", [(16, 3, 32), (4, 1, 28), (4, 3, 32)])
def test_patch_matmul_equals_the_convolution(patch, chans, size):
    conv = _randomise(nnx.Conv(chans, 24, kernel_size=(patch, patch), strides=(patch, patch), padding="VALID",
                               rngs=nnx.Rngs(0)), scale=0.02)  # weights at their trained scale: outputs ~1
    x = jax.random.normal(jax.random.key(0), (3, size, size, chans))
    dy = jax.random.normal(jax.random.key(1), (3, size // patch, size // patch, 24))

    def vjp(apply):
        graphdef, state = nnx.split(conv)
        y, back = jax.vjp(lambda x, state: apply(nnx.merge(graphdef, state), x), x, state)
        return y, back(dy)

    got, want = jax.jit(lambda: (vjp(patch_matmul), vjp(lambda conv, x: conv(x))))()
    # Each output sums p*p*C products in float32 in another order (768 for 16 x 16 x 3; both
    # formulations are then ~2e-6 from float64), so 1e-6 is taken relative to each array's scale.
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6 * np.abs(w).max(),
                                                                equal_nan=False), got, want)


def _train_step(model_name, monkeypatch, plain: bool, **model_args):
    monkeypatch.setattr(Steps, "scan_single_batch", plain)
    monkeypatch.setattr(Steps, "softmax_custom_jvp", not plain)
    model = vit_jax.create_model(model_name, rngs=nnx.Rngs(0), **model_args)
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rest_template, params = nnx.to_pure_dict(rest), nnx.to_pure_dict(params)
    tx = make_optimizer(TrainConfig(clip_grad_norm=1.0), steps_per_epoch=10)
    state = initial_state(params, rest_template, tx)
    mesh = make_mesh()
    shardings = state_shardings(mesh, state, fsdp=False)
    train, _ = Steps(graphdef, tx, 1, None, rest_template).compile(
        shardings, NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))
    rng = np.random.default_rng(0)
    n, size, chans = 4, model_args["img_size"], model_args.get("in_chans", 3)
    labels = rng.integers(0, 10, n).astype(np.int32)
    batch = dict(image=rng.uniform(-1, 1, (n, size, size, chans)).astype(np.float32), label=labels,
                 target=np.eye(10, dtype=np.float32)[labels])
    return train(jax.device_put(state, shardings), batch, {})


@pytest.mark.parametrize("model_name, model_args", [
    ("vit_base_patch16_224", dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)),
    ("swin_tiny_patch4_window7_224", dict(img_size=28, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                          window_size=7, num_classes=10, in_chans=1)),
])
def test_train_step_without_scan_and_with_softmax_jvp_equals_the_plain_step(model_name, model_args, monkeypatch):
    """One step's new state (parameters, AdamW moments: the gradients) and metrics."""
    got = _train_step(model_name, monkeypatch, plain=False, **model_args)
    want = _train_step(model_name, monkeypatch, plain=True, **model_args)
    _close(got, want)
