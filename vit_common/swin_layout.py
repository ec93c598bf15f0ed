"""The canonical layout of Swin Transformers: timm's module structure, Flax's names and shapes.

Google never released Swin checkpoints, so there is no Google naming to follow. The canonical
Swin layout is a flat mapping of '/'-joined names to numpy arrays where
- the path is timm's module path with '.' -> '/' and an index joined to its list by '_'
  (`layers.0.blocks.1.attn.qkv` -> `layers_0/blocks_1/attn/qkv`), so a reader who knows
  timm's Swin (or Microsoft's) finds every tensor where they expect it;
- the leaf and the shape are Flax's: dense `kernel` (in, out) and `bias`, convolution `kernel`
  HWIO, LayerNorm `scale` and `bias`; the relative position bias table is stored as is,
  ((2w-1)^2, heads), rows indexed by vit_common.windows.relative_position_index.

The q|k|v projection stays fused, as a (C, 3C) kernel whose output columns are [q | k | v],
each head-major (head h owns columns h*D .. h*D + D-1 of its part), which is how both timm and
Microsoft split it. Patch merging (`layers_{i}/downsample`, i >= 1) sits at the start of stage i,
as in timm since 0.9; Microsoft's checkpoints keep it at the end of stage i-1 (see
vit_common.layouts.microsoft_swin_to_timm).

Entries of swin_tiny_patch4_window7_224, e.g.:
    patch_embed/proj/kernel                                   (4, 4, 3, 96)
    patch_embed/norm/scale                                    (96,)
    layers_0/blocks_0/attn/relative_position_bias_table       (169, 3)
    layers_0/blocks_0/attn/qkv/kernel                         (96, 288)
    layers_1/downsample/norm/scale                            (384,)
    layers_1/downsample/reduction/kernel                      (384, 192)   no bias
    layers_3/blocks_1/mlp/fc2/kernel                          (3072, 768)
    norm/scale                                                (768,)
    head/fc/kernel                                            (768, 1000)
"""
from __future__ import annotations

from .config import SwinConfig
from .layout import Link


def _canonical(module: str) -> str:
    """timm's module path -> the canonical prefix: 'layers.0.blocks.1.attn' -> 'layers_0/blocks_1/attn'."""
    parts: list[str] = []
    for part in module.split("."):
        if part.isdigit():
            parts[-1] = f"{parts[-1]}_{part}"
        else:
            parts.append(part)
    return "/".join(parts)


def _link(module: str, kind: str, shape: tuple[int, ...], bias: bool = True) -> Link:
    return Link(module, kind, (_canonical(module),), shape, bias)


def swin_links(cfg: SwinConfig) -> list[Link]:
    """Every parameterised module of a Swin Transformer, in forward order."""
    c0, p = cfg.embed_dim, cfg.patch_size
    out = [
        _link("patch_embed.proj", "conv", (p, p, cfg.in_chans, c0)),
        _link("patch_embed.norm", "norm", (c0,)),
    ]
    for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
        c, stage = cfg.stage_dim(i), f"layers.{i}"
        if i > 0:
            out += [
                _link(f"{stage}.downsample.norm", "norm", (2 * c,)),  # 4 * the previous stage's width
                _link(f"{stage}.downsample.reduction", "dense", (2 * c, c), bias=False),
            ]
        table = (2 * cfg.stage_window(i) - 1) ** 2
        for j in range(depth):
            block = f"{stage}.blocks.{j}"
            out += [
                _link(f"{block}.norm1", "norm", (c,)),
                _link(f"{block}.attn.relative_position_bias_table", "array", (table, heads)),
                _link(f"{block}.attn.qkv", "dense", (c, 3 * c), bias=cfg.qkv_bias),
                _link(f"{block}.attn.proj", "dense", (c, c)),
                _link(f"{block}.norm2", "norm", (c,)),
                _link(f"{block}.mlp.fc1", "dense", (c, cfg.mlp_dim(i))),
                _link(f"{block}.mlp.fc2", "dense", (cfg.mlp_dim(i), c)),
            ]
    out.append(_link("norm", "norm", (cfg.num_features,)))
    if cfg.num_classes:
        out.append(_link("head.fc", "dense", (cfg.num_features, cfg.num_classes)))
    return out
