"""Any image size at call time (dynamic_img_size=True), both twins, against outside references:

- DINOv2 from a 518 px file (the real 37 x 37 position table; random weights, one block) at
  224 x 224 and 168 x 252: the hub's own rule (bicubic, scale factor (n + 0.1) / 37, no
  antialiasing; with registers, antialiased to the size) through transformers' Dinov2 models,
  whose interpolate_pos_encoding is replaced by the hub's call for the plain model (transformers
  itself omits the 0.1 offset: its own rule, `transformers`, is checked unpatched) and used as it
  is for Dinov2WithRegistersModel (which computes the hub's register rule, so `dinov2_reg` and
  `transformers_reg` are one computation, checked once).
- A timm-named ViT at 160 x 224 and an EVA-02 (rope + absolute table) at 96 x 160: the float64
  numpy references of parity_tests/reference*.py, fed the table torch.nn.functional.interpolate
  gives under timm's resample_abs_pos_embed call (bicubic, antialias=True).
- JAX traces a shape once: a second call at the same size does not recompile.
"""
import math
import types

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

import vit_jax
import vit_torch
from parity_tests import reference, reference_eva
from parity_tests.harness import FLOAT32_TOL, full_precision, nhwc_to_nchw, perturb, rel_error
from parity_tests.hf_families import hf_model, perturb_, to_timm
from vit_common import TIMM, get_config

SIZES = [(224, 224), (168, 252)]
TINY_DINO = dict(hidden=48, layers=1, heads=2, mlp=192, patch=14, img=518)


def hub_dinov2_interpolation(self, embeddings, height, width):
    """DINOv2's hub models without registers (interpolate_offset=0.1, interpolate_antialias=False),
    as facebookresearch/dinov2 computes it, in transformers' method signature."""
    table = self.position_embeddings
    n, m = embeddings.shape[1] - 1, table.shape[1] - 1
    if n == m and height == width:
        return table
    side, dim, patch = int(math.sqrt(m)), table.shape[-1], self.patch_size
    h0, w0 = height // patch, width // patch
    grid = table[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((h0 + 0.1) / side, (w0 + 0.1) / side), mode="bicubic",
                         antialias=False)
    assert grid.shape[-2:] == (h0, w0)
    return torch.cat([table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


# case -> (HF family, registers, our preset, our rule, patch HF with the hub's rule)
CASES = {
    "dinov2-hub": ("dinov2", 0, "vit_small_patch14_dinov2", "dinov2", True),
    "dinov2-transformers": ("dinov2", 0, "vit_small_patch14_dinov2", "transformers", False),
    "dinov2-reg-hub": ("dinov2_reg", 4, "vit_small_patch14_reg4_dinov2", "dinov2_reg", False),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def dino(request):
    family, registers, preset, rule, hub = CASES[request.param]
    torch.manual_seed(0)
    hf = perturb_(hf_model(family, **TINY_DINO, registers=registers), seed=0)
    if hub:
        hf.embeddings.interpolate_pos_encoding = types.MethodType(hub_dinov2_interpolation, hf.embeddings)
    cfg = get_config(preset, embed_dim=48, depth=1, num_heads=2, img_size=518, num_classes=0, reg_tokens=registers,
                     dynamic_img_size=True, pos_embed_interp=rule)
    canonical = TIMM.import_(to_timm(family, hf.state_dict()), cfg)
    tm = vit_torch.load_canonical_(vit_torch.models.build_model(cfg).eval(), canonical)
    jm = vit_jax.load_canonical_(vit_jax.models.build_model(cfg, rngs=nnx.Rngs(0)), canonical)
    jm.eval()
    return request.param, cfg, hf, tm, jm


# The JAX twin runs jitted, as users run it: one compiled program per model and shape (op by op,
# every primitive compiles on its own and a forward costs ~3x the CPU time).
@nnx.jit
def _jax_logits(model, x):
    return model(x)


@nnx.jit
def _jax_features(model, x):
    (patches, cls), = model.get_intermediate_layers(x, 1, reshape=True, return_class_token=True)
    return model(x), patches, cls


def _ours(twin, model, images_nhwc):
    """(pooled, patch features (B, H', W', C) after the final norm, class token) of a twin."""
    if twin == "torch":
        with torch.no_grad():
            x = torch.from_numpy(nhwc_to_nchw(images_nhwc))
            pooled = model(x).numpy()
            (patches, cls), = model.get_intermediate_layers(x, 1, reshape=True, return_class_token=True)
            return pooled, patches.permute(0, 2, 3, 1).numpy(), cls.numpy()
    with full_precision():
        return tuple(np.asarray(a) for a in _jax_features(model, jax.numpy.asarray(images_nhwc)))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("twin", ["torch", "jax"])
def test_dinov2_at_any_size_matches_its_source(dino, twin, size, record):
    name, cfg, hf, tm, jm = dino
    images = np.random.default_rng(1).uniform(-1, 1, (2, *size, 3)).astype(np.float32)
    with torch.no_grad():
        out = hf(pixel_values=torch.from_numpy(nhwc_to_nchw(images)))
    grid = (size[0] // 14, size[1] // 14)
    their_patches = out.last_hidden_state[:, 1 + cfg.reg_tokens:].reshape(2, *grid, -1).numpy()
    pooled, patches, cls = _ours(twin, tm if twin == "torch" else jm, images)
    errors = {"pooled": rel_error(pooled, out.pooler_output.numpy()), "patches": rel_error(patches, their_patches),
              "class token": rel_error(cls, out.pooler_output.numpy())}
    record(f"any size {name} {size[0]}x{size[1]}", f"HF -> {twin}", errors)
    bad = {k: v for k, v in errors.items() if not v <= FLOAT32_TOL}
    assert not bad, f"{name} {size} ({twin}): {bad}"


def test_the_dinov2_rules_differ_where_the_sources_do():
    """The hub's 0.1 offset is not transformers' rule: at 224 px the tables differ visibly."""
    cfg = get_config("vit_small_patch14_dinov2", embed_dim=48, depth=1, num_heads=2, img_size=518, num_classes=0,
                     dynamic_img_size=True)
    tm = vit_torch.models.build_model(cfg).eval()
    tables = {}
    for rule in ("dinov2", "transformers", "timm"):
        tm.cfg = cfg.replace(pos_embed_interp=rule)
        tables[rule] = tm.pos_embed_at((16, 16)).detach().numpy()
    assert rel_error(tables["dinov2"], tables["transformers"]) > 1e-3
    assert rel_error(tables["timm"], tables["transformers"]) > 1e-3


def _timm_table(pos: np.ndarray, prefix: int, grid) -> np.ndarray:
    """timm's resample_abs_pos_embed(new_size=grid) (bicubic, antialias=True) by torch itself."""
    side = int(round(math.sqrt(pos.shape[1] - prefix)))
    table = torch.from_numpy(pos[:, prefix:]).reshape(1, side, side, -1).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False, antialias=True)
    return np.concatenate([pos[:, :prefix], table.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1]).numpy()], 1)


def _twins_against(want, cfg, jax_model, weights, images, record, label):
    """Both twins, `weights` loaded, on `images` (NHWC) against the reference logits `want`:
    one row per twin in the parity table, and each twin within FLOAT32_TOL."""
    tm = vit_torch.load_canonical_(vit_torch.models.build_model(cfg).eval(), weights)
    with torch.no_grad():
        got = {"torch": tm(torch.from_numpy(nhwc_to_nchw(images))).numpy()}
    jm = vit_jax.load_canonical_(jax_model, weights)
    jm.eval()
    with full_precision():
        got["jax"] = np.asarray(_jax_logits(jm, jax.numpy.asarray(images)))
    errors = {twin: rel_error(logits, want) for twin, logits in got.items()}
    for twin, error in errors.items():
        record(label, f"numpy -> {twin}", {"logits": error})
    assert all(e <= FLOAT32_TOL for e in errors.values()), f"{label}: {errors}"


def test_timm_vit_at_160x224_matches_timms_dynamic_img_size(record):
    """Both twins on one set of weights against one reference computation."""
    cfg = get_config("vit_base_patch16_224", embed_dim=32, depth=2, num_heads=2, num_classes=5,
                     dynamic_img_size=True)
    model = vit_jax.models.build_model(cfg, rngs=nnx.Rngs(0))
    weights = perturb(vit_jax.to_canonical(model), 0)
    images = np.random.default_rng(2).uniform(-1, 1, (2, 160, 224, 3)).astype(np.float32)
    table = _timm_table(weights["Transformer/posembed_input/pos_embedding"], cfg.num_prefix_tokens, (10, 14))
    want = reference.forward(weights, cfg, images, posemb=table)[0]
    _twins_against(want, cfg, model, weights, images, record, "any size timm ViT 160x224")


EVA_CASES = {"eva02": ("eva02_tiny_patch14_224", dict(ref_feat_shape=7)), "dinov3": ("vit_base_patch16_dinov3", {})}


@pytest.mark.parametrize("case", sorted(EVA_CASES))
def test_eva_at_a_non_square_size_matches_timms(case, record):
    """EVA-02 (abs table + 'cat' rope with ref_feat_shape) and DINOv3 (rope on coordinates
    normalised per axis, no table) at 96 x 160, both twins: rope built for the 6 x 10 grid;
    EVA-02's table resized by timm's rule."""
    preset, extra = EVA_CASES[case]
    cfg = get_config(preset, embed_dim=64, depth=1, num_heads=2, img_size=112, patch_size=16, num_classes=5,
                     dynamic_img_size=True, **extra)
    model = vit_jax.models.build_model(cfg, rngs=nnx.Rngs(0))
    weights = perturb(vit_jax.to_canonical(model), 0)
    images = np.random.default_rng(3).uniform(-1, 1, (2, 96, 160, 3)).astype(np.float32)
    w = dict(weights)
    if "pos_embed" in w:
        prefix = 0 if cfg.no_embed_class else cfg.num_prefix_tokens
        w["pos_embed"] = _timm_table(weights["pos_embed"], prefix, (6, 10))
    want = reference_eva.forward(w, cfg, images, grid=(6, 10))[0]
    _twins_against(want, cfg, model, weights, images, record, f"any size {case} 96x160")


VIT_FAMILIES = ["deit_small_distilled_patch16_224", "deit3_small_patch16_224", "vit_base_patch16_clip_224",
                "vit_base_patch16_siglip_224", "aimv2_large_patch14_224"]


@pytest.fixture(scope="module", params=VIT_FAMILIES)
def family(request):
    """(cfg, JAX model, perturbed canonical weights) of one family built for 32 px, shared by its sizes."""
    cfg = get_config(request.param, embed_dim=32, depth=1, num_heads=2, img_size=32, patch_size=8, num_classes=5,
                     dynamic_img_size=True)
    model = vit_jax.models.build_model(cfg, rngs=nnx.Rngs(0))
    return request.param, cfg, model, perturb(vit_jax.to_canonical(model), 0)


@pytest.mark.parametrize("size", [(24, 40), (48, 48)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_each_vit_family_at_another_size_matches_the_numpy_reference(family, size, record):
    """DeiT (distilled), DeiT III, CLIP, SigLIP (MAP head) and AIMv2, built for 32 px (a 4 x 4
    table), at a non-square size and at a larger square one: both twins against the float64
    reference fed timm's table (torch's antialiased bicubic)."""
    preset, cfg, model, weights = family
    images = np.random.default_rng(6).uniform(-1, 1, (2, *size, 3)).astype(np.float32)
    prefix = 0 if cfg.no_embed_class else cfg.num_prefix_tokens
    table = _timm_table(weights["Transformer/posembed_input/pos_embedding"], prefix, (size[0] // 8, size[1] // 8))
    want = reference.forward(weights, cfg, images, posemb=table)[0]
    _twins_against(want, cfg, model, weights, images, record, f"any size {preset} {size[0]}x{size[1]}")


def test_jax_traces_each_shape_once():
    cfg = get_config("vit_base_patch16_224", embed_dim=32, depth=1, num_heads=2, img_size=32, num_classes=3,
                     dynamic_img_size=True)
    model = vit_jax.models.build_model(cfg, rngs=nnx.Rngs(0))
    model.eval()
    traces = []

    @nnx.jit
    def forward(m, x):
        traces.append(x.shape)
        return m(x)

    for shape in [(1, 32, 48, 3), (1, 32, 48, 3), (1, 48, 32, 3), (1, 32, 48, 3)]:
        forward(model, jax.numpy.ones(shape))
    assert traces == [(1, 32, 48, 3), (1, 48, 32, 3)]


def test_the_reader_records_the_source_rule():
    from vit_common.config.dynamic import source_rule
    from vit_common.formats.detect import layouts

    rule = {name: (lambda reg, layout=layout: source_rule(layout.pos_embed_interp, reg))
            for name, layout in layouts().items()}
    assert [rule["dinov2"](r) for r in (0, 4)] == ["dinov2", "dinov2_reg"]
    assert [rule["hf_dinov2"](r) for r in (0, 4)] == ["transformers", "transformers_reg"]
    assert rule["hf"](0) == rule["hf_clip"](0) == rule["hf_siglip"](0) == "transformers"
    assert rule["timm"](4) == rule["canonical"](0) == "timm"


SWIN_TINY = dict(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4),
                 num_classes=10)


@pytest.fixture(scope="module")
def swin_pair():
    from parity_tests.harness import build_pair

    return build_pair("swin_tiny_patch4_window7_224", "torch", **SWIN_TINY, dynamic_img_size=True)


def test_swin_at_another_whole_window_size_is_the_model_built_for_it(swin_pair):
    """At 48 x 48 (grids 24 and 12: whole windows, nothing padded) the dynamic model computes
    what a model built for 48 px computes with its own masks."""
    tm, _, weights = swin_pair
    built = vit_torch.load_canonical_(vit_torch.create_model("swin_tiny_patch4_window7_224",
                                                             **{**SWIN_TINY, "img_size": 48}), weights)
    x = torch.from_numpy(np.random.default_rng(4).uniform(-1, 1, (2, 3, 48, 48)).astype(np.float32))
    with torch.no_grad():
        assert rel_error(tm(x).numpy(), built(x).numpy()) <= FLOAT32_TOL


@pytest.mark.parametrize("size", [(36, 54)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_swin_twins_agree_when_padded_to_whole_windows(swin_pair, size, record):
    """Grid 18 x 27 (9 x 14 after merging): every block pads its shifted grid to whole windows,
    patch merging pads the odd side (timm's rules); both twins compute the same."""
    tm, jm, _ = swin_pair
    images = np.random.default_rng(5).uniform(-1, 1, (2, *size, 3)).astype(np.float32)
    with torch.no_grad():
        want = tm(torch.from_numpy(nhwc_to_nchw(images))).numpy()
    with full_precision():
        got = np.asarray(_jax_logits(jm, jax.numpy.asarray(images)))
    error = rel_error(got, want)
    record(f"any size Swin {size[0]}x{size[1]}", "torch -> jax", {"logits": error})
    assert error <= FLOAT32_TOL


def test_dense_features_are_the_hidden_states_on_the_grid_in_both_twins():
    """forward_intermediates(indices=...) against the hidden states the old call returns: the
    chosen blocks' patch tokens reshaped to the 3 x 5 grid (NCHW in torch, NHWC in JAX), prefix
    tokens apart, normed with the final norm only when asked; stop_early ends at the last block taken."""
    from parity_tests.harness import build_pair

    tm, jm, _ = build_pair("vit_small_patch14_reg4_dinov2", "torch", embed_dim=32, depth=3, num_heads=2, img_size=28,
                           num_classes=0, dynamic_img_size=True)
    images = np.random.default_rng(7).uniform(-1, 1, (2, 42, 70, 3)).astype(np.float32)
    x = torch.from_numpy(nhwc_to_nchw(images))
    with torch.no_grad():
        hidden = tm.forward_intermediates(x, attention=False).hidden_states
        final, maps = tm.forward_intermediates(x, indices=[0, -1], return_prefix_tokens=True)
        (normed,) = tm.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        early, _ = tm.forward_intermediates(x, indices=[1], stop_early=True)
    with full_precision():
        jmaps = nnx.jit(lambda m, x: m.forward_intermediates(x, indices=[0, -1], intermediates_only=True))(
            jm, jax.numpy.asarray(images))
    for (patches, prefix), block in zip(maps, (0, 2)):
        assert patches.shape == (2, 32, 3, 5) and prefix.shape == (2, 5, 32)
        np.testing.assert_array_equal(patches.permute(0, 2, 3, 1).reshape(2, 15, 32).numpy(),
                                      hidden[block][:, 5:].numpy())
        np.testing.assert_array_equal(prefix.numpy(), hidden[block][:, :5].numpy())
    np.testing.assert_array_equal(normed.permute(0, 2, 3, 1).reshape(2, 15, 32).numpy(), final[:, 5:].numpy())
    np.testing.assert_array_equal(early.numpy(), tm.norm(hidden[1]).detach().numpy())
    for (patches, _), ours in zip(maps, jmaps):
        assert rel_error(np.asarray(ours), patches.permute(0, 2, 3, 1).numpy()) <= FLOAT32_TOL
