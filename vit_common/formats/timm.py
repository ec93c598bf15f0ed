"""timm state dicts (ViT, DeiT, Swin, Eva): the PyTorch twin's own names, read as they are, and written."""
from __future__ import annotations

from pathlib import Path

from ..weights import TIMM, Weights
from .base import Implied, Layout, family_from_names, is_swin
from .containers import save_state_dict

SWIN_BUFFERS = ("relative_position_index", "attn_mask")  # saved by Microsoft's code; both twins recompute them
# timm's and Microsoft's Swin weights were trained on ImageNet mean / std pixels, not [-1, 1].
SWIN_IMAGENET_PREPROCESS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic"}


def drop_swin_buffers(raw: Weights) -> Weights:
    return {k: v for k, v in raw.items() if not k.endswith(SWIN_BUFFERS)}


def _read(raw: Weights) -> Weights:
    return drop_swin_buffers(raw) if is_swin(raw) else dict(raw)


def swin_imagenet_preprocess(cfg) -> dict:
    """timm's default_cfg for its and Microsoft's Swin weights: ImageNet mean / std, crop 0.9 at 224, none at 384."""
    return dict(SWIN_IMAGENET_PREPROCESS, crop_pct=1.0 if cfg.img_size >= 384 else 0.9)


def swin_implies(weights: Weights, keys: set[str]) -> Implied:
    return Implied(family="swin", preprocess=swin_imagenet_preprocess,
                   preprocess_source="timm / Microsoft Swin (ImageNet)")


def _implies(weights: Weights, keys: set[str]) -> Implied:
    family = family_from_names(keys)
    return swin_implies(weights, keys) if family == "swin" else Implied(family=family)


def write_timm(weights: Weights, cfg, meta: dict, dst) -> None:
    """timm's names (.safetensors, or a torch pickle {'state_dict', 'config', 'meta'}), the config inside;
    a folder (no suffix): timm's Hub layout (timm_hub.py)."""
    if Path(dst).suffix in (".safetensors", ".pt", ".pth"):
        save_state_dict(dst, TIMM.export(weights, cfg), cfg, meta)
    else:
        from .timm_hub import write_folder

        write_folder(weights, cfg, meta, Path(dst))


LAYOUT = Layout("timm", "timm state dict", "patch_embed.proj.weight, blocks.N... or layers.N...",
                lambda keys: "patch_embed.proj.weight" in keys, _read, names="timm", implies=_implies,
                write=write_timm, suffixes=(".safetensors", ".pt", ".pth", ""), preprocess="timm_vit", model_first=True)
LAYOUTS = (LAYOUT,)
