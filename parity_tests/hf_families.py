"""Hugging Face transformers' DINOv2, CLIP, SigLIP and AIMv2 vision models as independent references.

Two jobs, both test helpers (the full converter for these names is issue 16's):
- `to_timm(family, state_dict)`: an HF model's in-memory state dict in timm's names for the
  VisionTransformer that timm builds for the family, so it loads strictly into both twins;
- `hf_model(family, ...)`: the HF model of a family for a set of sizes, used with random weights
  (small) or on the meta device to count a released size's parameters.
"""
from __future__ import annotations

import re

import numpy as np
import torch
import transformers

FAMILIES = ("dinov2", "dinov2_reg", "clip", "siglip", "aimv2")


def hf_model(family: str, *, hidden: int, layers: int, heads: int, mlp: int, patch: int, img: int,
             act: str | None = None, registers: int = 0, swiglu: bool = False, map_head: bool = True,
             eps: float | None = None) -> torch.nn.Module:
    """The family's HF vision model (eager attention, so attention weights come back)."""
    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, patch_size=patch,
                  image_size=img, attn_implementation="eager")
    if act is not None:
        common["hidden_act"] = act
    if eps is not None:
        common["layer_norm_eps" if family != "aimv2" else "rms_norm_eps"] = eps
    if family == "dinov2":
        # mlp_ratio (an int in HF) drives the width: plain MLP hidden * ratio; SwiGLU two thirds of it, rounded to 8.
        return transformers.Dinov2Model(transformers.Dinov2Config(**common, mlp_ratio=mlp // hidden,
                                                                  use_swiglu_ffn=swiglu))
    if family == "dinov2_reg":
        return transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(
            **common, mlp_ratio=mlp // hidden, use_swiglu_ffn=swiglu, num_register_tokens=registers))
    if family == "clip":
        return transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**common, intermediate_size=mlp))
    if family == "siglip":
        return transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
            **common, intermediate_size=mlp, vision_use_head=map_head))
    if family == "aimv2":
        return transformers.Aimv2VisionModel(transformers.Aimv2VisionConfig(**common, intermediate_size=mlp,
                                                                            use_head=False))
    raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")


# HF module names -> timm's, per family (regex, replacement), applied in order.
_BLOCKS = {
    "dinov2": r"^encoder\.layer\.(\d+)\.", "dinov2_reg": r"^encoder\.layer\.(\d+)\.",
    "clip": r"^encoder\.layers\.(\d+)\.", "siglip": r"^encoder\.layers\.(\d+)\.", "aimv2": r"^encoder\.layers\.(\d+)\.",
}
_RENAMES = [
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),  # DINOv2
    (r"^embeddings\.patch_embedding\.", "patch_embed.proj."),  # CLIP, SigLIP
    (r"^embeddings\.patch_embed\.", "patch_embed.proj."),  # AIMv2
    (r"^embeddings\.rms_norm\.", "patch_embed.norm."),
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.register_tokens$", "reg_token"),
    (r"^pre_layrnorm\.", "norm_pre."),
    (r"^(blocks\.\d+)\.(attention|self_attn)\.(o_proj|out_proj)\.", r"\1.attn.proj."),
    (r"\.layer_scale(\d)\.lambda1$", r".ls\1.gamma"),
    (r"\.(layer_norm|rms_norm)(\d)\.", r".norm\2."),
    (r"\.ffn\.gate_proj\.", ".mlp.fc1_g."), (r"\.ffn\.up_proj\.", ".mlp.fc1_x."), (r"\.ffn\.down_proj\.", ".mlp.fc2."),
    (r"\.mlp\.down_proj\.", ".mlp.fc2."),  # DINOv2 SwiGLU (gate_proj | up_proj are packed below)
    (r"^(layernorm|post_layernorm|rms_norm)\.", "norm."),
    (r"^head\.probe$", "attn_pool.latent"),
    (r"^head\.attention\.out_proj\.", "attn_pool.proj."),
    (r"^head\.layernorm\.", "attn_pool.norm."),
    (r"^head\.mlp\.", "attn_pool.mlp."),
]


def to_timm(family: str, state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """An HF model's state dict in timm's names and layout (what timm's own converters produce)."""
    sd = {k: v.detach().numpy().copy() for k, v in state_dict.items()}
    sd.pop("embeddings.mask_token", None)  # DINOv2's masked-image-modelling token: no part of the encoder
    sd.pop("embeddings.position_ids", None)
    out: dict[str, np.ndarray] = {}
    pos = sd.pop("embeddings.position_embeddings", None)  # DINOv2: (1, 1 + N, C)
    if pos is None:
        pos = sd.pop("embeddings.position_embedding.weight")[None]  # CLIP (1 + N), SigLIP / AIMv2 (N)
    if family == "dinov2_reg":  # timm: no_embed_class, the class token's entry folded into the token
        sd["embeddings.cls_token"] = sd["embeddings.cls_token"] + pos[:, :1]
        pos = pos[:, 1:]
    out["pos_embed"] = pos
    if "embeddings.class_embedding" in sd:  # CLIP
        out["cls_token"] = sd.pop("embeddings.class_embedding")[None, None]
    if "head.attention.in_proj_weight" in sd:  # SigLIP's MAP head: torch MultiheadAttention, q | k | v
        w, b = sd.pop("head.attention.in_proj_weight"), sd.pop("head.attention.in_proj_bias")
        c = w.shape[1]
        out.update({"attn_pool.q.weight": w[:c], "attn_pool.q.bias": b[:c],
                    "attn_pool.kv.weight": w[c:], "attn_pool.kv.bias": b[c:]})
    fused: dict[str, dict[str, np.ndarray]] = {}
    for name, value in sd.items():
        name = re.sub(_BLOCKS[family], r"blocks.\1.", name)
        if m := re.match(r"^(blocks\.\d+)\.(?:attention|self_attn)\.([qkv])_proj\.(weight|bias)$", name):
            fused.setdefault(f"{m[1]}.attn.qkv.{m[3]}", {})[m[2]] = value
            continue
        if m := re.match(r"^(blocks\.\d+)\.mlp\.(gate|up)_proj\.(weight|bias)$", name):  # SwiGLUPacked fc1
            fused.setdefault(f"{m[1]}.mlp.fc1.{m[3]}", {})[m[2]] = value
            continue
        for pattern, replacement in _RENAMES:
            name = re.sub(pattern, replacement, name)
        out[name] = value
    order = {"attn.qkv": ("q", "k", "v"), "mlp.fc1": ("gate", "up")}  # timm: act(first half) * second half
    for name, parts in fused.items():
        keys = next(v for k, v in order.items() if k in name)
        out[name] = np.concatenate([parts[k] for k in keys], axis=0)
    return out


def perturb_(model: torch.nn.Module, seed: int, scale: float = 0.1) -> torch.nn.Module:
    """HF initialises biases to 0, norms and LayerScales to 1 (or 1e-5): noise makes every entry count."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()
