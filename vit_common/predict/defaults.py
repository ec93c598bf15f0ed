"""The preprocessing a checkpoint gets when it records none: its family's documented one.

One table, FAMILIES, in preprocess.py's meta["preprocess"] format. resolve_preprocess() says
which applies to a checkpoint and why, for vit-predict (which prints it) and vit-convert (which
writes it into every output, so converted files record it).
"""
from __future__ import annotations

from typing import Any, Mapping

from ..config.cards import preprocess_family
from ..config.presets import CARDS
from ..formats.detect import layouts

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
OPENAI_CLIP_MEAN, OPENAI_CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]

FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    # vision_transformer's input_pipeline evaluates with tf.image.resize(im, [s, s]) (bilinear, no
    # crop, aspect not kept) then (im - 127.5) / 127.5; big_vision's fine-tuning configs use
    # `decode|resize(s)|value_range(-1, 1)`, the same. (TF does not antialias when shrinking and
    # PIL does, so large downscales differ slightly.) HF's ViTImageProcessor does the same.
    "google": ("Google vision_transformer / big_vision",
               dict(resize="squash", crop_pct=1.0, interpolation="bilinear", mean=0.5, std=0.5)),
    # timm's pretrained_cfg for vit_* (augreg) weights: IMAGENET_INCEPTION mean/std, bicubic, crop 0.9.
    "timm_vit": ("timm ViT (augreg)",
                 dict(resize="shorter_side", crop_pct=0.9, interpolation="bicubic", mean=0.5, std=0.5)),
    # timm's pretrained_cfg for deit_*: ImageNet mean/std, bicubic, crop 0.9 (DeiT's own eval
    # code resizes to 256 and crops 224, 0.875).
    "deit": ("timm DeiT", dict(resize="shorter_side", crop_pct=0.9, interpolation="bicubic",
                               mean=IMAGENET_MEAN, std=IMAGENET_STD)),
    # The families after 2021, as timm's pretrained_cfg of each name's default tag gives them; a
    # preset's card (config/cards.py) names its row and where its default tag departs from it.
    # DINOv2 (lvd142m): ImageNet mean/std, no crop.
    "dinov2": ("timm DINOv2", dict(resize="shorter_side", crop_pct=1.0, interpolation="bicubic",
                                   mean=IMAGENET_MEAN, std=IMAGENET_STD)),
    # CLIP towers and their ImageNet fine-tunes: OpenAI's mean/std, mostly no crop.
    "clip": ("timm CLIP", dict(resize="shorter_side", crop_pct=1.0, interpolation="bicubic",
                               mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)),
    # SigLIP / SigLIP 2 (webli, v2_webli): [-1, 1], timm's crop 0.9 at every size.
    "siglip": ("timm SigLIP", dict(resize="shorter_side", crop_pct=0.9, interpolation="bicubic", mean=0.5, std=0.5)),
    # AIMv2 (apple_pt): OpenAI's mean/std, no crop.
    "aimv2": ("timm AIMv2", dict(resize="shorter_side", crop_pct=1.0, interpolation="bicubic",
                                 mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)),
    # HF's microsoft/swin-* checkpoints: their ViTImageProcessor resizes to size x size with
    # resample 3 (bicubic), no crop, ImageNet mean/std. (timm's and Microsoft's Swin files get
    # timm's cfg from their formats' Layouts: vit_common/formats/timm.py, SWIN_IMAGENET_PREPROCESS.)
    "hf_swin": ("HuggingFace Swin", dict(resize="squash", crop_pct=1.0, interpolation="bicubic",
                                         mean=IMAGENET_MEAN, std=IMAGENET_STD)),
    # timm's pretrained_cfg for eva02_*: OpenAI CLIP mean/std, bicubic, crop 0.9 at 224 px; the
    # default tags at 336 px crop 1.0, those at 448 px squash to the size (crop_mode 'squash').
    "eva02": ("timm EVA-02", dict(resize="shorter_side", crop_pct=0.9, interpolation="bicubic",
                                  mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)),
    # timm's pretrained_cfg for vit_*_dinov3* (lvd1689m): ImageNet mean/std, bicubic, crop 1.0.
    "dinov3": ("timm DINOv3", dict(resize="shorter_side", crop_pct=1.0, interpolation="bicubic",
                                   mean=IMAGENET_MEAN, std=IMAGENET_STD)),
    # DINOv2's own evaluation transform (make_classification_eval_transform): resize 256, crop 224.
    "dinov2_hub": ("DINOv2 (torch.hub)", dict(resize="shorter_side", crop_pct=0.875, interpolation="bicubic",
                                          mean=IMAGENET_MEAN, std=IMAGENET_STD)),
    # What train.py evaluated with before runs recorded it (vit_data.loader.eval_preprocess).
    "train.py": ("train.py evaluation", dict(resize="center_square", crop_pct=1.0, interpolation="bilinear",
                                             mean=0.5, std=0.5)),
    # Anything else: what vit-predict always applied before (Google's range, timm's 0.875 crop).
    "default": ("vit-predict's default", dict(resize="shorter_side", crop_pct=0.875, interpolation="bicubic",
                                              mean=0.5, std=0.5)),
}


def later_family(name: str, cfg) -> str | None:
    """dinov2 / clip / siglip / aimv2 / deit (DeiT III) from a preset name, else from the options
    only these families use; None for the ViT / DeiT of 2020-2021."""
    family = CARDS[name].preprocess if name in CARDS else preprocess_family(name)  # a timm name no card has
    if family:
        return family
    if name or getattr(cfg, "arch", "") != "vit":
        return None
    if cfg.norm_layer == "rmsnorm" or cfg.embed_norm_layer:
        return "aimv2"
    if cfg.pre_norm:
        return "clip"
    if cfg.reg_tokens or (cfg.init_values and not cfg.num_classes):
        return "dinov2"
    if cfg.init_values:
        return "deit"  # DeiT III: LayerScale with a classifier
    if not cfg.class_token and cfg.global_pool == "map":
        return "siglip"
    return None


def family_of(meta: Mapping[str, Any], cfg, model: str | None = None) -> str:
    """Which FAMILIES entry fits a checkpoint that records no preprocessing."""
    layout = layouts().get(meta.get("source_layout"))  # its Layout's row, for files that record none
    row = layout.preprocess if layout is not None else None
    if str(meta.get("source", "")).startswith("train.py") or row == "train.py":
        return "train.py"  # a run (or its final.npz) from before runs recorded their preprocessing
    if getattr(cfg, "arch", None) == "eva":  # timm's Eva: EVA-02 or DINOv3, whatever the file layout
        from ..config.eva import eva_family
        return eva_family(cfg)
    name = model or meta.get("architecture") or ""  # a preset, or the timm architecture of Hub weights
    later = later_family(name, cfg)
    if layout is not None and layout.model_first:  # timm's names, HF's ViT (Google's weights: Google's row)
        if later or getattr(cfg, "distilled", False):
            return later or "deit"
        return row
    if row == "google" and later not in (None, "siglip") and (later != "deit" or cfg.init_values):
        return later  # options Google never released: a converted file of that family (SigLIP is Google's)
    return row or "default"


def resolve_preprocess(meta: Mapping[str, Any], cfg, model: str | None = None) -> tuple[dict[str, Any], str]:
    """(meta['preprocess'] entries, where they came from): the checkpoint's record when it has
    one, else its family's default (timm's crop 1.0 at 384 px and above, as its *_384 configs)."""
    from .preprocess import PREPROCESS_KEYS

    recorded = meta.get("preprocess")
    if recorded is not None and not isinstance(recorded, Mapping):
        raise ValueError(f"meta['preprocess'] must be a mapping of {PREPROCESS_KEYS}, got {recorded!r}")
    if recorded:
        options = {k: recorded[k] for k in PREPROCESS_KEYS if recorded.get(k) is not None}
        if meta.get("preprocess_source"):  # the file records none: its format's default, filled in on reading
            return options, f"family default: {meta['preprocess_source']}"
        return options, "recorded in the checkpoint"
    family = family_of(meta, cfg, model)
    what, options = FAMILIES[family]
    options = dict(options)
    if family in ("timm_vit", "deit") and cfg.img_size >= 384:
        options["crop_pct"] = 1.0
    if family == "eva02" and cfg.img_size >= 336:
        options.update(crop_pct=1.0, resize="squash" if cfg.img_size >= 448 else "shorter_side")
    name = model or meta.get("architecture")
    if family != "google" and name in CARDS and CARDS[name].preprocess_changes:
        options.update(CARDS[name].preprocess_changes)
        what += f" ({name}'s default tag)"
    return options, f"family default: {what}"
