"""Named model presets (timm's names) read by both twins: the architecture tables of each family,
made into one PresetCard per name (cards.py: with its tag, preprocessing and parameter count)."""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from typing import Any

from ..errors import ConfigError
from .cards import ADDED, PARAMS, PREPROCESS_CHANGES, TAGS, PresetCard, preprocess_family
from .eva import EVA_PRESETS, EvaConfig
from .families import ModelConfig
from .swin import SwinConfig
from .vit import ViTConfig

# Width, MLP width, heads, depth of the official ViT sizes.
_SIZES = {
    "tiny": dict(embed_dim=192, mlp_ratio=4.0, num_heads=3, depth=12),
    "small": dict(embed_dim=384, mlp_ratio=4.0, num_heads=6, depth=12),
    "base": dict(embed_dim=768, mlp_ratio=4.0, num_heads=12, depth=12),
    "large": dict(embed_dim=1024, mlp_ratio=4.0, num_heads=16, depth=24),
    "huge": dict(embed_dim=1280, mlp_ratio=4.0, num_heads=16, depth=32),
}

# (size, patch, image sizes) for which checkpoints were released (vision_transformer / augreg).
_VIT_VARIANTS = [
    ("tiny", 16, (224, 384)),
    ("small", 8, (224,)),
    ("small", 16, (224, 384)),
    ("small", 32, (224, 384)),
    ("base", 8, (224,)),
    ("base", 16, (224, 384)),
    ("base", 32, (224, 384)),
    ("large", 16, (224, 384)),
    ("large", 32, (224, 384)),
    ("huge", 14, (224,)),
]


# Names whose default timm pretrained config has num_classes=0: vit_small_patch8_224.dino,
# vit_large_patch32_224.orig_in21k, vit_huge_patch14_224.orig_in21k, vit_base_patch16_siglip_224.webli.
# (SigLIP, DINOv2 and AIMv2 names below set their own.)
_HEADLESS = ("vit_small_patch8_224", "vit_large_patch32_224", "vit_huge_patch14_224")


# Swin Transformer sizes (timm / Microsoft): width of stage 0, blocks and heads per stage.
_SWIN_SIZES = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "large": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}
# (size, window, image size) for which Microsoft released ImageNet checkpoints.
_SWIN_VARIANTS = [
    ("tiny", 7, 224), ("small", 7, 224), ("base", 7, 224), ("base", 12, 384), ("large", 7, 224), ("large", 12, 384),
]


# DeiT III (timm deit.py): LayerScale 1e-6, position embedding on the patches only; ImageNet-1k heads.
_DEIT3_SIZES = {"small": _SIZES["small"], "medium": dict(embed_dim=512, mlp_ratio=4.0, num_heads=8, depth=12),
                "base": _SIZES["base"], "large": _SIZES["large"], "huge": _SIZES["huge"]}
_DEIT3_VARIANTS = [("small", 16, (224, 384)), ("medium", 16, (224,)), ("base", 16, (224, 384)),
                   ("large", 16, (224, 384)), ("huge", 14, (224,))]

# DINOv2 (timm vision_transformer.py): LayerScale 1e-5, patch 14, 518 px features (LVD-142M, no head).
# Giant: SwiGLUPacked, fc1 8192 wide = int(1536 * 2.66667 * 2), SiLU.
_DINOV2_SIZES = {
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
    "giant": dict(embed_dim=1536, depth=40, num_heads=24, mlp_ratio=2.66667 * 2, mlp_layer="swiglu_packed",
                  act_layer="silu"),
}

# CLIP image towers (timm): norm_pre, no patch-embedding bias, LayerNorm eps 1e-5. num_classes is that
# of the name's default pretrained tag: 1000 for the ImageNet fine-tunes, the CLIP embedding width
# (the projection, timm's head) for image towers.
_CLIP = dict(pre_norm=True, norm_eps=1e-5)
_CLIP_VARIANTS = [  # (size, patch, img, num_classes, quickgelu)
    ("base", 32, 224, 1000, False), ("base", 32, 256, 512, False), ("base", 32, 384, 1000, False),
    ("base", 32, 448, 1000, False), ("base", 16, 224, 1000, False), ("base", 16, 384, 1000, False),
    ("large", 14, 224, 1000, False), ("large", 14, 336, 1000, False),
    ("huge", 14, 224, 1000, False), ("huge", 14, 336, 1000, False), ("huge", 14, 378, 1024, False),
    ("base", 32, 224, 512, True), ("base", 16, 224, 512, True), ("large", 14, 224, 768, True),
    ("large", 14, 336, 768, True), ("huge", 14, 224, 1024, True), ("huge", 14, 378, 1024, True),
]

# SigLIP image towers (timm): no class token, MAP head (or GAP without fc_norm), feature models.
_SO400M = dict(embed_dim=1152, depth=27, num_heads=16, mlp_ratio=3.7362)
_SIGLIP_VARIANTS = [  # (size, patch, image sizes of the MAP models, of the GAP models)
    ("base", 32, (256,), (256,)), ("base", 16, (224, 256, 384, 512), (224, 256, 384, 512)),
    ("large", 16, (256, 384, 512), (256, 384, 512)), ("so400m", 14, (224, 378), (224, 378, 448, 896)),
    ("so400m", 16, (256, 384, 512), (256, 384, 512)),
]
# timm builds these (SigLIP 2 only) with the tanh GELU, act_layer='gelu_tanh'; the other SigLIP names with
# exact GELU, although big_vision computes tanh for all (see docs/parity.md).
_SIGLIP_TANH = tuple(f"vit_{arch}_siglip_{gap}{img}" for arch, imgs in (
    ("base_patch32", (256,)), ("large_patch16", (512,)), ("so400m_patch16", (256, 384, 512)))
    for img in imgs for gap in ("", "gap_"))

# AIMv2 (timm): RMSNorm eps 1e-5 everywhere (and on the patch embedding), SwiGLU, no biases but the
# patch embedding's, average pooling, feature models.
_AIMV2_SIZES = {
    "large": dict(embed_dim=1024, depth=24, num_heads=8, mlp_ratio=2.75),
    "huge": dict(embed_dim=1536, depth=24, num_heads=12, mlp_ratio=2.6667),
    "1b": dict(embed_dim=2048, depth=24, num_heads=16, mlp_ratio=2.75),
    "3b": dict(embed_dim=3072, depth=24, num_heads=24, mlp_ratio=2.6667),
}
_AIMV2 = dict(patch_size=14, class_token=False, fc_norm=False, global_pool="avg", qkv_bias=False, proj_bias=False,
              act_layer="silu", norm_layer="rmsnorm", norm_eps=1e-5, embed_norm_layer="rmsnorm", mlp_layer="swiglu",
              num_classes=0)


# timm also builds the SigLIP so400m/14 towers at 384 px (SigLIP 1's webli weights), where the 14 px
# patches leave 6 px that its convolution drops; these twins need img_size divisible by patch_size.
# Both sizes have the same 27x27 patch grid, so those weights run under the 378 px names.
_PATCH14_AT_384 = {f"vit_so400m_patch14_siglip_{gap}384": f"vit_so400m_patch14_siglip_{gap}378" for gap in ("", "gap_")}


def _later_families() -> dict[str, dict[str, Any]]:
    """DeiT III, DINOv2, CLIP, SigLIP and AIMv2: timm's VisionTransformer with the newer options."""
    presets: dict[str, dict[str, Any]] = {}
    for size, patch, imgs in _DEIT3_VARIANTS:
        for img in imgs:
            presets[f"deit3_{size}_patch{patch}_{img}"] = dict(
                _DEIT3_SIZES[size], patch_size=patch, img_size=img, no_embed_class=True, init_values=1e-6)
    for size, arch in _DINOV2_SIZES.items():
        base = dict(patch_size=14, img_size=518, init_values=1e-5, num_classes=0, **arch)
        presets[f"vit_{size}_patch14_dinov2"] = base
        presets[f"vit_{size}_patch14_reg4_dinov2"] = dict(base, reg_tokens=4, no_embed_class=True)
    for size, patch, img, classes, quick in _CLIP_VARIANTS:
        name = f"vit_{size}_patch{patch}_clip_{'quickgelu_' if quick else ''}{img}"
        presets[name] = dict(_SIZES[size], **_CLIP, patch_size=patch, img_size=img, num_classes=classes,
                             **({"act_layer": "quick_gelu"} if quick else {}))
    for size, patch, map_imgs, gap_imgs in _SIGLIP_VARIANTS:
        arch = _SO400M if size == "so400m" else _SIZES[size]
        for pool, imgs in (("map", map_imgs), ("avg", gap_imgs)):
            for img in imgs:
                name = f"vit_{size}_patch{patch}_siglip_{'gap_' if pool == 'avg' else ''}{img}"
                presets[name] = dict(arch, patch_size=patch, img_size=img, class_token=False, global_pool=pool,
                                     num_classes=0, **({"fc_norm": False} if pool == "avg" else {}),
                                     **({"act_layer": "gelu_tanh"} if name in _SIGLIP_TANH else {}))
    for size, arch in _AIMV2_SIZES.items():
        for img in (224, 336, 448):
            presets[f"aimv2_{size}_patch14_{img}"] = dict(arch, **_AIMV2, img_size=img)
    return presets


def _build_presets() -> dict[str, dict[str, Any]]:
    presets: dict[str, dict[str, Any]] = {}
    for size, patch, img_sizes in _VIT_VARIANTS:
        for img in img_sizes:
            presets[f"vit_{size}_patch{patch}_{img}"] = dict(_SIZES[size], patch_size=patch, img_size=img)
    # timm's create_model(name) takes num_classes from the name's default pretrained config (the
    # first tag with weights). For these names the only weights are features without a classifier
    # (ImageNet-21k, DINO, WebLI), whose configs say num_classes=0, so timm's model has no head.
    for name in _HEADLESS:
        if name in presets:
            presets[name]["num_classes"] = 0
    for size in ("tiny", "small", "base"):
        presets[f"deit_{size}_patch16_224"] = dict(_SIZES[size], patch_size=16)
        presets[f"deit_{size}_distilled_patch16_224"] = dict(_SIZES[size], patch_size=16, distilled=True)
    presets["deit_base_patch16_384"] = dict(_SIZES["base"], patch_size=16, img_size=384)
    presets["deit_base_distilled_patch16_384"] = dict(
        _SIZES["base"], patch_size=16, img_size=384, distilled=True
    )
    presets.update(_later_families())
    for size, window, img in _SWIN_VARIANTS:
        presets[f"swin_{size}_patch4_window{window}_{img}"] = dict(
            _SWIN_SIZES[size], patch_size=4, window_size=window, img_size=img)
    presets.update(EVA_PRESETS)  # EVA-02 and DINOv3 (timm's Eva class): vit_common/config/eva.py
    return presets


def _card(name: str, fields: dict[str, Any]) -> PresetCard:
    """A family table's preset as a card: its tag row (TAGS must have one), preprocessing and count."""
    cls = EvaConfig if name in EVA_PRESETS else SwinConfig if name.startswith("swin_") else ViTConfig
    return PresetCard(name, cls, fields, TAGS[name], preprocess_family(name), PREPROCESS_CHANGES.get(name, {}),
                      PARAMS.get(name))


# The registry: every preset's card, by name.
CARDS: dict[str, PresetCard] = {**{name: _card(name, f) for name, f in _build_presets().items()},
                                **{card.name: card for card in ADDED}}
PRESETS: dict[str, dict[str, Any]] = {name: dict(card.fields) for name, card in CARDS.items()}  # architectures


def config_class(name: str) -> type:
    """The config family of a preset (its card's): SwinConfig, EvaConfig or ViTConfig."""
    if name not in CARDS:
        get_config(name)  # raises, naming the closest presets
    return CARDS[name].config_class


def list_models(pattern: str = "*") -> list[str]:
    """Preset names matching a shell-style pattern, sorted."""
    return sorted(name for name in CARDS if fnmatch.fnmatch(name, pattern))


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The preset `name` with timm-style keyword overrides, validated (nothing is allocated).

    A ViTConfig for ViT / DeiT names, a SwinConfig for swin_* names, an EvaConfig for eva02_* and *_dinov3*."""
    if name not in CARDS:
        if name.partition(".")[0] in CARDS:
            raise ConfigError(f"{name!r} names pretrained weights (timm's NAME.TAG): load them with pretrained=True "
                              f"(or timm:{name} where a checkpoint goes), or build {name.partition('.')[0]!r}")
        if name.partition(".")[0] in _PATCH14_AT_384:
            raise ConfigError(f"{name}: timm builds it at 384 px, which 14 px patches do not divide (its convolution "
                              f"drops the last 6 px); these twins need img_size divisible by patch_size. Its weights "
                              f"(a 27x27 patch grid) run as {_PATCH14_AT_384[name.partition('.')[0]]} on 378 px images")
        close = difflib.get_close_matches(name, CARDS, n=4)  # 4: the family names crowd near-misses
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model name {name!r}{hint} (see vit_common.list_models())")
    card = CARDS[name]
    fields = {f.name for f in dataclasses.fields(card.config_class)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown keyword override(s) {unknown} for {name}; known: {sorted(fields)}")
    return card.config_class(**{**card.fields, **overrides})
