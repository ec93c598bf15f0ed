"""The link tables: each parameterised module of the twins tied to its canonical entries, per family.

ViT and DeiT use Google's released checkpoint names with Flax's shapes.

Entries of vit_base_patch16_224, e.g.:
    embedding/kernel                                              (16, 16, 3, 768)
    cls                                                           (1, 1, 768)
    Transformer/posembed_input/pos_embedding                      (1, 197, 768)
    Transformer/encoderblock_0/LayerNorm_0/scale                  (768,)
    Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel   (768, 12, 64)
    Transformer/encoderblock_0/MultiHeadDotProductAttention_1/out/kernel     (12, 64, 768)
    Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel          (768, 3072)
    Transformer/encoder_norm/scale                                (768,)
    head/kernel                                                   (768, 1000)

Entries the later ViT families add (C = embed_dim, R = reg_tokens, H = cfg.mlp_hidden):
    reg                                                  (1, R, C)  register tokens (timm reg_token), after `cls`
    embedding_norm/scale (+ /bias for layernorm)         (C,)  norm of the patch embedding (AIMv2; timm
                                                         patch_embed.norm); `embedding/bias` is absent
                                                         with pre_norm (CLIP: a conv without bias)
    Transformer/pre_norm/scale, /bias                    (C,)  norm before the blocks (CLIP; timm norm_pre)
    Transformer/encoderblock_{i}/LayerScale_1/scale      (C,)  LayerScale after attention (timm ls1.gamma)
    Transformer/encoderblock_{i}/LayerScale_2/scale      (C,)  LayerScale after the MLP (timm ls2.gamma)
    Transformer/encoderblock_{i}/MlpBlock_3/gate/kernel  (C, H)  SwiGLU: the branch through the activation,
                                                         act(x @ gate) * (x @ Dense_0) @ Dense_1; timm's
                                                         SwiGLU fc1_g, or the first half of SwiGLUPacked's
                                                         fc1 (whose second half is Dense_0), so both SwiGLU
                                                         layouts share these names; Dense_0 (C, H), Dense_1 (H, C)
    .../out/bias, MlpBlock_3/*/bias                      absent with proj_bias=False (AIMv2)
    any norm with norm_layer='rmsnorm'                   scale only, no bias

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
"""
from __future__ import annotations

import dataclasses

from ..config import SwinConfig, ViTConfig

# Kinds of links and the canonical entries each owns (prefix + suffix).
#   array           one array stored as is (tokens, position embedding)
#   conv            kernel (kh, kw, in, out) + bias (out,)
#   dense           kernel (in, out) + bias (out,)
#   norm            scale (dim,) + bias (dim,); scale only for RMSNorm (bias=False)
#   dense with several canonical prefixes: one module whose output columns are their kernels side by side
#   heads_in        one fused module holding several (C, heads, head_dim) projections (q|k|v)
#   heads_out       kernel (heads, head_dim, C) + bias (C,)


@dataclasses.dataclass(frozen=True)
class Link:
    module: str  # the twins' module path, e.g. 'blocks.3.attn.qkv'
    kind: str
    canonical: tuple[str, ...]  # canonical prefixes (one per fused projection), or the array key
    shape: tuple[int, ...]  # kernel shape (array shape for 'array', (dim,) for 'norm')
    bias: bool = True

    def canonical_shapes(self) -> dict[str, tuple[int, ...]]:
        if self.kind == "array":
            return {self.canonical[0]: self.shape}
        if self.kind == "norm":
            shapes = {f"{self.canonical[0]}/scale": self.shape}
            if self.bias:
                shapes[f"{self.canonical[0]}/bias"] = self.shape
            return shapes
        shapes = {}
        for prefix in self.canonical:
            shapes[f"{prefix}/kernel"] = self.shape
            if self.bias:
                if self.kind == "heads_in":
                    shapes[f"{prefix}/bias"] = self.shape[1:]
                else:
                    shapes[f"{prefix}/bias"] = self.shape[-1:]
        return shapes


def _attention_links(module: str, prefix: str, cfg: ViTConfig, qkv_bias: bool, proj_bias: bool = True) -> list[Link]:
    heads = (cfg.embed_dim, cfg.num_heads, cfg.head_dim)
    names = tuple(f"{prefix}/{p}" for p in ("query", "key", "value"))
    return [
        Link(f"{module}.qkv", "heads_in", names, heads, qkv_bias),
        Link(f"{module}.proj", "heads_out", (f"{prefix}/out",), (cfg.num_heads, cfg.head_dim, cfg.embed_dim),
             proj_bias),
    ]


def _mlp_links(module: str, prefix: str, cfg: ViTConfig, kind: str = "mlp", bias: bool = True) -> list[Link]:
    c, h = cfg.embed_dim, cfg.mlp_dim if kind == "mlp" else cfg.mlp_hidden
    if kind == "swiglu":  # timm SwiGLU: fc1_g (through the activation), fc1_x, fc2
        first = [Link(f"{module}.fc1_g", "dense", (f"{prefix}/gate",), (c, h), bias),
                 Link(f"{module}.fc1_x", "dense", (f"{prefix}/Dense_0",), (c, h), bias)]
    elif kind == "swiglu_packed":  # timm SwiGLUPacked: fc1's output is [gate | x]
        first = [Link(f"{module}.fc1", "dense", (f"{prefix}/gate", f"{prefix}/Dense_0"), (c, h), bias)]
    else:
        first = [Link(f"{module}.fc1", "dense", (f"{prefix}/Dense_0",), (c, h), bias)]
    return first + [Link(f"{module}.fc2", "dense", (f"{prefix}/Dense_1",), (h, c), bias)]


def _norm(module: str, name: str, cfg: ViTConfig, kind: str | None = None) -> Link:
    """A norm of the model's kind: LayerNorm (scale, bias) or RMSNorm (scale only)."""
    return Link(module, "norm", (name,), (cfg.embed_dim,), bias=(kind or cfg.norm_layer) == "layernorm")


def vit_links(cfg: ViTConfig) -> list[Link]:
    """Every parameterised module of a ViT / DeiT, in forward order."""
    c, p = cfg.embed_dim, cfg.patch_size
    out = [Link("patch_embed.proj", "conv", ("embedding",), (p, p, cfg.in_chans, c), bias=not cfg.pre_norm)]
    if cfg.embed_norm_layer:
        out.append(_norm("patch_embed.norm", "embedding_norm", cfg, cfg.embed_norm_layer))
    if cfg.class_token:
        out.append(Link("cls_token", "array", ("cls",), (1, 1, c)))
    if cfg.distilled:
        out.append(Link("dist_token", "array", ("dist",), (1, 1, c)))
    if cfg.reg_tokens:
        out.append(Link("reg_token", "array", ("reg",), (1, cfg.reg_tokens, c)))
    if cfg.pos_embed == "learn":
        out.append(Link("pos_embed", "array", ("Transformer/posembed_input/pos_embedding",), (1, cfg.num_pos_embed, c)))
    if cfg.pre_norm:
        out.append(_norm("norm_pre", "Transformer/pre_norm", cfg))
    for i in range(cfg.depth):
        block = f"Transformer/encoderblock_{i}"
        out.append(_norm(f"blocks.{i}.norm1", f"{block}/LayerNorm_0", cfg))
        out += _attention_links(f"blocks.{i}.attn", f"{block}/MultiHeadDotProductAttention_1", cfg, cfg.qkv_bias,
                                cfg.proj_bias)
        if cfg.init_values is not None:
            out.append(Link(f"blocks.{i}.ls1.gamma", "array", (f"{block}/LayerScale_1/scale",), (c,)))
        out.append(_norm(f"blocks.{i}.norm2", f"{block}/LayerNorm_2", cfg))
        out += _mlp_links(f"blocks.{i}.mlp", f"{block}/MlpBlock_3", cfg, cfg.mlp_layer, cfg.proj_bias)
        if cfg.init_values is not None:
            out.append(Link(f"blocks.{i}.ls2.gamma", "array", (f"{block}/LayerScale_2/scale",), (c,)))
    if not cfg.use_fc_norm:
        out.append(_norm("norm", "Transformer/encoder_norm", cfg))
    if cfg.global_pool == "map":
        head = "MAPHead_0"
        attn = f"{head}/MultiHeadDotProductAttention_0"
        heads = (c, cfg.num_heads, cfg.head_dim)
        out += [
            Link("attn_pool.latent", "array", (f"{head}/probe",), (1, 1, c)),
            Link("attn_pool.q", "heads_in", (f"{attn}/query",), heads),
            Link("attn_pool.kv", "heads_in", (f"{attn}/key", f"{attn}/value"), heads),
            Link("attn_pool.proj", "heads_out", (f"{attn}/out",), (cfg.num_heads, cfg.head_dim, c)),
            _norm("attn_pool.norm", f"{head}/LayerNorm_0", cfg),
        ]
        out += _mlp_links("attn_pool.mlp", f"{head}/MlpBlock_0", cfg)
    if cfg.use_fc_norm:
        out.append(_norm("fc_norm", "fc_norm", cfg))
    if cfg.representation_size:
        out.append(Link("pre_logits.fc", "dense", ("pre_logits",), (c, cfg.representation_size)))
    if cfg.num_classes:
        out.append(Link("head", "dense", ("head",), (cfg.num_features, cfg.num_classes)))
        if cfg.distilled:
            out.append(Link("head_dist", "dense", ("head_dist",), (c, cfg.num_classes)))
    return out


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
        norm/scale|bias, fc_norm/scale|bias (C,)              one of the two (use_fc_norm)
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
