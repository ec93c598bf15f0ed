"""The link tables of the families whose canonical names follow timm's module paths: Swin and Eva.

Swin Transformers use timm's module structure with Flax's names and shapes (Google never
released Swin checkpoints, so there is no Google naming to follow): '/'-joined names where
- the path is timm's module path with '.' -> '/' and an index joined to its list by '_'
  (`layers.0.blocks.1.attn.qkv` -> `layers_0/blocks_1/attn/qkv`), so a reader who knows
  timm's Swin (or Microsoft's) finds every tensor where they expect it;
- the leaf and the shape are Flax's: dense `kernel` (in, out) and `bias`, convolution `kernel`
  HWIO, LayerNorm `scale` and `bias`; the relative position bias table is stored as is,
  ((2w-1)^2, heads), rows indexed by vit_common.config.windows.relative_position_index.

The q|k|v projection stays fused, as a (C, 3C) kernel whose output columns are [q | k | v],
each head-major (head h owns columns h*D .. h*D + D-1 of its part), which is how both timm and
Microsoft split it. Patch merging (`layers_{i}/downsample`, i >= 1) sits at the start of stage i,
as in timm since 0.9; Microsoft's checkpoints keep it at the end of stage i-1 (see
vit_common.formats.microsoft_swin).

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

Eva models (EVA-02, DINOv3) are named the same way, from timm's Eva module paths
(`blocks.0.attn.qkv` -> `blocks_0/attn/qkv`).
"""
from __future__ import annotations

from ..config import SwinConfig
from .tables import Link


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


def eva_links(cfg) -> list[Link]:
    """Every parameterised module of timm's Eva (EVA-02, DINOv3), in forward order.

    Canonical names follow timm's module structure as Swin's do (module path with '.' -> '/',
    indices joined by '_'; Flax leaves and shapes), so timm's names and these are one rename apart:
        patch_embed/proj/kernel        (p, p, in, C)
        cls_token                      (1, 1, C)
        reg_token                      (1, R, C)              registers (DINOv3)
        pos_embed                      (1, N (+ prefix), C)   absent without use_abs_pos_emb
        blocks_{i}/norm1/scale|bias
        blocks_{i}/attn/qkv/kernel     (C, 3C), no bias; columns [q | k | v], each head-major
        blocks_{i}/attn/q_bias, v_bias (C,)                   qkv_fused with qkv_bias (k has none)
        blocks_{i}/attn/q_proj|k_proj|v_proj/kernel (C, C)    qkv_fused=False; k_proj without bias
        blocks_{i}/attn/norm/scale|bias (C,)                  scale_attn_inner
        blocks_{i}/attn/proj/kernel    (C, C)
        blocks_{i}/gamma_1, gamma_2    (C,)                   LayerScale (init_values)
        blocks_{i}/mlp/fc1/kernel      (C, H), or (C, 2H) for the packed SwiGLU: [gate | value]
        blocks_{i}/mlp/fc1_g|fc1_x/kernel (C, H)              split SwiGLU
        blocks_{i}/mlp/norm/scale|bias (H,)                   scale_mlp
        blocks_{i}/mlp/fc2/kernel      (H, C)
        norm/scale|bias, fc_norm/scale|bias (C,)              one of the two (has_fc_norm)
        head/kernel                    (C, classes)
    The rotary tables are fixed (vit_common.config.rope) and stored nowhere, as in timm.
    """
    c, p, h = cfg.embed_dim, cfg.patch_size, cfg.mlp_dim
    out = [_link("patch_embed.proj", "conv", (p, p, cfg.in_chans, c))]
    if cfg.class_token:
        out.append(_link("cls_token", "array", (1, 1, c)))
    if cfg.num_reg_tokens:
        out.append(_link("reg_token", "array", (1, cfg.num_reg_tokens, c)))
    if cfg.use_abs_pos_emb:
        out.append(_link("pos_embed", "array", (1, cfg.num_pos_embed, c)))
    for i in range(cfg.depth):
        block = f"blocks.{i}"
        out.append(_link(f"{block}.norm1", "norm", (c,)))
        if cfg.qkv_fused:
            out.append(_link(f"{block}.attn.qkv", "dense", (c, 3 * c), bias=False))
            if cfg.qkv_bias:
                out += [_link(f"{block}.attn.q_bias", "array", (c,)), _link(f"{block}.attn.v_bias", "array", (c,))]
        else:
            out += [_link(f"{block}.attn.q_proj", "dense", (c, c), bias=cfg.qkv_bias),
                    _link(f"{block}.attn.k_proj", "dense", (c, c), bias=False),
                    _link(f"{block}.attn.v_proj", "dense", (c, c), bias=cfg.qkv_bias)]
        if cfg.scale_attn_inner:
            out.append(_link(f"{block}.attn.norm", "norm", (c,)))
        out.append(_link(f"{block}.attn.proj", "dense", (c, c)))
        if cfg.init_values is not None:
            out.append(_link(f"{block}.gamma_1", "array", (c,)))
        out.append(_link(f"{block}.norm2", "norm", (c,)))
        if cfg.mlp_kind == "swiglu":
            out += [_link(f"{block}.mlp.fc1_g", "dense", (c, h)), _link(f"{block}.mlp.fc1_x", "dense", (c, h))]
        else:
            out.append(_link(f"{block}.mlp.fc1", "dense", (c, 2 * h if cfg.mlp_kind == "swiglu_packed" else h)))
        if cfg.scale_mlp:
            out.append(_link(f"{block}.mlp.norm", "norm", (h,)))
        out.append(_link(f"{block}.mlp.fc2", "dense", (h, c)))
        if cfg.init_values is not None:
            out.append(_link(f"{block}.gamma_2", "array", (c,)))
    out.append(_link("fc_norm" if cfg.has_fc_norm else "norm", "norm", (c,)))
    if cfg.num_classes:
        out.append(_link("head", "dense", (c, cfg.num_classes)))
    return out
