"""Which layout a checkpoint's weight names are in: every format module's Layouts, tried in order.

A format is a module whose LAYOUTS tuple lists its Layouts; DETECTION_ORDER names the modules
(a name without a dot is one of vit_common.formats', a dotted one is imported as it is)."""
from __future__ import annotations

import importlib
from typing import Iterable, Iterator, Mapping

from ..errors import CheckpointError
from .base import Layout

# First match wins: Microsoft's Swin names are timm's with a twist, so they are tried first; so are
# Meta's DINO, BAAI's EVA-02 and Apple's AIMv2 (DINOv3 before DINOv2: both have mask_token and
# ls1.gamma; both DINOs before BAAI: the DINOv2 giant's SwiGLU is also called w12 / w3).
# transformers' names come after timm's; OpenCLIP's sit under visual.*, which no other layout has.
DETECTION_ORDER = ["google", "eva_canonical", "swin_canonical", "microsoft_swin", "meta_dino", "eva_baai", "aimv2",
                   "timm", "huggingface", "openclip"]
FOLDER_MODULES = ["run_folder"]  # train.py runs: recognised as folders, not by their names


def _layouts_of(modules: Iterable[str]) -> tuple[Layout, ...]:
    return tuple(layout for name in modules for layout in importlib.import_module(
        name if "." in name else f"{__package__}.{name}").LAYOUTS)


def file_layouts() -> tuple[Layout, ...]:
    """The Layouts of weight files, in the order they are tried."""
    return _layouts_of(DETECTION_ORDER)


def layouts() -> dict[str, Layout]:
    """Every Layout by name (files' and folders')."""
    return {layout.name: layout for layout in (*file_layouts(), *_layouts_of(FOLDER_MODULES))}


class _LayoutNames(Mapping[str, str]):
    """Layout name -> what a person calls it, for reports (follows DETECTION_ORDER)."""

    def __getitem__(self, name: str) -> str:
        return layouts()[name].description

    def __iter__(self) -> Iterator[str]:
        return iter(layouts())

    def __len__(self) -> int:
        return len(layouts())


LAYOUT_NAMES: Mapping[str, str] = _LayoutNames()


def detect_layout(keys: Iterable[str]) -> str:
    """The name of the layout of a set of weight names ('timm' covers timm's ViT, Swin and Eva)."""
    keys = set(keys)
    candidates = file_layouts()
    for layout in candidates:
        if layout.matches(keys):
            return layout.name
    expected = "; ".join(f"{layout.description} ({layout.signature})" for layout in candidates)
    sample = ", ".join(sorted(keys)[:6])
    raise CheckpointError(f"unknown weight layout: expected one of: {expected}; found {sample}, ...")


def writable_layouts() -> dict[str, Layout]:
    """--to name -> the layout that writes it (the format modules' Layouts with a writer)."""
    return {layout.output_name: layout for layout in layouts().values() if layout.write is not None}
