"""Every ViT / DeiT preset against timm: the same names, the same parameter counts.

The counts (recorded on each preset's card) are those of `timm.create_model(name)`, which takes num_classes from the name's default
pretrained config: vit_small_patch8_224 (DINO), vit_large_patch32_224 and vit_huge_patch14_224
(ImageNet-21k features) and vit_base_patch16_siglip_224 (WebLI) have no classifier there.
"""
import re

import pytest

from vit_common.config.eva import EVA_PRESETS  # counted in parity_tests/test_eva_presets.py
from vit_common.config.presets import CARDS, PRESETS, get_config, list_models
from vit_common.errors import ConfigError
from vit_common.weights.canonical import count_params

# The counts live on the presets' cards (config/cards.py PARAMS, or a whole card's params).
TIMM_PARAMS = {name: card.params for name, card in CARDS.items() if card.params is not None}
HEADLESS = {"vit_small_patch8_224", "vit_large_patch32_224", "vit_huge_patch14_224", "vit_base_patch16_siglip_224"}


# DeiT III, DINOv2, CLIP, SigLIP and AIMv2: counted against transformers in parity_tests/test_family_presets.py.
LATER_FAMILIES = re.compile(r"^(deit3_|aimv2_|vit_.*_(dinov2$|clip_|siglip_))")


def test_every_vit_and_deit_preset_is_a_timm_name_listed_here():
    assert sorted(n for n in PRESETS if not n.startswith("swin_") and n not in EVA_PRESETS
                  and not LATER_FAMILIES.match(n)) == sorted(n for n in TIMM_PARAMS if not LATER_FAMILIES.match(n))
    assert [n for n in list_models("vit_base_patch16_*2[0-9][0-9]") if n not in EVA_PRESETS] == [
        "vit_base_patch16_224", "vit_base_patch16_clip_224", "vit_base_patch16_clip_quickgelu_224",
        "vit_base_patch16_gap_224", "vit_base_patch16_siglip_224", "vit_base_patch16_siglip_256",
        "vit_base_patch16_siglip_gap_224", "vit_base_patch16_siglip_gap_256"]


@pytest.mark.parametrize("name", sorted(TIMM_PARAMS))
def test_parameter_count_equals_timms(name):
    cfg = get_config(name)
    assert count_params(cfg) == TIMM_PARAMS[name]
    assert cfg.num_classes == (0 if name in HEADLESS else 1000)


@pytest.mark.parametrize("name", sorted(HEADLESS))
def test_a_head_on_a_headless_preset_adds_exactly_the_classifier(name):
    cfg = get_config(name, num_classes=1000)
    assert count_params(cfg) == TIMM_PARAMS[name] + cfg.embed_dim * 1000 + 1000


def test_architectures_that_counts_cannot_see():
    gap = get_config("vit_base_patch16_gap_224")
    assert (gap.num_heads, gap.class_token, gap.global_pool, gap.has_fc_norm) == (16, False, "avg", False)
    siglip = get_config("vit_base_patch16_siglip_224")
    assert (siglip.num_heads, siglip.class_token, siglip.global_pool) == (12, False, "map")
    assert get_config("deit_small_distilled_patch16_224").distilled


def test_the_invented_map_name_is_gone():
    with pytest.raises(ConfigError, match="vit_base_patch16_siglip_224"):
        get_config("vit_base_patch16_map_224")


def test_a_card_is_the_one_place_a_preset_lives(monkeypatch):
    """One PresetCard (as docs/architecture.md adds one) gives the name to get_config and
    list_models, its default tag to the hub and its preprocessing to vit-predict's defaults."""
    from vit_common import ViTConfig
    from vit_common.config.cards import PresetCard
    from vit_common.formats.hub import parse_pretrained
    from vit_common.predict.defaults import FAMILIES, resolve_preprocess

    fields = dict(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=3)
    monkeypatch.setitem(CARDS, "vit_toy_patch16_32", PresetCard(
        "vit_toy_patch16_32", ViTConfig, fields, tag="toy_in1k", preprocess="deit",
        preprocess_changes={"crop_pct": 1.0}))
    assert list_models("vit_toy*") == ["vit_toy_patch16_32"]
    cfg = get_config("vit_toy_patch16_32", num_classes=5)
    assert (cfg.embed_dim, cfg.num_heads, cfg.num_classes) == (32, 2, 5)
    assert parse_pretrained("timm:vit_toy_patch16_32").repo_id == "timm/vit_toy_patch16_32.toy_in1k"
    options, origin = resolve_preprocess({"source_layout": "timm"}, cfg, "vit_toy_patch16_32")
    assert options == {**FAMILIES["deit"][1], "crop_pct": 1.0}
    assert origin == "family default: timm DeiT (vit_toy_patch16_32's default tag)"
