"""Google's released ViT checkpoints (.npz): vision_transformer before and after Linen, and big_vision.

Read to canonical names (vision_transformer's pre-Linen names are the canonical layout) and
written back (canonical_to_linen, canonical_to_big_vision).
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import CheckpointError
from ..weights import Weights
from .base import Layout

# Per-block module names: vision_transformer's Linen models and big_vision number modules per
# type; its pre-Linen models (our canonical names) numbered them across the block.
_LINEN_TO_CANONICAL = {
    "LayerNorm_0": "LayerNorm_0",
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}
_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/([^/]+)/(.*)$")


def _is_linen(keys: set[str]) -> bool:
    return "embedding/kernel" in keys and any(
        "/MultiHeadDotProductAttention_0/" in k for k in keys if k.startswith("Transformer/"))


def linen_to_canonical(raw: Weights) -> Weights:
    """vision_transformer's Linen names (modules numbered per type in a block) -> canonical names."""
    out = {}
    for name, value in raw.items():
        if match := _BLOCK.match(name):
            index, module, rest = match.groups()
            if module not in _LINEN_TO_CANONICAL:
                raise CheckpointError(f"unexpected module {module!r} in {name}")
            name = f"Transformer/encoderblock_{index}/{_LINEN_TO_CANONICAL[module]}/{rest}"
        out[name] = value
    return out


def big_vision_to_canonical(raw: Weights) -> Weights:
    """big_vision: params/ prefix, Linen names, top-level pos_embedding, maybe scanned blocks."""
    weights = {k.removeprefix("params/"): v for k, v in raw.items()}
    weights = _unscan_blocks(weights)
    if "pos_embedding" in weights:  # big_vision keeps it at the top level
        weights["Transformer/posembed_input/pos_embedding"] = weights.pop("pos_embedding")
    return linen_to_canonical(weights)


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


BIG_VISION = Layout("big_vision", "Google big_vision", "params/...",
                    lambda keys: any(k.startswith("params/") for k in keys), big_vision_to_canonical)
LINEN = Layout("linen", "Google vision_transformer, Linen names", "Transformer/encoderblock_N/MlpBlock_0/...",
               _is_linen, linen_to_canonical)
CANONICAL = Layout("canonical", "Google vision_transformer, pre-Linen names (canonical)",
                   "embedding/kernel, Transformer/...", lambda keys: "embedding/kernel" in keys)
LAYOUTS = (BIG_VISION, LINEN, CANONICAL)  # in the order they must be tried
GOOGLE_LAYOUTS = tuple(layout.name for layout in LAYOUTS)  # (this project's canonical .npz is one of them)


# Writers: canonical -> the other Google layouts (the inverse of the readers above).
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
