"""Hugging Face transformers state dicts (ViT, DeiT, Swin), read to timm's names.

Two spellings exist: the Hub's (what save_pretrained writes, e.g. `encoder.layer.N.attention.
attention.query`) and transformers 5's in-memory modules (what `model.state_dict()` gives, e.g.
`layers.N.attention.q_proj`). Both are read.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import CheckpointError
from ..weights import Weights
from .base import Layout, is_swin

# Inside one transformer block (ViT's layer or Swin's block): HF module -> timm module.
_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1", "mlp.fc1": "mlp.fc1",
    "output.dense": "mlp.fc2", "mlp.fc2": "mlp.fc2",
}
# ViT's `attention.attention.query`, Swin's `attention.self.query`, transformers 5's `attention.q_proj`.
_QKV_PART = re.compile(r"^attention\.(?:attention\.|self\.)?(query|key|value|q_proj|k_proj|v_proj)$")
_PART = {"q_proj": "query", "k_proj": "key", "v_proj": "value"}
_SWIN_TABLE = re.compile(r"^attention\.(?:self|relative_position_bias)\.relative_position_bias_table$")

_VIT_TOP = {
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
_VIT_HEADS = {"classifier": "head", "cls_classifier": "head", "distillation_classifier": "head_dist"}
_SWIN_TOP = {
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "embeddings.norm.weight": "patch_embed.norm.weight",
    "embeddings.norm.bias": "patch_embed.norm.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "classifier.weight": "head.fc.weight",
    "classifier.bias": "head.fc.bias",
}


def _describe(block: str) -> str:
    """timm's 'blocks.1' -> 'block 1', 'layers.0.blocks.1' -> 'stage 0 block 1'."""
    stage, index = re.match(r"^(?:layers\.(\d+)\.)?blocks\.(\d+)$", block).groups()
    return f"stage {stage} block {index}" if stage is not None else f"block {index}"


class _Reader:
    """Collects timm names; query/key/value are gathered per block and fused into one qkv."""

    def __init__(self):
        self.out: Weights = {}
        self.qkv: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self.unknown: list[str] = []

    def block(self, timm_block: str, rest: str, value: np.ndarray) -> bool:
        """One entry of a block ('attention.self.query.weight' ...); False if not a block weight."""
        module, _, leaf = rest.rpartition(".")
        if leaf not in ("weight", "bias"):
            return False
        if m := _QKV_PART.match(module):
            part = _PART.get(m.group(1), m.group(1))
            self.qkv.setdefault((timm_block, leaf), {})[part] = value
        elif module in _BLOCK:
            self.out[f"{timm_block}.{_BLOCK[module]}.{leaf}"] = value
        else:
            return False
        return True

    def finish(self) -> Weights:
        for (block, leaf), parts in self.qkv.items():
            if set(parts) != {"query", "key", "value"}:
                raise CheckpointError(f"{_describe(block)}: attention {leaf} needs query, key and value; "
                                      f"found {sorted(parts)}")
            self.out[f"{block}.attn.qkv.{leaf}"] = np.concatenate([parts["query"], parts["key"], parts["value"]])
        if self.unknown:
            raise CheckpointError(f"HuggingFace checkpoint has names this converter does not know: {self.unknown[:8]}")
        return self.out


def hf_to_timm(raw: Weights) -> Weights:
    """HuggingFace ViT/DeiT names -> timm names; separate query/key/value become one qkv."""
    r = _Reader()
    for name, value in raw.items():
        base = re.sub(r"^(vit|deit)\.", "", name)
        head, _, leaf = name.rpartition(".")
        if base in _VIT_TOP:
            r.out[_VIT_TOP[base]] = value
        elif head in _VIT_HEADS:
            r.out[f"{_VIT_HEADS[head]}.{leaf}"] = value
        elif m := re.match(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)$", base):
            if not r.block(f"blocks.{m.group(1)}", m.group(2), value):
                r.unknown.append(name)
        else:
            r.unknown.append(name)
    return r.finish()


def hf_swin_to_timm(raw: Weights) -> Weights:
    """HuggingFace Swin names -> timm names. Like Microsoft's, HF's patch merging ends stage i
    (`layers.i.downsample`); timm's starts stage i+1."""
    if any(k.endswith("embeddings.position_embeddings") for k in raw):
        raise CheckpointError("this Swin checkpoint has an absolute position embedding (use_absolute_embeddings), "
                              "which neither timm's Swin nor these twins have")
    r = _Reader()
    for name, value in raw.items():
        base = name.removeprefix("swin.")
        if base in _SWIN_TOP:
            r.out[_SWIN_TOP[base]] = value
        elif m := re.match(r"^encoder\.layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)$", base):
            r.out[f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}.{m.group(3)}"] = value
        elif m := re.match(r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.+)$", base):
            block, rest = f"layers.{m.group(1)}.blocks.{m.group(2)}", m.group(3)
            if rest.endswith("relative_position_index"):
                continue  # a buffer; both twins recompute it
            if _SWIN_TABLE.match(rest):
                r.out[f"{block}.attn.relative_position_bias_table"] = value
            elif not r.block(block, rest, value):
                r.unknown.append(name)
        else:
            r.unknown.append(name)
    return r.finish()


def _is_hf(keys) -> bool:
    return any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in keys)


LAYOUT = Layout("hf", "HuggingFace transformers state dict", "vit.embeddings...",
                lambda keys: _is_hf(keys) and not is_swin(keys), hf_to_timm, names="timm")
SWIN_LAYOUT = Layout("hf_swin", "HuggingFace transformers Swin state dict", "swin.encoder.layers.N.blocks.M...",
                     lambda keys: _is_hf(keys) and is_swin(keys), hf_swin_to_timm, names="timm")
