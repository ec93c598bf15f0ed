"""One card per preset, as timm keeps one pretrained config per name: its architecture (the
config class and fields, from presets.py's family tables), timm's default pretrained tag, the
preprocessing its default tag's weights expect, and its parameter count where recorded.

The hub (formats/hub.py) takes the tag from here, vit-predict's defaults (predict/defaults.py)
the preprocessing, list_models() the names, and the count tests the counts. A new preset is one
PresetCard in ADDED below (or, for a whole family, rows in presets.py's tables and in the tables
here). See docs/architecture.md.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .vit import ViTConfig


@dataclasses.dataclass(frozen=True)
class PresetCard:
    name: str  # timm's name
    config_class: type  # ViTConfig, SwinConfig or EvaConfig
    fields: Mapping[str, Any]  # the architecture: the config's fields (timm's keyword names)
    tag: str | None = None  # timm's default pretrained tag (NAME.TAG on the Hub); None: timm publishes none
    # The preprocessing family (a key of predict/defaults.FAMILIES) of the default tag's weights;
    # None: read off the config and the checkpoint's format. `preprocess_changes`: its departures.
    preprocess: str | None = None
    preprocess_changes: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    params: int | None = None  # timm.create_model(name)'s parameter count, where recorded


def preprocess_family(name: str) -> str | None:
    """The preprocessing family a preset's name says (the families after 2021, and DeiT's)."""
    for family, match in (("deit", name.startswith("deit")), ("dinov2", "_dinov2" in name),
                          ("clip", "_clip_" in name), ("siglip", "_siglip_" in name), ("aimv2", name.startswith("aimv2"))):
        if match:
            return family
    return None


# timm's default pretrained tag of each preset: the first tag with weights in its default_cfgs
# (timm/models/vision_transformer.py, deit.py, swin_transformer.py). None: timm publishes none.
TAGS: dict[str, str | None] = {
    **{f"vit_{v}": "augreg_in21k_ft_in1k" for v in (
        "tiny_patch16_224", "tiny_patch16_384", "small_patch16_224", "small_patch16_384", "small_patch32_224",
        "small_patch32_384", "base_patch16_384", "base_patch32_224", "base_patch32_384", "large_patch16_224",
        "large_patch16_384")},
    "vit_base_patch16_224": "augreg2_in21k_ft_in1k",
    "vit_base_patch8_224": "augreg2_in21k_ft_in1k",
    "vit_large_patch32_384": "orig_in21k_ft_in1k",
    "vit_large_patch32_224": "orig_in21k",  # features only (num_classes=0), as the four below
    "vit_huge_patch14_224": "orig_in21k",
    "vit_small_patch8_224": "dino",
    "vit_base_patch16_siglip_224": "v2_webli",
    **{f"deit_{v}": "fb_in1k" for v in (
        "tiny_patch16_224", "small_patch16_224", "base_patch16_224", "base_patch16_384", "tiny_distilled_patch16_224",
        "small_distilled_patch16_224", "base_distilled_patch16_224", "base_distilled_patch16_384")},
    **{f"deit3_{v}": "fb_in1k" for v in (
        "small_patch16_224", "small_patch16_384", "medium_patch16_224", "base_patch16_224", "base_patch16_384",
        "large_patch16_224", "large_patch16_384", "huge_patch14_224")},
    **{f"vit_{size}_patch14_{reg}dinov2": "lvd142m" for size in ("small", "base", "large", "giant")
       for reg in ("", "reg4_")},
    # CLIP: timm's ImageNet fine-tunes of LAION-2B towers come first where they exist, else the tower.
    **{f"vit_{v}": "laion2b_ft_in12k_in1k" for v in (
        "base_patch32_clip_224", "base_patch32_clip_384", "base_patch32_clip_448", "base_patch16_clip_224",
        "base_patch16_clip_384", "large_patch14_clip_224", "large_patch14_clip_336", "huge_patch14_clip_224",
        "huge_patch14_clip_336")},
    "vit_base_patch32_clip_256": "datacompxl",
    "vit_huge_patch14_clip_378": "dfn5b",
    # QuickGELU names: timm's first tag whose weights were trained with QuickGELU (their files live
    # in the repository of the name without _quickgelu, see weights_repository_name).
    "vit_base_patch32_clip_quickgelu_224": "laion400m_e32",
    "vit_base_patch16_clip_quickgelu_224": "metaclip_2pt5b",
    "vit_large_patch14_clip_quickgelu_224": "dfn2b",
    "vit_large_patch14_clip_quickgelu_336": "openai",
    "vit_huge_patch14_clip_quickgelu_224": "dfn5b",
    "vit_huge_patch14_clip_quickgelu_378": "dfn5b",
    # SigLIP: SigLIP 2 (v2_webli) where it exists; the so400m/14 GAP towers at 448 and 896 are PaliGemma's.
    **{f"vit_{v}": "v2_webli" for v in (
        "base_patch32_siglip_256", "base_patch16_siglip_256", "base_patch16_siglip_384", "base_patch16_siglip_512",
        "large_patch16_siglip_256", "large_patch16_siglip_384", "large_patch16_siglip_512",
        "so400m_patch14_siglip_224", "so400m_patch14_siglip_378", "so400m_patch16_siglip_256",
        "so400m_patch16_siglip_384", "so400m_patch16_siglip_512", "base_patch32_siglip_gap_256",
        "base_patch16_siglip_gap_224", "base_patch16_siglip_gap_256", "base_patch16_siglip_gap_384",
        "base_patch16_siglip_gap_512", "large_patch16_siglip_gap_256", "large_patch16_siglip_gap_384",
        "large_patch16_siglip_gap_512", "so400m_patch14_siglip_gap_224", "so400m_patch14_siglip_gap_378",
        "so400m_patch16_siglip_gap_256", "so400m_patch16_siglip_gap_384", "so400m_patch16_siglip_gap_512")},
    "vit_so400m_patch14_siglip_gap_448": "pali_mix",
    "vit_so400m_patch14_siglip_gap_896": "pali_pt",
    **{f"aimv2_{size}_patch14_{img}": "apple_pt" for size in ("large", "huge", "1b", "3b") for img in (224, 336, 448)},
    "swin_tiny_patch4_window7_224": "ms_in1k",
    **{f"swin_{v}": "ms_in22k_ft_in1k" for v in (
        "small_patch4_window7_224", "base_patch4_window7_224", "base_patch4_window12_384", "large_patch4_window7_224",
        "large_patch4_window12_384")},
    # timm's eva.py: EVA-02 (MIM pretraining at 224 px; the fine-tunes at 336 / 448 px) and DINOv3.
    **{f"eva02_{size}_patch14_224": "mim_in22k" for size in ("tiny", "small", "base", "large")},
    "eva02_tiny_patch14_336": "mim_in22k_ft_in1k", "eva02_small_patch14_336": "mim_in22k_ft_in1k",
    "eva02_base_patch14_448": "mim_in22k_ft_in22k_in1k", "eva02_large_patch14_448": "mim_in22k_ft_in22k_in1k",
    **{f"vit_{size}_patch16_dinov3{qkvb}": "lvd1689m" for size in ("small", "small_plus", "base", "large", "huge_plus")
       for qkvb in ("", "_qkvb")},
    "vit_7b_patch16_dinov3": "lvd1689m",
    "vit_tiny_patch16_dinov3_qkvb": None,  # "custom, no pretraining" in timm
}

# timm's pretrained_cfg of these names' default tags, where it departs from the family's row.
PREPROCESS_CHANGES: dict[str, dict[str, Any]] = {
    "vit_base_patch32_clip_224": dict(crop_pct=0.9),  # laion2b_ft_in12k_in1k
    "vit_base_patch32_clip_quickgelu_224": dict(crop_pct=0.9),  # laion400m_e32
    "vit_base_patch16_clip_224": dict(crop_pct=0.95),  # laion2b_ft_in12k_in1k
    "vit_base_patch16_clip_384": dict(resize="squash"),
    "vit_huge_patch14_clip_336": dict(resize="squash"),
    "vit_large_patch14_clip_224": dict(mean=0.5, std=0.5),  # the L/14 fine-tunes: [-1, 1]
    "vit_large_patch14_clip_336": dict(resize="squash", mean=0.5, std=0.5),
    "vit_so400m_patch14_siglip_gap_448": dict(crop_pct=1.0),  # PaliGemma's towers
    "vit_so400m_patch14_siglip_gap_896": dict(crop_pct=1.0),
}

# timm.create_model(name)'s parameter count (num_classes from the name's default pretrained config:
# vit_small_patch8_224 (DINO), vit_large_patch32_224 and vit_huge_patch14_224 (ImageNet-21k
# features) and vit_base_patch16_siglip_224 (WebLI) have no classifier there). The later
# families are counted against transformers and timm in parity_tests (test_family_presets, test_eva_presets).
PARAMS: dict[str, int] = {
    "vit_tiny_patch16_224": 5_717_416,
    "vit_tiny_patch16_384": 5_790_376,
    "vit_small_patch8_224": 21_670_272,
    "vit_small_patch16_224": 22_050_664,
    "vit_small_patch16_384": 22_196_584,
    "vit_small_patch32_224": 22_878_952,
    "vit_small_patch32_384": 22_915_432,
    "vit_base_patch8_224": 86_576_872,
    "vit_base_patch16_224": 86_567_656,
    "vit_base_patch16_384": 86_859_496,
    "vit_base_patch32_224": 88_224_232,
    "vit_base_patch32_384": 88_297_192,
    "vit_large_patch16_224": 304_326_632,
    "vit_large_patch16_384": 304_715_752,
    "vit_large_patch32_224": 305_510_400,
    "vit_large_patch32_384": 306_632_680,
    "vit_huge_patch14_224": 630_764_800,
    "vit_base_patch16_siglip_224": 92_884_224,
    "deit_tiny_patch16_224": 5_717_416,
    "deit_tiny_distilled_patch16_224": 5_910_800,
    "deit_small_patch16_224": 22_050_664,
    "deit_small_distilled_patch16_224": 22_436_432,
    "deit_base_patch16_224": 86_567_656,
    "deit_base_distilled_patch16_224": 87_338_192,
    "deit_base_patch16_384": 86_859_496,
    "deit_base_distilled_patch16_384": 87_630_032,
}

# Presets written as one whole card each (architecture, tag, preprocessing, count in one entry).
ADDED: tuple[PresetCard, ...] = (
    # timm's B/16 with global average pooling and no class token (16 heads); timm publishes no weights.
    PresetCard("vit_base_patch16_gap_224", ViTConfig, dict(
        embed_dim=768, mlp_ratio=4.0, num_heads=16, depth=12, patch_size=16, class_token=False, global_pool="avg",
        fc_norm=False), tag=None, params=86_566_120),
)
