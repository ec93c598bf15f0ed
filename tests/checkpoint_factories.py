"""Synthetic checkpoints in every layout found in the wild: the official names, shapes and
dtypes, random values. Numpy only. Each builder starts from canonical weights, so a reader's
output can be compared with them bit for bit."""
from __future__ import annotations

import re

import numpy as np

from vit_common import TIMM, ViTConfig, canonical_shapes

_CANONICAL_TO_LINEN = {
    "LayerNorm_0": "LayerNorm_0", "MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
    "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0",
}


def random_canonical(cfg: ViTConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (0.05 * rng.standard_normal(s)).astype(np.float32) for k, s in canonical_shapes(cfg).items()}


def as_linen(w: dict) -> dict:
    """vision_transformer's Linen models: modules numbered per type inside a block."""
    def rename(name):
        m = re.match(r"^(Transformer/encoderblock_\d+)/([^/]+)/(.*)$", name)
        return f"{m[1]}/{_CANONICAL_TO_LINEN[m[2]]}/{m[3]}" if m else name
    return {rename(k): v for k, v in w.items()}


def as_opt_target(w: dict) -> dict:
    """Old vision_transformer training checkpoints wrap the parameters in the optimizer."""
    return {f"opt/target/{k}": v for k, v in w.items()}


def as_big_vision(w: dict, scanned: bool = True) -> dict:
    """big_vision: params/ prefix, Linen names, top-level pos_embedding, optionally scanned blocks."""
    linen = as_linen(w)
    if "Transformer/posembed_input/pos_embedding" in linen:
        linen["pos_embedding"] = linen.pop("Transformer/posembed_input/pos_embedding")
    if scanned:
        blocks = {}
        for k in [k for k in linen if k.startswith("Transformer/encoderblock_")]:
            i, rest = re.match(r"^Transformer/encoderblock_(\d+)/(.*)$", k).groups()
            blocks.setdefault(rest, {})[int(i)] = linen.pop(k)
        for rest, per_layer in blocks.items():
            linen[f"Transformer/encoderblock/{rest}"] = np.stack([per_layer[i] for i in sorted(per_layer)])
    return {f"params/{k}": v for k, v in linen.items()}


def as_hf(w: dict, cfg: ViTConfig) -> dict:
    """HuggingFace transformers ViTForImageClassification / DeiTForImageClassificationWithTeacher."""
    sd = TIMM.export(w, cfg)
    root = "deit" if cfg.distilled else "vit"
    out = {}
    top = {"cls_token": "embeddings.cls_token", "dist_token": "embeddings.distillation_token",
           "pos_embed": "embeddings.position_embeddings", "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias"}
    heads = {"head": "cls_classifier" if cfg.distilled else "classifier", "head_dist": "distillation_classifier"}
    block = {"norm1": "layernorm_before", "attn.proj": "attention.output.dense", "norm2": "layernorm_after",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    for name, value in sd.items():
        if name in top:
            out[f"{root}.{top[name]}"] = value
        elif (m := re.match(r"^(head|head_dist)\.(weight|bias)$", name)):
            out[f"{heads[m[1]]}.{m[2]}"] = value
        elif (m := re.match(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", name)):
            for part, chunk in zip(("query", "key", "value"), np.split(value, 3)):
                out[f"{root}.encoder.layer.{m[1]}.attention.attention.{part}.{m[2]}"] = chunk
        elif (m := re.match(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$", name)):
            out[f"{root}.encoder.layer.{m[1]}.{block[m[2]]}.{m[3]}"] = value
        else:
            raise KeyError(name)
    return out
