"""Canonical Eva files (EVA-02, DINOv3: vit-convert's .npz, an Eva run's final.npz): read as they are.

The layout itself is defined by vit_common.weights.module_tables.eva_links."""
from __future__ import annotations

from .base import Layout

LAYOUT = Layout("eva_canonical", "canonical Eva layout", "patch_embed/proj/kernel, blocks_N/...",
                lambda keys: "patch_embed/proj/kernel" in keys and any(k.startswith("blocks_") for k in keys),
                family="eva")
LAYOUTS = (LAYOUT,)
