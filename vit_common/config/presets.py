"""Named model presets (timm's names) read by both twins: the one place a new preset goes."""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from typing import Any

from ..errors import ConfigError
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
_HEADLESS = ("vit_small_patch8_224", "vit_large_patch32_224", "vit_huge_patch14_224", "vit_base_patch16_siglip_224")


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


def _build_presets() -> dict[str, dict[str, Any]]:
    presets: dict[str, dict[str, Any]] = {}
    for size, patch, img_sizes in _VIT_VARIANTS:
        for img in img_sizes:
            presets[f"vit_{size}_patch{patch}_{img}"] = dict(_SIZES[size], patch_size=patch, img_size=img)
    # Class-token-free models: global average pooling (timm's B/16 GAP has 16 heads) or a MAP head
    # (SigLIP's image tower, timm's vit_base_patch16_siglip_224: the same architecture).
    presets["vit_base_patch16_gap_224"] = dict(
        _SIZES["base"], patch_size=16, num_heads=16, class_token=False, global_pool="avg", fc_norm=False
    )
    presets["vit_base_patch16_siglip_224"] = dict(
        _SIZES["base"], patch_size=16, class_token=False, global_pool="map"
    )
    # timm's create_model(name) takes num_classes from the name's default pretrained config (the
    # first tag with weights). For these names the only weights are features without a classifier
    # (ImageNet-21k, DINO, WebLI), whose configs say num_classes=0, so timm's model has no head.
    for name in _HEADLESS:
        presets[name]["num_classes"] = 0
    for size in ("tiny", "small", "base"):
        presets[f"deit_{size}_patch16_224"] = dict(_SIZES[size], patch_size=16)
        presets[f"deit_{size}_distilled_patch16_224"] = dict(_SIZES[size], patch_size=16, distilled=True)
    presets["deit_base_patch16_384"] = dict(_SIZES["base"], patch_size=16, img_size=384)
    presets["deit_base_distilled_patch16_384"] = dict(
        _SIZES["base"], patch_size=16, img_size=384, distilled=True
    )
    for size, window, img in _SWIN_VARIANTS:
        presets[f"swin_{size}_patch4_window{window}_{img}"] = dict(
            _SWIN_SIZES[size], patch_size=4, window_size=window, img_size=img)
    presets.update(EVA_PRESETS)  # EVA-02 and DINOv3 (timm's Eva class): vit_common/config/eva.py
    return presets


PRESETS: dict[str, dict[str, Any]] = _build_presets()


def config_class(name: str) -> type:
    """The config family of a preset: SwinConfig for swin_*, EvaConfig for EVA-02 / DINOv3, ViTConfig for the rest."""
    if name in EVA_PRESETS:
        return EvaConfig
    return SwinConfig if name.startswith("swin_") else ViTConfig


def list_models(pattern: str = "*") -> list[str]:
    """Preset names matching a shell-style pattern, sorted."""
    return sorted(name for name in PRESETS if fnmatch.fnmatch(name, pattern))


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The preset `name` with timm-style keyword overrides, validated (nothing is allocated).

    A ViTConfig for ViT / DeiT names, a SwinConfig for swin_* names, an EvaConfig for eva02_* and *_dinov3*."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model name {name!r}{hint} (see vit_common.list_models())")
    cls = config_class(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown keyword override(s) {unknown} for {name}; known: {sorted(fields)}")
    return cls(**{**PRESETS[name], **overrides})
