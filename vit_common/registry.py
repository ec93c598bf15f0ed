"""Named presets (timm's names) read by both twins."""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any

from .config import ConfigError, ViTConfig

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


def _build_presets() -> dict[str, dict[str, Any]]:
    presets: dict[str, dict[str, Any]] = {}
    for size, patch, img_sizes in _VIT_VARIANTS:
        for img in img_sizes:
            presets[f"vit_{size}_patch{patch}_{img}"] = dict(_SIZES[size], patch_size=patch, img_size=img)
    # timm's only weights for ViT-H/14 are ImageNet-21k features, so its preset has no head.
    presets["vit_huge_patch14_224"]["num_classes"] = 0
    # big_vision's class-token-free models: global average pooling or a MAP head.
    presets["vit_base_patch16_gap_224"] = dict(
        _SIZES["base"], patch_size=16, class_token=False, global_pool="avg", fc_norm=False
    )
    presets["vit_base_patch16_map_224"] = dict(
        _SIZES["base"], patch_size=16, class_token=False, global_pool="map"
    )
    for size in ("tiny", "small", "base"):
        presets[f"deit_{size}_patch16_224"] = dict(_SIZES[size], patch_size=16)
        presets[f"deit_{size}_distilled_patch16_224"] = dict(_SIZES[size], patch_size=16, distilled=True)
    presets["deit_base_patch16_384"] = dict(_SIZES["base"], patch_size=16, img_size=384)
    presets["deit_base_distilled_patch16_384"] = dict(
        _SIZES["base"], patch_size=16, img_size=384, distilled=True
    )
    return presets


PRESETS: dict[str, dict[str, Any]] = _build_presets()


def list_models(pattern: str = "*") -> list[str]:
    """Preset names matching a shell-style pattern, sorted."""
    return sorted(name for name in PRESETS if fnmatch.fnmatch(name, pattern))


def get_config(name: str, **overrides: Any) -> ViTConfig:
    """The preset `name` with timm-style keyword overrides, validated (nothing is allocated)."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model name {name!r}{hint} (see vit_common.list_models())")
    fields = set(ViTConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown keyword override(s) {unknown} for {name}; known: {sorted(fields)}")
    return ViTConfig(**{**PRESETS[name], **overrides})
