"""Which layout a checkpoint's weight names are in: every format module's Layouts, tried in order."""
from __future__ import annotations

from typing import Iterable

from ..errors import CheckpointError
from ..weights import Weights
from .base import Layout
from .eva_canonical import LAYOUT as EVA_CANONICAL
from .google import LAYOUTS as GOOGLE
from .huggingface import LAYOUTS as HUGGINGFACE
from .microsoft_swin import LAYOUT as MICROSOFT_SWIN
from .openclip import LAYOUT as OPENCLIP
from .run_folder import LAYOUTS as RUN_FOLDERS
from .swin_canonical import LAYOUT as SWIN_CANONICAL
from .timm import LAYOUT as TIMM
from .aimv2 import LAYOUTS as AIMV2
from .eva_baai import LAYOUT as EVA_BAAI
from .meta_dino import LAYOUTS as META_DINO

# First match wins: Microsoft's Swin names are timm's with a twist, so they are tried first; so are
# Meta's DINO, BAAI's EVA-02 and Apple's AIMv2 (DINOv3 before DINOv2: both have mask_token and
# ls1.gamma; both DINOs before BAAI: the DINOv2 giant's SwiGLU is also called w12 / w3).
# OpenCLIP's names sit under visual.*, which no other layout has.
RELEASED = (*META_DINO, EVA_BAAI, *AIMV2)
FILE_LAYOUTS: tuple[Layout, ...] = (*GOOGLE, EVA_CANONICAL, SWIN_CANONICAL, MICROSOFT_SWIN, *RELEASED, TIMM,
                                    *HUGGINGFACE, OPENCLIP)
LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (*FILE_LAYOUTS, *RUN_FOLDERS)}
LAYOUT_NAMES: dict[str, str] = {name: layout.description for name, layout in LAYOUTS.items()}
# Layouts read to timm's names (their fused tensors need a config to split).
TORCH_LAYOUTS = tuple(name for name, layout in LAYOUTS.items() if layout.names == "timm")


def detect_layout(keys: Iterable[str]) -> str:
    """The name of the layout of a set of weight names ('timm' covers timm's ViT, Swin and Eva)."""
    keys = set(keys)
    for layout in FILE_LAYOUTS:
        if layout.matches(keys):
            return layout.name
    expected = "; ".join(f"{layout.description} ({layout.signature})" for layout in FILE_LAYOUTS)
    sample = ", ".join(sorted(keys)[:6])
    raise CheckpointError(f"unknown weight layout: expected one of: {expected}; found {sample}, ...")


def to_known_names(raw: Weights) -> tuple[Weights, str]:
    """(weights in canonical or timm names, the layout they were read from)."""
    name = detect_layout(raw)
    return LAYOUTS[name].read(raw), name


def writable_layouts() -> dict[str, Layout]:
    """--to name -> the layout that writes it (the format modules' Layouts with a writer)."""
    return {layout.output_name: layout for layout in LAYOUTS.values() if layout.write is not None}
