"""Weights made to fit a new image size, patch size, Swin window size or class count, without retraining the body."""
from __future__ import annotations

import numpy as np

from ..config import ModelConfig, SwinConfig
from .canonical import Weights, canonical_shapes
from .resample import resample_patch_embed, resample_posemb, resample_relative_position_bias

# Fields a checkpoint can be adapted to without retraining the body (window_size: Swin only).
ADAPTABLE = ("img_size", "patch_size", "num_classes", "window_size")
POSEMB_TABLE = "Transformer/posembed_input/pos_embedding"
POSEMB_TABLES = (POSEMB_TABLE, "pos_embed")  # ViT's, Eva's (Eva's rotary tables follow the config)
PATCH_KERNELS = ("embedding/kernel", "patch_embed/proj/kernel")  # ViT's, Swin's


def adapt(weights: Weights, source: ModelConfig, target: ModelConfig, *, posemb_method: str = "zoom",
          patch_method: str = "bilinear") -> tuple[Weights, list[str]]:
    """Weights for `source` made to fit `target` (image size, patch size, window size, class count)."""
    weights, changes = dict(weights), []
    if target.patch_size != source.patch_size:
        kernel = next(k for k in PATCH_KERNELS if k in weights)
        weights[kernel] = resample_patch_embed(weights[kernel], target.patch_size, method=patch_method)
        changes.append(f"patch embedding PI-resized {source.patch_size} -> {target.patch_size} ({patch_method})")
    table = next((k for k in POSEMB_TABLES if k in weights), None)
    if table is not None and target.grid_size != source.grid_size:
        prefix = 0 if source.no_embed_class else source.num_prefix_tokens
        weights[table] = resample_posemb(weights[table], target.grid_size, num_prefix_tokens=prefix,
                                         method=posemb_method)
        changes.append(f"position embedding resampled {source.grid_size}x{source.grid_size} -> "
                       f"{target.grid_size}x{target.grid_size} ({posemb_method})")
    if isinstance(source, SwinConfig):
        changes += _adapt_swin_windows(weights, source, target)
    if target.num_classes != source.num_classes:
        shapes = canonical_shapes(target)
        for name in [k for k in weights if k.split("/")[0] in ("head", "head_dist")]:
            del weights[name]
        for name, shape in shapes.items():
            if name.split("/")[0] in ("head", "head_dist"):  # a fresh zero head, as Google's fine-tuning starts from
                weights[name] = np.zeros(shape, np.float32)
        changes.append(f"head replaced: {source.num_classes} -> {target.num_classes} classes (zeros)")
    return weights, changes


def _adapt_swin_windows(weights: Weights, source: SwinConfig, target: SwinConfig) -> list[str]:
    """Resample (bicubic) every relative position bias table of a stage whose window changes."""
    changes = []
    for i, depth in enumerate(source.depths):
        old, new = source.stage_window(i), target.stage_window(i)
        if old == new:
            continue
        for j in range(depth):
            name = f"layers_{i}/blocks_{j}/attn/relative_position_bias_table"
            weights[name] = resample_relative_position_bias(weights[name], new, method="bicubic")
        changes.append(f"stage {i} relative position bias tables resampled for {old}x{old} -> {new}x{new} "
                       f"windows (bicubic)")
    return changes
