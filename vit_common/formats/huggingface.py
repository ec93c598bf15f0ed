"""Hugging Face transformers state dicts (ViTModel, ViTForImageClassification, DeiT...), read to timm's names."""
from __future__ import annotations

import re

import numpy as np

from ..errors import CheckpointError
from ..weights import Weights
from .base import Layout

# HuggingFace transformers (ViTModel / ViTForImageClassification / DeiT...) -> timm names.
_HF_BLOCK = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.distillation_token": "dist_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "pooler.dense.weight": "pre_logits.fc.weight",  # ViTModel's pooler: Dense + tanh on the class token
    "pooler.dense.bias": "pre_logits.fc.bias",
}
_HF_HEADS = {
    "classifier": "head", "cls_classifier": "head", "distillation_classifier": "head_dist",
}


def hf_to_timm(raw: Weights) -> Weights:
    """HuggingFace ViT/DeiT names -> timm names; separate query/key/value become one qkv."""
    out: Weights = {}
    qkv: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    unknown = []
    for name, value in raw.items():
        base = re.sub(r"^(vit|deit)\.", "", name)
        head, _, leaf = name.rpartition(".")
        if base in _HF_TOP:
            out[_HF_TOP[base]] = value
        elif head in _HF_HEADS:
            out[f"{_HF_HEADS[head]}.{leaf}"] = value
        elif m := re.match(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", base):
            i, module, leaf = m.groups()
            if m2 := re.match(r"^attention\.attention\.(query|key|value)$", module):
                qkv.setdefault((i, leaf), {})[m2.group(1)] = value
            elif module in _HF_BLOCK:
                out[f"blocks.{i}.{_HF_BLOCK[module]}.{leaf}"] = value
            else:
                unknown.append(name)
        else:
            unknown.append(name)
    for (i, leaf), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"block {i}: attention {leaf} needs query, key and value; found {sorted(parts)}")
        out[f"blocks.{i}.attn.qkv.{leaf}"] = np.concatenate([parts["query"], parts["key"], parts["value"]])
    if unknown:
        raise CheckpointError(f"HuggingFace checkpoint has names this converter does not know: {unknown[:8]}")
    return out


LAYOUT = Layout("hf", "HuggingFace transformers state dict", "vit.embeddings...",
                lambda keys: any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in keys),
                hf_to_timm, names="timm")
