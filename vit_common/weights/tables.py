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

Swin and Eva models: module_tables.py.
"""
from __future__ import annotations

import dataclasses

from ..config import ViTConfig

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
    if not cfg.has_fc_norm:
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
    if cfg.has_fc_norm:
        out.append(_norm("fc_norm", "fc_norm", cfg))
    if cfg.representation_size:
        out.append(Link("pre_logits.fc", "dense", ("pre_logits",), (c, cfg.representation_size)))
    if cfg.num_classes:
        out.append(Link("head", "dense", ("head",), (cfg.num_features, cfg.num_classes)))
        if cfg.distilled:
            out.append(Link("head_dist", "dense", ("head_dist",), (c, cfg.num_classes)))
    return out
