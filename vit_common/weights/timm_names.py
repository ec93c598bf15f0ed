"""PyTorch (timm) parameter layout <-> canonical layout, in numpy.

Lives here rather than in vit_torch so that a timm state dict read from .safetensors can be
converted without importing torch.
"""
from __future__ import annotations

import numpy as np

from .framework import FrameworkLayout, split_fused
from .tables import Link


class TimmLayout(FrameworkLayout):
    """nn.Linear weights are (out, in), conv weights OIHW, LayerNorm scale is 'weight'."""

    weight_name = "weight"
    norm_scale_name = "weight"

    def encode(self, link: Link, arrays: list[np.ndarray], part: str) -> np.ndarray:
        kind = link.kind
        if kind == "dense":  # several canonical kernels: their output columns side by side
            return np.concatenate(arrays, axis=-1) if part == "bias" else np.concatenate(arrays, axis=-1).T
        if kind in ("array", "norm") or part == "bias" and kind in ("conv", "heads_out"):
            return arrays[0]
        if kind == "conv":
            return arrays[0].transpose(3, 2, 0, 1)  # HWIO -> OIHW
        if kind == "heads_in":  # several (C, H, D) kernels -> one (n*H*D, C) weight
            if part == "bias":
                return np.concatenate([a.reshape(-1) for a in arrays])
            return np.concatenate([a.reshape(a.shape[0], -1).T for a in arrays], axis=0)
        if kind == "heads_out":  # (H, D, C) -> (C, H*D)
            return arrays[0].reshape(-1, arrays[0].shape[-1]).T
        raise ValueError(f"unknown link kind {kind}")

    def decode(self, link: Link, value: np.ndarray, part: str) -> list[np.ndarray]:
        kind, n = link.kind, len(link.canonical)
        if kind == "dense":
            return split_fused(value, n, 0) if part == "bias" else [np.ascontiguousarray(w.T) for w in split_fused(value, n, 0)]
        if kind in ("array", "norm") or part == "bias" and kind in ("conv", "heads_out"):
            return [value]
        if kind == "conv":
            return [np.ascontiguousarray(value.transpose(2, 3, 1, 0))]
        if kind == "heads_in":
            heads = link.shape[1:]
            if part == "bias":
                return [b.reshape(heads) for b in split_fused(value, n, 0)]
            return [np.ascontiguousarray(w.T).reshape(link.shape) for w in split_fused(value, n, 0)]
        if kind == "heads_out":
            return [np.ascontiguousarray(value.T).reshape(link.shape)]
        raise ValueError(f"unknown link kind {kind}")


TIMM = TimmLayout()
