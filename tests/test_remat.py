"""Activation checkpointing (--grad-checkpointing) in both twins: the same gradients as the plain
model, in training mode with stochastic depth on (the recomputation must draw the same masks),
for every family whose block loop it wraps (ViT, Eva, Swin)."""
import copy

import numpy as np
import pytest

from vit_common import get_config

FAMILIES = {
    "vit": ("vit_tiny_patch16_224", dict(embed_dim=32, depth=2, num_heads=2, img_size=16, patch_size=8)),
    "eva": ("eva02_tiny_patch14_224", dict(embed_dim=32, depth=2, num_heads=2, img_size=16, patch_size=8)),
    "swin": ("swin_tiny_patch4_window7_224", dict(img_size=16, patch_size=2, window_size=4, embed_dim=16,
                                                   depths=(2, 2), num_heads=(2, 4))),
}
# JAX compiles each gradient (~10 s per stage on CPU): its Swin keeps one stage, a plain and a
# shifted (masked) block. Remat wraps each stage's block loop, the same code in every stage;
# test_jax_swin_checkpointing_reaches_every_stage shows every stage is switched.
JAX_ONLY = {"swin": dict(depths=(2,), num_heads=(2,))}


def _cfg(family, **override):
    name, kw = FAMILIES[family]
    return get_config(name, **{**kw, **override}, num_classes=5, drop_path_rate=0.2)


def _close(got, want, what):
    """max|a-b| / max(1, max|b|) <= 1e-6: recomputation replays the same float32 operations; the
    residual is XLA fusing the recomputed graph differently (last-bit rounding)."""
    assert got.keys() == want.keys()
    for k in want:
        a, b = np.asarray(got[k], np.float64), np.asarray(want[k], np.float64)
        assert np.isfinite(a).all(), (what, k)
        err = np.abs(a - b).max() / max(1.0, np.abs(b).max())
        assert err <= 1e-6, (what, k, err)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_jax_remat_gradients_equal_the_plain_models(family):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    from flax import nnx

    from vit_jax.models import build_model
    from vit_jax.weights import grads_to_canonical

    cfg = _cfg(family, **JAX_ONLY.get(family, {}))
    x = jax.random.normal(jax.random.key(1), (4, cfg.img_size, cfg.img_size, 3))
    w = jax.random.normal(jax.random.key(2), (4, 5))

    def grads(policy):
        model = build_model(cfg, rngs=nnx.Rngs(0))
        model.train()
        if policy:
            model.set_grad_checkpointing(True, policy)
        loss = lambda m: jnp.sum(m(x) * w) + jnp.mean(m.forward_features(x) ** 2)  # noqa: E731
        with jax.default_matmul_precision("highest"):
            return grads_to_canonical(nnx.jit(nnx.grad(loss))(model), cfg)

    plain = grads(None)
    assert max(np.abs(v).max() for v in plain.values()) > 0
    for policy in ("full", "dots"):  # keep block inputs only / also the dense layers' outputs
        _close(grads(policy), plain, (family, policy))


def test_jax_swin_checkpointing_reaches_every_stage():
    pytest.importorskip("jax")
    from flax import nnx

    from vit_jax.models import build_model

    cfg = _cfg("swin")
    model = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0)))  # the modules, no weights
    for policy in ("full", "dots"):
        model.set_grad_checkpointing(True, policy)
        assert [stage.grad_checkpointing for stage in model.layers] == [policy, policy]
    model.set_grad_checkpointing(False)
    assert [stage.grad_checkpointing for stage in model.layers] == [None, None]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_torch_checkpointing_gradients_equal_the_plain_models(family):
    torch = pytest.importorskip("torch")
    from vit_torch.models import build_model
    from vit_torch.weights import grads_to_canonical

    cfg = _cfg(family)
    torch.manual_seed(0)
    plain = build_model(cfg).train()
    remat = copy.deepcopy(plain)
    remat.set_grad_checkpointing(True)
    x = torch.randn(4, 3, cfg.img_size, cfg.img_size)
    w = torch.randn(4, 5)
    out = {}
    for name, model in (("plain", plain), ("remat", remat)):
        torch.manual_seed(1)  # the same drop-path masks
        (torch.sum(model(x) * w) + torch.mean(model.forward_features(x) ** 2)).backward()
        out[name] = grads_to_canonical(model)
    assert max(np.abs(v).max() for v in out["plain"].values()) > 0
    _close(out["remat"], out["plain"], family)


def test_torch_checkpointing_keeps_fewer_activations():
    """The saved-tensor hooks see what autograd keeps: checkpointed blocks keep their inputs only."""
    torch = pytest.importorskip("torch")
    from vit_torch.models import build_model

    cfg = get_config("vit_tiny_patch16_224", embed_dim=32, depth=4, num_heads=2, img_size=32, patch_size=4,
                     num_classes=5)
    x = torch.randn(2, 3, 32, 32)

    def saved_bytes(model):
        sizes = []

        def pack(t):
            sizes.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x).sum()
        return sum(sizes)

    torch.manual_seed(0)
    model = build_model(cfg).train()
    plain = saved_bytes(model)
    model.set_grad_checkpointing(True)
    assert saved_bytes(model) < plain / 2


@pytest.fixture(scope="module")
def jax_train_steps():
    """The compiled JAX train step of a small ViT, plain and under both remat policies."""
    jax = pytest.importorskip("jax")
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec as P

    from bench.batch import random_batch
    from vit_common.train.recipe import TrainConfig
    from vit_jax.models import build_model
    from vit_jax.train.optim import make_optimizer
    from vit_jax.train.step import Steps, initial_state, make_mesh, state_shardings

    # Depth 3 (4 before): remat then keeps ~0.51 (full) and ~0.56 (dots) of the plain step's temporaries.
    cfg = get_config("vit_tiny_patch16_224", embed_dim=32, depth=3, num_heads=2, img_size=32, patch_size=4,
                     num_classes=5)
    mesh = make_mesh()
    data = random_batch(cfg, 16)
    tx = make_optimizer(TrainConfig(clip_grad_norm=1.0), steps_per_epoch=10)
    out = {}
    for policy in (None, "full", "dots"):
        model = build_model(cfg, rngs=nnx.Rngs(0))
        model.train()
        if policy:
            model.set_grad_checkpointing(True, policy)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        rest, params = nnx.to_pure_dict(rest), nnx.to_pure_dict(params)
        state = initial_state(params, rest, tx)
        shardings = state_shardings(mesh, state, fsdp=False)
        train, _ = Steps(graphdef, tx, 1, None, rest).compile(shardings, NamedSharding(mesh, P("data")),
                                                              NamedSharding(mesh, P()))
        compiled = train.lower(state, data, {}).compile()
        new, metrics = compiled(jax.device_put(state, shardings), data, {})
        out[policy] = compiled.memory_analysis(), jax.device_get((new["params"], metrics))
    return out


def test_jax_train_step_remat_lowers_xla_temporaries(jax_train_steps):
    """XLA's own buffer plan of the compiled train step (deterministic): remat keeps each block's
    input only, so the temporaries fall well below the plain step's. Before the train step kept
    XLA:CPU's opt-barriers (vit_jax/train/step.py, CPU_COMPILER_OPTIONS) they rose instead."""
    plain = jax_train_steps[None][0].temp_size_in_bytes
    full = jax_train_steps["full"][0].temp_size_in_bytes
    dots = jax_train_steps["dots"][0].temp_size_in_bytes
    assert full < 0.6 * plain, (full, plain)
    assert full <= dots < plain, (full, dots, plain)


def test_jax_train_step_remat_equals_the_plain_step(jax_train_steps):
    """The same loss, gradient norm and updated weights from the compiled train step with the
    barriers kept (the recomputation replays the same float32 operations)."""
    import jax

    plain_params, plain_metrics = jax_train_steps[None][1]
    for policy in ("full", "dots"):
        params, metrics = jax_train_steps[policy][1]
        for k in ("loss", "grad_norm"):
            np.testing.assert_allclose(metrics[k], plain_metrics[k], rtol=1e-6, equal_nan=False)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(plain_params)):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, equal_nan=False)
