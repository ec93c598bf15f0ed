"""Every DeiT III, DINOv2, CLIP, SigLIP and AIMv2 preset counts timm's parameters.

The counts come from Hugging Face transformers' models of the same sizes, built on the meta device
(nothing allocated), with the released widths typed here from the model cards rather than read
from the presets, and the image / patch size read from the name. Differences of structure between
HF's modules and timm's are adjusted explicitly:
- DINOv2: HF keeps the masked-image-modelling `mask_token` (C), which timm's converter drops;
- DINOv2 with registers: timm folds the class token's position entry into the token (C fewer);
- DeiT III has no HF model: HF's Dinov2Model is the same block (LayerScale, exact GELU, eps 1e-6)
  less the mask token, less the class token's position entry (DeiT III embeds patches only),
  plus timm's 1000-class head;
- CLIP: timm's head is the projection with a bias, or a 1000-class head (ImageNet fine-tunes);
  HF's CLIPVisionModel has neither.
"""
import re

import numpy as np
import pytest
import torch

from parity_tests.hf_families import hf_model
from vit_common.config.presets import PRESETS, get_config
from vit_common.errors import ConfigError
from vit_common.weights.canonical import count_params

# (hidden, layers, heads, MLP width) of the released sizes.
DEIT3 = {"small": (384, 12, 6, 1536), "medium": (512, 12, 8, 2048), "base": (768, 12, 12, 3072),
         "large": (1024, 24, 16, 4096), "huge": (1280, 32, 16, 5120)}
DINOV2 = {"small": (384, 12, 6, 1536), "base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096),
          "giant": (1536, 40, 24, 6144)}  # giant: SwiGLU, two thirds of 6144 = 4096 per half
CLIP = {"base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096), "huge": (1280, 32, 16, 5120)}
SIGLIP = {"base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096), "so400m": (1152, 27, 16, 4304)}
AIMV2 = {"large": (1024, 24, 8, 2816), "huge": (1536, 24, 12, 4096), "1b": (2048, 24, 16, 5632),
         "3b": (3072, 24, 24, 8192)}
FAMILY_NAMES = re.compile(r"^(deit3_|aimv2_|vit_.*_(dinov2$|clip_|siglip_))")


def _sizes(table, size):
    hidden, layers, heads, mlp = table[size]
    return dict(hidden=hidden, layers=layers, heads=heads, mlp=mlp)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def timm_count(name: str) -> int:
    """The parameter count of timm.create_model(name), from HF's model of the same architecture."""
    patch = int(re.search(r"_patch(\d+)", name)[1])
    img = int(m[1]) if (m := re.search(r"_(\d+)$", name)) else 518  # DINOv2 names carry no size: 518 px
    size = re.match(r"^(?:deit3|vit|aimv2)_([a-z0-9]+)_", name)[1]
    geometry = dict(patch=patch, img=img)
    with torch.device("meta"):
        if name.startswith("deit3_"):
            s = _sizes(DEIT3, size)
            c = s["hidden"]
            return _count(hf_model("dinov2", **s, **geometry)) - c - c + c * 1000 + 1000
        if "_dinov2" in name:
            s = _sizes(DINOV2, size)
            registers = 4 if "_reg4_" in name else 0
            family = "dinov2_reg" if registers else "dinov2"
            model = hf_model(family, **s, **geometry, registers=registers, swiglu=size == "giant")
            return _count(model) - s["hidden"] * (2 if registers else 1)
        if "_clip_" in name:
            s = _sizes(CLIP, size)
            classes = get_config(name).num_classes  # the default pretrained tag's head: checked in the next test
            return _count(hf_model("clip", **s, **geometry)) + s["hidden"] * classes + classes
        if "_siglip_" in name:
            return _count(hf_model("siglip", **_sizes(SIGLIP, size), **geometry, map_head="_gap_" not in name))
        if name.startswith("aimv2_"):
            return _count(hf_model("aimv2", **_sizes(AIMV2, size), **geometry))
    raise ValueError(name)


FAMILY_PRESETS = sorted(n for n in PRESETS if FAMILY_NAMES.match(n))

# num_classes of timm's default pretrained tag for the CLIP names (the first tag timm lists):
# ImageNet fine-tunes (1000) or image towers, whose head is the CLIP projection.
CLIP_HEADS = {
    "vit_base_patch32_clip_224": 1000, "vit_base_patch32_clip_256": 512, "vit_base_patch32_clip_384": 1000,
    "vit_base_patch32_clip_448": 1000, "vit_base_patch16_clip_224": 1000, "vit_base_patch16_clip_384": 1000,
    "vit_large_patch14_clip_224": 1000, "vit_large_patch14_clip_336": 1000, "vit_huge_patch14_clip_224": 1000,
    "vit_huge_patch14_clip_336": 1000, "vit_huge_patch14_clip_378": 1024,
    "vit_base_patch32_clip_quickgelu_224": 512, "vit_base_patch16_clip_quickgelu_224": 512,
    "vit_large_patch14_clip_quickgelu_224": 768, "vit_large_patch14_clip_quickgelu_336": 768,
    "vit_huge_patch14_clip_quickgelu_224": 1024, "vit_huge_patch14_clip_quickgelu_378": 1024,
}


def test_the_family_presets_are_timms_released_names():
    assert len(FAMILY_PRESETS) == 73
    for prefix, n in (("deit3_", 8), ("aimv2_", 12)):
        assert len([p for p in FAMILY_PRESETS if p.startswith(prefix)]) == n
    assert len([p for p in FAMILY_PRESETS if p.endswith("_dinov2")]) == 8
    assert sorted(p for p in FAMILY_PRESETS if "_clip_" in p) == sorted(CLIP_HEADS)


@pytest.mark.parametrize("name", FAMILY_PRESETS)
def test_parameter_count_equals_timms(name):
    cfg = get_config(name)
    assert count_params(cfg) == timm_count(name)
    expected_head = CLIP_HEADS.get(name, 1000 if name.startswith("deit3_") else 0)
    assert cfg.num_classes == expected_head


def test_options_that_counts_cannot_see():
    assert get_config("vit_base_patch16_clip_quickgelu_224").act_layer == "quick_gelu"
    clip = get_config("vit_large_patch14_clip_224")
    assert (clip.act_layer, clip.norm_eps, clip.pre_norm) == ("gelu", 1e-5, True)
    assert get_config("vit_small_patch14_dinov2").norm_eps == 1e-6
    assert get_config("vit_base_patch16_siglip_224").act_layer == "gelu"  # timm: exact GELU here
    assert get_config("vit_so400m_patch16_siglip_gap_384").act_layer == "gelu_tanh"  # SigLIP 2 in timm
    aim = get_config("aimv2_huge_patch14_448")
    assert (aim.act_layer, aim.norm_layer, aim.norm_eps, aim.embed_norm_layer) == ("silu", "rmsnorm", 1e-5, "rmsnorm")
    reg = get_config("vit_giant_patch14_reg4_dinov2")
    assert (reg.reg_tokens, reg.no_embed_class, reg.mlp_layer, reg.act_layer) == (4, True, "swiglu_packed", "silu")
    assert get_config("deit3_huge_patch14_224").init_values == 1e-6


@pytest.mark.parametrize("name", ["vit_so400m_patch14_siglip_384", "vit_so400m_patch14_siglip_gap_384.webli"])
def test_timms_patch14_at_384_names_point_to_378(name):
    """timm's so400m/14 at 384 px drops 6 px in its convolution; the same 27x27 grid runs at 378."""
    with pytest.raises(ConfigError, match=r"384 px, which 14 px patches do not divide.*vit_so400m_patch14_siglip_"
                                          r"(gap_)?378 on 378 px images"):
        get_config(name)
    assert get_config(name.replace("384", "378").partition(".")[0]).grid_size == 384 // 14


@pytest.mark.parametrize("name,prefix", [("vit_small_patch14_dinov2", 1), ("vit_small_patch14_reg4_dinov2", 0)])
def test_a_518px_dinov2_state_dict_loads_at_224px(tmp_path, name, prefix):
    """timm's DINOv2 files hold a 37x37 grid (518 px, patch 14); asked for 224 px the reader resamples it
    to 16x16, keeping the class token's entry where the table has one (no registers: no_embed_class)."""
    from safetensors.numpy import save_file

    from vit_common import TIMM, read_checkpoint
    from vit_common.weights.resample import resample_posemb
    from tests.checkpoint_factories import random_canonical

    cfg = get_config(name, depth=1)
    weights = random_canonical(cfg)
    save_file(TIMM.export(weights, cfg), path := tmp_path / "model.safetensors")
    ckpt = read_checkpoint(path, name, depth=1, img_size=224)
    table = "Transformer/posembed_input/pos_embedding"
    assert ckpt.config.grid_size == 16 and ckpt.weights[table].shape == (1, prefix + 256, 384)
    np.testing.assert_array_equal(ckpt.weights[table], resample_posemb(weights[table], 16, prefix, method="zoom"))
