"""vit_jax alone: parameter counts, options, shapes, modes, initialisation, errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vit_jax
from vit_common import ConfigError, WeightsMismatchError, count_params, get_config, save_npz
from vit_jax.models import VisionTransformer
from vit_jax.models.layers import DropPath
from tests.init_spec import INIT_TEST_CONFIG, init_failures
from tests.test_common import TIMM_COUNTS

SMALL = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)

apply = nnx.jit(lambda model, x: model(x))  # compiled, as users run it; eager NNX is slow to test


def n_params(model):
    return sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_parameter_counts_allocated(name):
    assert n_params(vit_jax.create_model(name)) == TIMM_COUNTS[name]


@pytest.mark.parametrize("name", [n for n in TIMM_COUNTS if "tiny" not in n] + ["vit_huge_patch14_224"])
def test_parameter_counts_from_abstract_model(name):
    cfg = get_config(name)
    model = nnx.eval_shape(lambda: VisionTransformer(cfg, rngs=nnx.Rngs(0)))  # real modules, no memory
    assert n_params(model) == count_params(cfg) == TIMM_COUNTS.get(name, 630_764_800)


@pytest.fixture(scope="module")
def randomised():
    """_randomised() once for the tests that only read it."""
    return _randomised()


def test_contract_layers(randomised):
    norms = [m for _, m in nnx.iter_graph(randomised) if isinstance(m, nnx.LayerNorm)]
    assert len(norms) == 2 * SMALL["depth"] + 1 and all(m.epsilon == 1e-6 for m in norms)
    # The MLP's GELU is exact erf (the tanh approximation differs by up to ~5e-4 near |x| = 2).
    mlp = randomised.blocks[0].mlp
    x = jax.random.normal(jax.random.key(3), (4, 48)) * 2
    h = np.asarray(x, np.float64) @ np.asarray(mlp.fc1.kernel[...]) + np.asarray(mlp.fc1.bias[...])
    h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))
    want = h @ np.asarray(mlp.fc2.kernel[...]) + np.asarray(mlp.fc2.bias[...])
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(mlp, x), want, rtol=0, atol=1e-5)


def _randomised(name="vit_base_patch16_224", **kw):
    """Official init plus N(0, 0.02^2) on every parameter, so zero heads carry signal."""
    model = vit_jax.create_model(name, rngs=nnx.Rngs(0), **{**SMALL, **kw})
    rng = np.random.default_rng(1)  # numpy: an eager jax.random call compiles once per shape
    state = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree_util.tree_map(lambda x: x + 0.02 * rng.standard_normal(x.shape, np.float32), state))
    return model


@pytest.mark.parametrize("kw", [{}, dict(global_pool="avg"), dict(global_pool="map", class_token=False),
                                dict(representation_size=16), dict(pos_embed="sincos2d", no_embed_class=True)])
def test_shapes_and_fused_attention_matches_explicit(kw, randomised):
    model = _randomised(**kw) if kw else randomised
    x = jax.random.uniform(jax.random.key(0), (3, 32, 32, 3), minval=-1, maxval=1)
    fast = apply(model, x)
    out = nnx.jit(lambda m, x: m.forward_intermediates(x))(model, x)
    tokens = 17 - (not model.cfg.class_token)
    assert fast.shape == (3, 10) and out.logits.shape == (3, 10)
    np.testing.assert_allclose(fast, out.logits, rtol=0, atol=1e-6)
    assert len(out.hidden_states) == 2 and out.hidden_states[0].shape == (3, tokens, 48)
    assert out.attentions[0].shape == (3, 3, tokens, tokens)
    np.testing.assert_allclose(out.attentions[1].sum(-1), 1.0, rtol=1e-6)
    assert out.pooled.shape == (3, kw.get("representation_size", 48))


def test_features_only_model_returns_pooled_features():
    model = vit_jax.create_model("vit_base_patch16_224", **{**SMALL, "num_classes": 0})
    assert apply(model, jnp.zeros((2, 32, 32, 3))).shape == (2, 48)
    assert model.forward_intermediates(jnp.zeros((2, 32, 32, 3))).logits is None


def test_distilled_returns_both_heads_in_training_and_their_mean_in_eval():
    model = _randomised("deit_tiny_distilled_patch16_224")
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
    model.train()
    cls_logits, dist_logits = apply(model, x)
    assert not jnp.allclose(cls_logits, dist_logits)
    model.eval()
    np.testing.assert_allclose(apply(model, x), (cls_logits + dist_logits) / 2, rtol=1e-6, atol=1e-7)


def test_wrong_image_shapes_are_named():
    model = vit_jax.create_model("vit_base_patch16_224", **SMALL)
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 32, 32, 3\) \(NHWC\), got \(2, 3, 32, 32\)"):
        apply(model, jnp.zeros((2, 3, 32, 32)))
    with pytest.raises(ValueError, match="got \\(2, 64, 64, 3\\)"):
        apply(model, jnp.zeros((2, 64, 64, 3)))


def test_bad_names_and_overrides_fail_before_allocation(monkeypatch):
    monkeypatch.setattr(VisionTransformer, "__init__", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(ConfigError, match="unknown model name"):
        vit_jax.create_model("vit_gigantic_patch16_224")
    with pytest.raises(ConfigError, match="not divisible by patch_size"):
        vit_jax.create_model("vit_base_patch16_224", img_size=100)
    with pytest.raises(ConfigError, match="not divisible by num_heads"):
        vit_jax.create_model("vit_base_patch16_224", embed_dim=100)


def test_checkpoint_that_does_not_fit_is_rejected_and_a_new_head_is_zero(tmp_path):
    src = vit_jax.create_model("vit_base_patch16_224", **SMALL)
    save_npz(tmp_path / "w.npz", vit_jax.to_canonical(src), src.cfg)
    with pytest.raises(WeightsMismatchError, match=r"encoderblock_0/LayerNorm_0/scale: expected \(96,\), found \(48,\)"):
        vit_jax.create_model("vit_base_patch16_224", checkpoint=tmp_path / "w.npz", **{**SMALL, "embed_dim": 96})
    model = vit_jax.create_model(checkpoint=tmp_path / "w.npz", num_classes=5)  # config read from the file
    assert model.cfg == src.cfg.replace(num_classes=5)
    assert np.asarray(model.head.kernel[...]).shape in ((5, 48), (48, 5)) and not np.asarray(model.head.kernel[...]).any()


def test_drop_path_statistics():
    layer = DropPath(0.25, rngs=nnx.Rngs(dropout=0))
    x = jnp.ones((20000, 4, 8))
    y = layer(x)
    dropped = float((y[:, 0, 0] == 0).mean())
    assert abs(dropped - 0.25) < 0.015
    assert bool(jnp.all((y == 0) | (y == jnp.float32(1 / 0.75))))
    assert bool(jnp.all(y == y[:, :1, :1]))  # whole samples, not elements
    assert abs(float(y.mean()) - 1.0) < 0.02
    layer.eval()
    assert bool(jnp.array_equal(layer(x), x))


def test_stochastic_depth_rises_linearly_and_regularisers_follow_the_mode():
    model = _randomised(depth=5, drop_path_rate=0.4, drop_rate=0.1, attn_drop_rate=0.1)
    assert [b.drop_path1.rate for b in model.blocks] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
    assert bool(jnp.array_equal(apply(model, x), apply(model, x)))  # eval: deterministic
    model.train()
    assert not bool(jnp.array_equal(apply(model, x), apply(model, x)))


# Each of timm's dropout fields, and the dropout layers it (and only it) drives.
DROPOUT_FIELDS = {
    "drop_rate": {"head"},
    "pos_drop_rate": {"pos"},
    "proj_drop_rate": {"attn.proj", "mlp.fc1", "mlp.fc2"},
    "attn_drop_rate": {"attn.probs"},
}


def _dropout_rates(model):
    rates = {"head": [model.head_drop.rate], "pos": [model.pos_drop.rate]}
    for b in model.blocks:
        for where, layer in (("attn.probs", b.attn.attn_drop), ("attn.proj", b.attn.proj_drop),
                             ("mlp.fc1", b.mlp.drop1), ("mlp.fc2", b.mlp.drop2)):
            rates.setdefault(where, []).append(layer.rate)
    pool_mlp = model.attn_pool.mlp
    rates["map.mlp"] = [pool_mlp.drop1.rate, pool_mlp.drop2.rate]  # timm's MAP head has no dropout
    return rates


@pytest.mark.parametrize("field", list(DROPOUT_FIELDS))
def test_each_dropout_field_has_timms_meaning(field):
    # One block: each field's layers are the same in every block, and XLA:CPU compiles random bits slowly.
    model = _randomised(global_pool="map", class_token=False, depth=1, **{field: 0.3})
    rates = _dropout_rates(model)
    assert {k for k, v in rates.items() if any(v)} == DROPOUT_FIELDS[field]
    assert all(r == 0.3 for k in DROPOUT_FIELDS[field] for r in rates[k])
    # Behaviour in training mode: head dropout leaves the tokens alone and changes the logits.
    x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
    features = nnx.jit(lambda m, x: m.forward_features(x))
    model.train()
    assert bool(jnp.array_equal(features(model, x), features(model, x))) == (field == "drop_rate")
    assert not bool(jnp.array_equal(apply(model, x), apply(model, x)))
    model.eval()
    assert bool(jnp.array_equal(apply(model, x), apply(model, x)))


def test_initialisation_follows_the_official_jax_code(randomised):
    model = vit_jax.create_model("vit_base_patch16_224", rngs=nnx.Rngs(0), **INIT_TEST_CONFIG)
    assert init_failures(vit_jax.to_canonical(model), model.cfg) == []
    assert init_failures(vit_jax.to_canonical(randomised), randomised.cfg) != []  # the check can fail


def test_bf16_compute_keeps_float32_parameters():
    model = vit_jax.create_model("vit_base_patch16_224", dtype=jnp.bfloat16, **SMALL)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
    assert apply(model, jnp.zeros((1, 32, 32, 3))).dtype == jnp.bfloat16
