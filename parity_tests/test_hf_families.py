"""DINOv2 (with registers, with SwiGLU), CLIP (QuickGELU and GELU), SigLIP (MAP and GAP) and AIMv2:
Hugging Face transformers' models with random weights, their state dicts brought to timm's names
(parity_tests/hf_families.py), loaded strictly into both twins, every output HF gives compared
within the float32 contract (NaN fails: rel_error is inf there)."""
import numpy as np
import pytest
import torch

import vit_jax
import vit_torch
from flax import nnx
from parity_tests.hf_families import hf_model, perturb_, to_timm
from parity_tests.harness import FLOAT32_TOL, nhwc_to_nchw, random_images, rel_error, run_jax, run_torch
from vit_common import TIMM, get_config

TINY = dict(hidden=48, layers=2, heads=3, patch=8, img=32)
OURS = dict(embed_dim=48, depth=2, num_heads=3, patch_size=8, img_size=32, num_classes=0)

# case -> (HF family, HF options, our preset, our overrides, how HF pools)
CASES = {
    "dinov2": ("dinov2", dict(mlp=192), "vit_small_patch14_dinov2", {}, "pooler"),
    "dinov2-swiglu": ("dinov2", dict(mlp=192, swiglu=True), "vit_giant_patch14_dinov2",
                      dict(mlp_ratio=5.34), "pooler"),  # HF: two thirds of 192 -> 128; packed fc1 256 = int(48 * 5.34)
    "dinov2-reg": ("dinov2_reg", dict(mlp=192, registers=2), "vit_small_patch14_reg4_dinov2", dict(reg_tokens=2),
                   "pooler"),
    "clip-quickgelu": ("clip", dict(mlp=192, act="quick_gelu"), "vit_base_patch16_clip_quickgelu_224", {}, "pooler"),
    "clip-gelu": ("clip", dict(mlp=192, act="gelu"), "vit_base_patch16_clip_224", {}, "pooler"),
    "siglip-map": ("siglip", dict(mlp=192), "vit_base_patch32_siglip_256", {}, "pooler"),  # HF: gelu_pytorch_tanh
    "siglip-map-erf": ("siglip", dict(mlp=192, act="gelu"), "vit_base_patch16_siglip_224", {}, "pooler"),
    "siglip-gap": ("siglip", dict(mlp=192, map_head=False, act="gelu"), "vit_base_patch16_siglip_gap_224", {}, "mean"),
    "aimv2": ("aimv2", dict(mlp=132), "aimv2_large_patch14_224", dict(mlp_ratio=2.75), "mean"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    name = request.param
    family, options, preset, overrides, pooling = CASES[name]
    torch.manual_seed(0)
    model = perturb_(hf_model(family, **TINY, **options), seed=0)
    cfg = get_config(preset, **{**OURS, **overrides})
    images = random_images(cfg, 2)
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(nhwc_to_nchw(images)), output_hidden_states=True,
                    output_attentions=True)
    pooled = out.pooler_output if pooling == "pooler" else out.last_hidden_state.mean(1)
    return name, cfg, to_timm(family, model.state_dict()), images, out, pooled.numpy()


def _run(twin: str, cfg, timm_state, images):
    canonical = TIMM.import_(timm_state, cfg)  # strict: every timm name present, none left over
    if twin == "torch":
        model = vit_torch.load_canonical_(vit_torch.models.build_model(cfg).eval(), canonical)
        return run_torch(model, images)
    model = vit_jax.load_canonical_(vit_jax.models.build_model(cfg, rngs=nnx.Rngs(0)), canonical)
    return run_jax(model, images)


def _worst(ours, theirs) -> float:
    return float(np.max([rel_error(a, b) for a, b in zip(ours, theirs, strict=True)]))


@pytest.mark.parametrize("twin", ["torch", "jax"])
def test_twins_match_transformers(case, twin, record):
    name, cfg, timm_state, images, theirs, pooled = case
    ours = _run(twin, cfg, timm_state, images)
    errors = {
        "pooled": rel_error(ours.pooled, pooled),
        "hidden": _worst(ours.hidden_states, theirs.hidden_states[1:]),  # [0]: the embeddings
        "attention": _worst(ours.attentions, theirs.attentions),
    }
    record(f"HF {name}", f"HF -> {twin}", errors)
    bad = {k: v for k, v in errors.items() if not v <= FLOAT32_TOL}
    assert not bad, f"{name} ({twin}): {bad}"


def test_the_timm_names_are_exactly_the_twins():
    """The mapped HF state dict has timm's names, which are the torch twin's state-dict keys."""
    for name, (family, options, preset, overrides, _) in CASES.items():
        cfg = get_config(preset, **{**OURS, **overrides})
        state = to_timm(family, hf_model(family, **TINY, **options).state_dict())
        assert set(state) == set(vit_torch.models.build_model(cfg).state_dict()), name
