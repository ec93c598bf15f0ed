"""Recognise the weight layouts found in the wild and bring them to canonical names.

Google .npz files (vision_transformer before and after Linen, big_vision) map name to name;
PyTorch state dicts (timm, HuggingFace transformers) are brought to timm's names, which
`TIMM.import_` turns into canonical arrays once the architecture is known.
"""
from __future__ import annotations

import re

import numpy as np

from .checkpoint_io import CheckpointError
from .layout import Weights

# Per-block module names: vision_transformer's Linen models and big_vision number modules per
# type; its pre-Linen models (our canonical names) numbered them across the block.
_LINEN_TO_CANONICAL = {
    "LayerNorm_0": "LayerNorm_0",
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}
_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/([^/]+)/(.*)$")


LAYOUT_NAMES = {
    "canonical": "Google vision_transformer, pre-Linen names (canonical)",
    "linen": "Google vision_transformer, Linen names",
    "big_vision": "Google big_vision",
    "timm": "timm state dict",
    "hf": "HuggingFace transformers state dict",
    "flax": "train.py run (orbax checkpoint of the Flax twin)",
    "torch_run": "train.py run (checkpoint of the PyTorch twin)",
    "swin_canonical": "canonical Swin layout",
    "swin_ms": "Microsoft Swin-Transformer state dict (or timm before 0.9)",
}
# Layouts read as timm-named PyTorch state dicts (their fused tensors need a config to split).
TORCH_LAYOUTS = ("timm", "hf", "swin_ms")


def is_swin(keys) -> bool:
    """Whether weight names (any layout) are a Swin Transformer's: it has relative position bias tables."""
    return any(k.endswith("relative_position_bias_table") for k in keys)


def detect_layout(keys) -> str:
    """'canonical' | 'linen' | 'big_vision' | 'timm' | 'hf' | 'swin_canonical' | 'swin_ms' for a set
    of weight names ('timm' covers timm's ViT and Swin)."""
    keys = set(keys)
    if any(k.startswith("params/") for k in keys):
        return "big_vision"
    if "embedding/kernel" in keys:
        if any("/MultiHeadDotProductAttention_0/" in k for k in keys if k.startswith("Transformer/")):
            return "linen"
        return "canonical"
    if "patch_embed/proj/kernel" in keys:
        return "swin_canonical"
    if "patch_embed.proj.weight" in keys:
        if is_swin(keys) and _microsoft_swin(keys):
            return "swin_ms"
        return "timm"
    if any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in keys):
        return "hf"
    sample = ", ".join(sorted(keys)[:6])
    raise CheckpointError(
        "unknown weight layout: expected Google ViT names (embedding/kernel, Transformer/...), big_vision "
        f"(params/...), timm (patch_embed.proj.weight, blocks.N... or layers.N...), HuggingFace (vit.embeddings...) "
        f"or canonical Swin names (patch_embed/proj/kernel, layers_N/...); found {sample}, ..."
    )


SWIN_BUFFERS = ("relative_position_index", "attn_mask")  # saved by Microsoft's code; both twins recompute them


def _microsoft_swin(keys) -> bool:
    """Microsoft's Swin (and timm's before 0.9): the patch merging ends stage i instead of starting
    stage i+1, so stage 0 has one; with a single stage, only the plain `head` tells."""
    merging = {int(m.group(1)) for k in keys if (m := re.match(r"^layers\.(\d+)\.downsample\.", k))}
    return 0 in merging if merging else "head.weight" in keys


def drop_swin_buffers(raw: Weights) -> Weights:
    return {k: v for k, v in raw.items() if not k.endswith(SWIN_BUFFERS)}


def microsoft_swin_to_timm(raw: Weights) -> Weights:
    """Microsoft's Swin state dict -> timm's names: the patch merging that ends stage i
    (`layers.{i}.downsample`) starts stage i+1 in timm, `head` becomes `head.fc`, and the saved
    `relative_position_index` / `attn_mask` buffers are dropped."""
    if "absolute_pos_embed" in raw:
        raise CheckpointError("this Swin checkpoint has an absolute position embedding (ape=True), which neither "
                              "timm's Swin nor these twins have")
    out: Weights = {}
    for name, value in drop_swin_buffers(raw).items():
        if m := re.match(r"^layers\.(\d+)\.downsample\.(.+)$", name):
            name = f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"
        elif name.startswith("head.") and not name.startswith("head.fc."):
            name = f"head.fc.{name[len('head.'):]}"
        out[name] = value
    return out


def google_to_canonical(raw: Weights) -> Weights:
    """vision_transformer (pre-Linen or Linen) and big_vision names -> canonical names."""
    layout = detect_layout(raw)
    if layout == "canonical":
        return dict(raw)
    weights = dict(raw)
    if layout == "big_vision":
        weights = {k.removeprefix("params/"): v for k, v in weights.items()}
        weights = _unscan_blocks(weights)
        if "pos_embedding" in weights:  # big_vision keeps it at the top level
            weights["Transformer/posembed_input/pos_embedding"] = weights.pop("pos_embedding")
    out = {}
    for name, value in weights.items():
        match = _BLOCK.match(name)
        if match:
            index, module, rest = match.groups()
            if module not in _LINEN_TO_CANONICAL:
                raise CheckpointError(f"unexpected module {module!r} in {name}")
            name = f"Transformer/encoderblock_{index}/{_LINEN_TO_CANONICAL[module]}/{rest}"
        out[name] = value
    return out


def _unscan_blocks(weights: Weights) -> Weights:
    """big_vision's scanned encoder stores one 'encoderblock' with a leading depth axis."""
    prefix = "Transformer/encoderblock/"
    scanned = {k: v for k, v in weights.items() if k.startswith(prefix)}
    if not scanned:
        return weights
    depths = {v.shape[0] for v in scanned.values()}
    if len(depths) != 1:
        raise CheckpointError(f"scanned encoder blocks disagree on depth: {sorted(depths)}")
    out = {k: v for k, v in weights.items() if not k.startswith(prefix)}
    for name, value in scanned.items():
        for i in range(value.shape[0]):
            out[f"Transformer/encoderblock_{i}/{name[len(prefix):]}"] = np.ascontiguousarray(value[i])
    return out


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


# Writers: canonical -> the other Google layouts (the inverse of google_to_canonical).
_CANONICAL_TO_LINEN = {v: k for k, v in _LINEN_TO_CANONICAL.items()}


def canonical_to_linen(weights: Weights) -> Weights:
    """vision_transformer's Linen names: modules numbered per type inside a block."""
    out = {}
    for name, value in weights.items():
        if match := _BLOCK.match(name):
            index, module, rest = match.groups()
            name = f"Transformer/encoderblock_{index}/{_CANONICAL_TO_LINEN[module]}/{rest}"
        out[name] = value
    return out


def canonical_to_big_vision(weights: Weights, scanned: bool = True) -> Weights:
    """big_vision: params/ prefix, Linen names, top-level pos_embedding, optionally scanned blocks.

    big_vision adds the position embedding before the class token is attached, so a table with
    entries for the class token cannot be written in this layout."""
    linen = canonical_to_linen(weights)
    table = linen.pop("Transformer/posembed_input/pos_embedding", None)
    if table is not None:
        linen["pos_embedding"] = table
    if scanned:
        blocks: dict[str, dict[int, np.ndarray]] = {}
        for name in [k for k in linen if k.startswith("Transformer/encoderblock_")]:
            index, rest = re.match(r"^Transformer/encoderblock_(\d+)/(.*)$", name).groups()
            blocks.setdefault(rest, {})[int(index)] = linen.pop(name)
        for rest, per_block in blocks.items():
            linen[f"Transformer/encoderblock/{rest}"] = np.stack([per_block[i] for i in sorted(per_block)])
    return {f"params/{k}": v for k, v in linen.items()}
