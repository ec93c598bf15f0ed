"""Canonical Swin files (vit-convert's .npz, a Swin run's final.npz): read as they are.

The layout itself is defined by vit_common.weights.module_tables."""
from __future__ import annotations

from .base import Layout

LAYOUT = Layout("swin_canonical", "canonical Swin layout", "patch_embed/proj/kernel, layers_N/...",
                lambda keys: "patch_embed/proj/kernel" in keys, family="swin")
LAYOUTS = (LAYOUT,)
