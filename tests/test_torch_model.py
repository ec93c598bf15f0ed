"""vit_torch alone: parameter counts, options, shapes, modes, initialisation, errors."""
import math

import pytest
import torch

import vit_torch
from vit_common import ConfigError, WeightsMismatchError, count_params, get_config, save_npz
from vit_torch.models import VisionTransformer
from vit_torch.models.layers import DropPath
from tests.init_spec import INIT_TEST_CONFIG, init_failures
from tests.test_common import TIMM_COUNTS

SMALL = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_parameter_counts_allocated(name):
    assert n_params(vit_torch.create_model(name)) == TIMM_COUNTS[name]


@pytest.mark.parametrize("name", [n for n in TIMM_COUNTS if "tiny" not in n] + ["vit_huge_patch14_224"])
def test_parameter_counts_on_meta_device(name):
    cfg = get_config(name)
    with torch.device("meta"):  # real modules, no memory
        model = VisionTransformer(cfg)
    assert n_params(model) == count_params(cfg) == TIMM_COUNTS.get(name, 630_764_800)


def test_contract_layers():
    model = vit_torch.create_model("vit_base_patch16_224", **SMALL)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * SMALL["depth"] + 1 and all(m.eps == 1e-6 for m in norms)
    gelus = [m for m in model.modules() if isinstance(m, torch.nn.GELU)]
    assert gelus and all(m.approximate == "none" for m in gelus)
    mlp = _randomised().blocks[0].mlp
    x = torch.randn(4, 48) * 2
    h = x.double() @ mlp.fc1.weight.double().T + mlp.fc1.bias.double()
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    want = h @ mlp.fc2.weight.double().T + mlp.fc2.bias.double()
    with torch.no_grad():
        torch.testing.assert_close(mlp(x).double(), want, rtol=0, atol=1e-5)


def _randomised(name="vit_base_patch16_224", **kw):
    torch.manual_seed(0)
    model = vit_torch.create_model(name, **{**SMALL, **kw})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("kw", [{}, dict(global_pool="avg"), dict(global_pool="map", class_token=False),
                                dict(representation_size=16), dict(pos_embed="sincos2d", no_embed_class=True)])
def test_shapes_and_fused_attention_matches_explicit(kw):
    model = _randomised(**kw)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        fast = model(x)
        out = model.forward_intermediates(x)
    assert fast.shape == (3, 10) and out.logits.shape == (3, 10)
    torch.testing.assert_close(fast, out.logits, rtol=0, atol=1e-6)
    assert len(out.hidden_states) == 2 and out.hidden_states[0].shape == (3, 17 - (not model.cfg.class_token), 48)
    assert out.attentions[0].shape == (3, 3, out.hidden_states[0].shape[1], out.hidden_states[0].shape[1])
    torch.testing.assert_close(out.attentions[1].sum(-1), torch.ones(3, 3, out.hidden_states[0].shape[1]))
    assert out.pooled.shape == (3, kw.get("representation_size", 48))


def test_features_only_model_returns_pooled_features():
    model = vit_torch.create_model("vit_base_patch16_224", **{**SMALL, "num_classes": 0})
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 48)
    assert model.forward_intermediates(torch.zeros(2, 3, 32, 32)).logits is None


def test_distilled_returns_both_heads_in_training_and_their_mean_in_eval():
    model = _randomised("deit_tiny_distilled_patch16_224")
    x = torch.rand(2, 3, 32, 32)
    model.train()
    cls_logits, dist_logits = model(x)
    assert not torch.allclose(cls_logits, dist_logits)
    model.eval()
    torch.testing.assert_close(model(x), (cls_logits + dist_logits) / 2)


def test_wrong_image_shapes_are_named():
    model = vit_torch.create_model("vit_base_patch16_224", **SMALL)
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 3, 32, 32\) \(NCHW\), got \(2, 32, 32, 3\)"):
        model(torch.zeros(2, 32, 32, 3))
    with pytest.raises(ValueError, match="got \\(2, 3, 64, 64\\)"):
        model(torch.zeros(2, 3, 64, 64))


def test_bad_names_and_overrides_fail_before_allocation(monkeypatch):
    monkeypatch.setattr(VisionTransformer, "__init__", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(ConfigError, match="unknown model name"):
        vit_torch.create_model("vit_gigantic_patch16_224")
    with pytest.raises(ConfigError, match="not divisible by patch_size"):
        vit_torch.create_model("vit_base_patch16_224", img_size=100)
    with pytest.raises(ConfigError, match="not divisible by num_heads"):
        vit_torch.create_model("vit_base_patch16_224", embed_dim=100)


def test_checkpoint_that_does_not_fit_is_rejected_and_a_new_head_is_zero(tmp_path):
    src = vit_torch.create_model("vit_base_patch16_224", **SMALL)
    save_npz(tmp_path / "w.npz", vit_torch.to_canonical(src), src.cfg)
    with pytest.raises(WeightsMismatchError, match=r"encoderblock_0/LayerNorm_0/scale: expected \(96,\), found \(48,\)"):
        vit_torch.create_model("vit_base_patch16_224", checkpoint=tmp_path / "w.npz", **{**SMALL, "embed_dim": 96})
    model = vit_torch.create_model(checkpoint=tmp_path / "w.npz", num_classes=5)  # config read from the file
    assert model.cfg == src.cfg.replace(num_classes=5)
    assert model.head.weight.detach().numpy().shape in ((5, 48), (48, 5)) and not model.head.weight.detach().numpy().any()


def test_drop_path_statistics():
    torch.manual_seed(0)
    layer = DropPath(0.25).train()
    x = torch.ones(20000, 4, 8)
    y = layer(x)
    dropped = (y[:, 0, 0] == 0).float().mean().item()
    assert abs(dropped - 0.25) < 0.015
    assert torch.all((y == 0) | (y == 1 / 0.75))
    assert torch.all(y == y[:, :1, :1])  # whole samples, not elements
    assert abs(y.mean().item() - 1.0) < 0.02
    assert torch.equal(layer.eval()(x), x)


def test_stochastic_depth_rises_linearly_and_regularisers_follow_the_mode():
    model = vit_torch.create_model("vit_base_patch16_224", **{**SMALL, "depth": 5, "drop_path_rate": 0.4,
                                                               "drop_rate": 0.1, "attn_drop_rate": 0.1})
    assert [b.drop_path1.rate for b in model.blocks] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # eval: deterministic
        model.train()
        assert not torch.equal(model(x), model(x))


# Each of timm's dropout fields, and the dropout layers it (and only it) drives.
DROPOUT_FIELDS = {
    "drop_rate": {"head"},
    "pos_drop_rate": {"pos"},
    "proj_drop_rate": {"attn.proj", "mlp.fc1", "mlp.fc2"},
    "attn_drop_rate": {"attn.probs"},
}


def _dropout_rates(model):
    rates = {"head": [model.head_drop.p], "pos": [model.pos_drop.p]}
    for b in model.blocks:
        for where, layer in (("attn.probs", b.attn.attn_drop), ("attn.proj", b.attn.proj_drop),
                             ("mlp.fc1", b.mlp.drop1), ("mlp.fc2", b.mlp.drop2)):
            rates.setdefault(where, []).append(layer.p)
    pool_mlp = model.attn_pool.mlp
    rates["map.mlp"] = [pool_mlp.drop1.p, pool_mlp.drop2.p]  # timm's MAP head has no dropout
    return rates


@pytest.mark.parametrize("field", list(DROPOUT_FIELDS))
def test_each_dropout_field_has_timms_meaning(field):
    model = _randomised(global_pool="map", class_token=False, **{field: 0.3})
    rates = _dropout_rates(model)
    assert {k for k, v in rates.items() if any(v)} == DROPOUT_FIELDS[field]
    assert all(r == 0.3 for k in DROPOUT_FIELDS[field] for r in rates[k])
    # Behaviour in training mode: head dropout leaves the tokens alone and changes the logits.
    x = torch.rand(4, 3, 32, 32)
    model.train()
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), model.forward_features(x)) == (field == "drop_rate")
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


def test_initialisation_follows_the_official_jax_code():
    torch.manual_seed(0)
    model = vit_torch.create_model("vit_base_patch16_224", **INIT_TEST_CONFIG)
    assert init_failures(vit_torch.to_canonical(model), model.cfg) == []
    assert init_failures(vit_torch.to_canonical(_randomised()), _randomised().cfg) != []  # the check can fail


@pytest.mark.parametrize("name,kw", [("vit_base_patch16_224", {}), ("deit_tiny_distilled_patch16_224", {}),
                                     ("vit_base_patch16_224", dict(global_pool="map", class_token=False)),
                                     ("vit_base_patch16_224", dict(global_pool="avg"))])
def test_state_dict_loads_strictly_into_timm(name, kw):
    timm = pytest.importorskip("timm")  # timm needs torchvision, which has no CPU build on CI machines
    overrides = {**SMALL, **kw}
    ours = _randomised(name, **kw)
    theirs = timm.create_model(name, pretrained=False, **overrides).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), rtol=0, atol=1e-5)
