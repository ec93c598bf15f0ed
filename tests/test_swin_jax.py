"""vit_jax's Swin Transformer alone: parameter counts, shapes, windows and masks against a float64
numpy model, modes, initialisation, errors (twin of tests/test_swin_torch.py)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vit_jax
from vit_common import ConfigError, count_params, get_config
from vit_common.config.windows import full_attention, shifted_window_mask
from vit_jax.models import SwinTransformer
from tests import swin_reference
from tests.init_spec import SWIN_INIT_TEST_CONFIG, swin_init_failures
from tests.test_swin_common import SWIN_TIMM_COUNTS, TINY, TINY_NAME

apply = nnx.jit(lambda model, x: model(x))
intermediates = nnx.jit(lambda model, x: model.forward_intermediates(x))
# Three stages, shifted windows in the first two, one 4x4 window in the last.
DEEP = dict(TINY, depths=(2, 2, 2), num_heads=(2, 2, 4))


def n_params(model):
    return sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("name", list(SWIN_TIMM_COUNTS))
def test_parameter_counts_from_abstract_model(name):
    cfg = get_config(name)
    model = nnx.eval_shape(lambda: SwinTransformer(cfg, rngs=nnx.Rngs(0)))  # real modules, no memory
    assert n_params(model) == count_params(cfg) == SWIN_TIMM_COUNTS[name]


def _randomised(**kw):
    """timm's init plus N(0, 0.02^2) on every parameter, so unit scales and zero biases carry signal."""
    model = vit_jax.create_model(TINY_NAME, rngs=nnx.Rngs(0), **{**TINY, **kw})
    rng = np.random.default_rng(1)
    state = nnx.state(model, nnx.Param)
    noisy = lambda x: jnp.asarray(np.asarray(x) + 0.02 * rng.standard_normal(x.shape, np.float32))  # numpy: no
    nnx.update(model, jax.tree_util.tree_map(noisy, state))  # eager jax op compiled per shape
    return model


def _images(n=2, size=32, chans=3):
    return jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (n, size, size, chans)).astype(np.float32))


@pytest.fixture(scope="module")
def deep():
    return _randomised(**DEEP)


def test_contract_layers(deep):
    norms = [m for _, m in nnx.iter_graph(deep) if isinstance(m, nnx.LayerNorm)]
    # patch_embed.norm, 2 per block, one per patch merging, the final norm: all PyTorch's default eps.
    assert len(norms) == 1 + 2 * 6 + 2 + 1 and all(m.epsilon == 1e-5 for m in norms)
    mlp = deep.layers[1].blocks[0].mlp
    x = jax.random.normal(jax.random.key(3), (4, 32)) * 2
    h = np.asarray(x, np.float64) @ np.asarray(mlp.fc1.kernel[...]) + np.asarray(mlp.fc1.bias[...])
    h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))  # exact GELU
    want = h @ np.asarray(mlp.fc2.kernel[...]) + np.asarray(mlp.fc2.bias[...])
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(mlp, x), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kw", [DEEP, dict(TINY, img_size=28, window_size=7, in_chans=1)])
def test_matches_the_float64_reference(deep, kw):
    """Windows, shifts, masks, bias tables and patch merging against a model that does none of
    them (vit_common is not used: see tests/swin_reference.py). The torch twin's test adds a
    window that shrinks below window_size; the parity suite ties the twins together there."""
    model = deep if kw is DEEP else _randomised(**kw)
    cfg = model.cfg
    x = _images(2, cfg.img_size, cfg.in_chans)
    out = intermediates(model, x)
    logits, pooled, stages, maps = swin_reference.forward(vit_jax.to_canonical(model), cfg, np.asarray(x))
    np.testing.assert_allclose(out.logits, logits, rtol=0, atol=1e-5)
    for got, want in zip(out.stages, stages, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    k = 0
    for i, depth in enumerate(cfg.depths):
        for j in range(depth):
            full = full_attention(np.asarray(out.attentions[k]), cfg.stage_resolution(i), cfg.stage_window(i),
                                  cfg.block_shift(i, j))
            np.testing.assert_allclose(full, maps[k], rtol=0, atol=1e-6)
            k += 1


def test_shapes_fused_attention_and_masks(deep):
    model = deep
    x = _images(3)
    fast = apply(model, x)
    out = intermediates(model, x)
    assert fast.shape == (3, 10) and out.pooled.shape == (3, 64)
    np.testing.assert_allclose(fast, out.logits, rtol=0, atol=1e-6)
    assert [h.shape for h in out.hidden_states] == [(3, 16, 16, 16)] * 2 + [(3, 8, 8, 32)] * 2 + [(3, 4, 4, 64)] * 2
    assert [s.shape for s in out.stages] == [(3, 16, 16, 16), (3, 8, 8, 32), (3, 4, 4, 64)]
    assert all(jnp.array_equal(s, out.hidden_states[2 * i + 1]) for i, s in enumerate(out.stages))
    assert [a.shape for a in out.attentions] == [(48, 2, 16, 16)] * 2 + [(12, 2, 16, 16)] * 2 + [(3, 4, 16, 16)] * 2
    np.testing.assert_allclose(out.attentions[1].sum(-1), 1.0, rtol=1e-6)
    # Shifted blocks give no weight to pairs the roll brought together; unshifted ones mask nothing.
    mask = shifted_window_mask(16, 4, 2)
    weights = np.asarray(out.attentions[1]).reshape(3, 16, 2, 16, 16)
    cross = np.broadcast_to(mask[:, None] != 0, weights.shape[1:])
    assert cross.any() and np.all(weights[:, cross] < 1e-30)
    assert np.all(np.asarray(out.attentions[0]) > 0)
    assert model.layers[2].blocks[1].attn_mask is None  # one window: nothing to shift


def test_features_only_and_no_pooling():
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)  # shapes only: nothing is compiled
    features = nnx.eval_shape(lambda: SwinTransformer(get_config(TINY_NAME, **{**TINY, "num_classes": 0}),
                                                      rngs=nnx.Rngs(0)))
    assert nnx.eval_shape(lambda m, x: m(x), features, x).shape == (2, 32)
    assert nnx.eval_shape(lambda m, x: m.forward_intermediates(x), features, x).logits is None
    per_position = nnx.eval_shape(lambda: SwinTransformer(get_config(TINY_NAME, **{**TINY, "global_pool": ""}),
                                                          rngs=nnx.Rngs(0)))
    assert nnx.eval_shape(lambda m, x: m(x), per_position, x).shape == (2, 8, 8, 10)  # timm: logits per position


def test_wrong_image_shapes_are_named():
    model = vit_jax.create_model(TINY_NAME, **TINY)
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 32, 32, 3\) \(NHWC\), got \(2, 3, 32, 32\)"):
        apply(model, jnp.zeros((2, 3, 32, 32)))


def test_bad_overrides_fail_before_allocation(monkeypatch):
    monkeypatch.setattr(SwinTransformer, "__init__", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(ConfigError, match="stage 0 resolution 64x64 is not divisible by window_size 7"):
        vit_jax.create_model(TINY_NAME, img_size=256)
    with pytest.raises(ConfigError, match="not divisible by patch_size"):
        vit_jax.create_model(TINY_NAME, img_size=226)


def test_stochastic_depth_rises_linearly_and_regularisers_follow_the_mode():
    # Attention / projection dropout are left off: XLA on CPU takes ~30 s to compile their random
    # bits, and they are the same nnx.Dropout the ViT tests cover.
    model = _randomised(drop_path_rate=0.3, drop_rate=0.1)
    rates = [b.drop_path1.rate for stage in model.layers for b in stage.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    x = _images(4)
    assert bool(jnp.array_equal(apply(model, x), apply(model, x)))  # eval: deterministic
    model.train()
    assert not bool(jnp.array_equal(apply(model, x), apply(model, x)))


def test_initialisation_follows_timm():
    model = vit_jax.create_model(TINY_NAME, rngs=nnx.Rngs(0), **SWIN_INIT_TEST_CONFIG)
    assert swin_init_failures(vit_jax.to_canonical(model), model.cfg) == []
    randomised = _randomised()
    assert swin_init_failures(vit_jax.to_canonical(randomised), randomised.cfg) != []  # the check can fail


def test_bf16_compute_keeps_float32_parameters():
    model = vit_jax.create_model(TINY_NAME, dtype=jnp.bfloat16, **TINY)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
    out = intermediates(model, _images(1))
    assert out.logits.dtype == jnp.bfloat16 and out.stages[-1].dtype == jnp.float32  # float32 residual stream
