"""timm state dicts (ViT, DeiT, Swin): the PyTorch twin's own names, read as they are."""
from __future__ import annotations

from ..weights import Weights
from .base import Layout, is_swin

SWIN_BUFFERS = ("relative_position_index", "attn_mask")  # saved by Microsoft's code; both twins recompute them


def drop_swin_buffers(raw: Weights) -> Weights:
    return {k: v for k, v in raw.items() if not k.endswith(SWIN_BUFFERS)}


def _read(raw: Weights) -> Weights:
    return drop_swin_buffers(raw) if is_swin(raw) else dict(raw)


LAYOUT = Layout("timm", "timm state dict", "patch_embed.proj.weight, blocks.N... or layers.N...",
                lambda keys: "patch_embed.proj.weight" in keys, _read, names="timm")
