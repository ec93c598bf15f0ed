"""vit_torch's Swin Transformer alone: parameter counts, shapes, windows and masks against a float64
numpy model, timm's names, modes, initialisation, errors (twin of tests/test_swin_jax.py)."""
import math

import numpy as np
import pytest
import torch

import vit_torch
from vit_common import ConfigError, count_params, get_config
from vit_common.config.windows import full_attention, shifted_window_mask
from vit_torch.models import SwinTransformer
from tests import swin_reference
from tests.init_spec import SWIN_INIT_TEST_CONFIG, swin_init_failures
from tests.test_swin_common import SWIN_TIMM_COUNTS, TINY, TINY_NAME

# Three stages, shifted windows in the first two, one 4x4 window in the last.
DEEP = dict(TINY, depths=(2, 2, 2), num_heads=(2, 2, 4))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_allocated():
    assert n_params(vit_torch.create_model(TINY_NAME)) == SWIN_TIMM_COUNTS[TINY_NAME]


@pytest.mark.parametrize("name", list(SWIN_TIMM_COUNTS))
def test_parameter_counts_on_meta_device(name):
    cfg = get_config(name)
    with torch.device("meta"):  # real modules, no memory
        model = SwinTransformer(cfg)
    assert n_params(model) == count_params(cfg) == SWIN_TIMM_COUNTS[name]


def _randomised(**kw):
    """timm's init plus N(0, 0.02^2) on every parameter, so unit scales and zero biases carry signal."""
    torch.manual_seed(0)
    model = vit_torch.create_model(TINY_NAME, **{**TINY, **kw})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def _images(n=2, size=32, chans=3):
    x = np.random.default_rng(0).uniform(-1, 1, (n, size, size, chans)).astype(np.float32)
    return x, torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def test_contract_layers():
    model = vit_torch.create_model(TINY_NAME, **DEEP)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    # patch_embed.norm, 2 per block, one per patch merging, the final norm: all PyTorch's default eps.
    assert len(norms) == 1 + 2 * 6 + 2 + 1 and all(m.eps == 1e-5 for m in norms)
    gelus = [m for m in model.modules() if isinstance(m, torch.nn.GELU)]
    assert len(gelus) == 6 and all(m.approximate == "none" for m in gelus)
    mlp = _randomised().layers[1].blocks[0].mlp
    x = torch.randn(4, 32) * 2
    h = x.double() @ mlp.fc1.weight.double().T + mlp.fc1.bias.double()
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    want = h @ mlp.fc2.weight.double().T + mlp.fc2.bias.double()
    with torch.no_grad():
        torch.testing.assert_close(mlp(x).double(), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kw", [DEEP, dict(TINY, img_size=28, window_size=7, in_chans=1),
                                dict(TINY, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4))])
def test_matches_the_float64_reference(kw):
    """Windows, shifts, masks, bias tables and patch merging against a model that does none of
    them (vit_common is not used: see tests/swin_reference.py)."""
    model = _randomised(**kw)
    cfg = model.cfg
    x, x_nchw = _images(2, cfg.img_size, cfg.in_chans)
    with torch.no_grad():
        out = model.forward_intermediates(x_nchw)
    logits, pooled, stages, maps = swin_reference.forward(vit_torch.to_canonical(model), cfg, x)
    np.testing.assert_allclose(out.logits.numpy(), logits, rtol=0, atol=1e-5)
    for got, want in zip(out.stages, stages, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=2e-5)
    k = 0
    for i, depth in enumerate(cfg.depths):
        for j in range(depth):
            full = full_attention(out.attentions[k].numpy(), cfg.stage_resolution(i), cfg.stage_window(i),
                                  cfg.block_shift(i, j))
            np.testing.assert_allclose(full, maps[k], rtol=0, atol=1e-6)
            k += 1


def test_shapes_fused_attention_and_masks():
    model = _randomised(**DEEP)
    _, x = _images(3)
    with torch.no_grad():
        fast = model(x)
        out = model.forward_intermediates(x)
    assert fast.shape == (3, 10) and out.pooled.shape == (3, 64)
    torch.testing.assert_close(fast, out.logits, rtol=0, atol=1e-6)
    assert [tuple(h.shape) for h in out.hidden_states] == [(3, 16, 16, 16)] * 2 + [(3, 8, 8, 32)] * 2 + [(3, 4, 4, 64)] * 2
    assert [tuple(s.shape) for s in out.stages] == [(3, 16, 16, 16), (3, 8, 8, 32), (3, 4, 4, 64)]
    assert all(torch.equal(s, out.hidden_states[2 * i + 1]) for i, s in enumerate(out.stages))
    assert [tuple(a.shape) for a in out.attentions] == [(48, 2, 16, 16)] * 2 + [(12, 2, 16, 16)] * 2 + [(3, 4, 16, 16)] * 2
    torch.testing.assert_close(out.attentions[1].sum(-1), torch.ones(48, 2, 16))
    # Shifted blocks give no weight to pairs the roll brought together; unshifted ones mask nothing.
    mask = shifted_window_mask(16, 4, 2)
    weights = out.attentions[1].numpy().reshape(3, 16, 2, 16, 16)
    cross = np.broadcast_to(mask[:, None] != 0, weights.shape[1:])
    assert cross.any() and np.all(weights[:, cross] < 1e-30)
    assert np.all(out.attentions[0].numpy() > 0)
    assert model.layers[2].blocks[1].attn_mask is None  # one window: nothing to shift


def test_buffers_are_not_saved():
    model = vit_torch.create_model(TINY_NAME, **TINY)
    buffers = dict(model.named_buffers())
    assert "layers.0.blocks.0.attn.relative_position_index" in buffers and "layers.0.blocks.1.attn_mask" in buffers
    assert not any(k.endswith(("relative_position_index", "attn_mask")) for k in model.state_dict())


def test_features_only_and_no_pooling():
    model = vit_torch.create_model(TINY_NAME, **{**TINY, "num_classes": 0})
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 32)
    assert model.forward_intermediates(torch.zeros(2, 3, 32, 32)).logits is None
    per_position = vit_torch.create_model(TINY_NAME, **{**TINY, "global_pool": ""})
    assert per_position(torch.zeros(2, 3, 32, 32)).shape == (2, 8, 8, 10)  # timm: logits per position


def test_wrong_image_shapes_are_named():
    model = vit_torch.create_model(TINY_NAME, **TINY)
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 3, 32, 32\) \(NCHW\), got \(2, 32, 32, 3\)"):
        model(torch.zeros(2, 32, 32, 3))


def test_bad_overrides_fail_before_allocation(monkeypatch):
    monkeypatch.setattr(SwinTransformer, "__init__", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(ConfigError, match="stage 0 resolution 64x64 is not divisible by window_size 7"):
        vit_torch.create_model(TINY_NAME, img_size=256)
    with pytest.raises(ConfigError, match="not divisible by patch_size"):
        vit_torch.create_model(TINY_NAME, img_size=226)


def test_stochastic_depth_rises_linearly_and_regularisers_follow_the_mode():
    model = _randomised(drop_path_rate=0.3, drop_rate=0.1, proj_drop_rate=0.1, attn_drop_rate=0.1)
    rates = [b.drop_path1.rate for stage in model.layers for b in stage.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    _, x = _images(4)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # eval: deterministic
        model.train()
        assert not torch.equal(model(x), model(x))


def test_initialisation_follows_timm():
    torch.manual_seed(0)
    model = vit_torch.create_model(TINY_NAME, **SWIN_INIT_TEST_CONFIG)
    assert swin_init_failures(vit_torch.to_canonical(model), model.cfg) == []
    randomised = _randomised()
    assert swin_init_failures(vit_torch.to_canonical(randomised), randomised.cfg) != []  # the check can fail


def test_bf16_autocast():
    model = _randomised()
    _, x = _images(4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16 and all(p.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        ref = model(x)
    assert 1e-4 < (out.float() - ref).abs().max() < 5e-2


@pytest.mark.parametrize("name,kw", [(TINY_NAME, TINY), (TINY_NAME, DEEP), (TINY_NAME, dict(TINY, qkv_bias=False)),
                                     ("swin_base_patch4_window12_384", dict(TINY, window_size=8, img_size=64))])
def test_state_dict_loads_strictly_into_timm(name, kw):
    timm = pytest.importorskip("timm")  # timm needs torchvision, which has no CPU build on CI machines
    ours = _randomised(**kw)
    theirs = timm.create_model(name, pretrained=False, **kw).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    _, x = _images(2, kw["img_size"])
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), rtol=0, atol=1e-5)
