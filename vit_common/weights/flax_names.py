"""The Flax twin's parameter layout <-> canonical layout, in numpy.

Flax already stores kernels as (in, out) and convolutions as HWIO, so the only work is splitting
the fused q|k|v (and MAP head k|v) projections into per-head kernels. Lives here rather than in
vit_jax so that training checkpoints can be converted without the Flax twin.
"""
from __future__ import annotations

import numpy as np

from .framework import FrameworkLayout, split_fused
from .tables import Link


class FlaxLayout(FrameworkLayout):
    weight_name = "kernel"
    norm_scale_name = "scale"

    def encode(self, link: Link, arrays: list[np.ndarray], part: str) -> np.ndarray:
        if link.kind == "heads_in":  # several (C, H, D) -> (C, n*H*D); biases (H, D) -> (n*H*D,)
            if part == "bias":
                return np.concatenate([a.reshape(-1) for a in arrays])
            return np.concatenate([a.reshape(a.shape[0], -1) for a in arrays], axis=1)
        if link.kind == "heads_out" and part == "kernel":  # (H, D, C) -> (H*D, C)
            return arrays[0].reshape(-1, arrays[0].shape[-1])
        if link.kind == "dense" and len(arrays) > 1:  # kernels side by side (SwiGLUPacked's fc1)
            return np.concatenate(arrays, axis=-1)
        return arrays[0]

    def decode(self, link: Link, value: np.ndarray, part: str) -> list[np.ndarray]:
        n = len(link.canonical)
        if link.kind == "heads_in":
            if part == "bias":
                return [b.reshape(link.shape[1:]) for b in split_fused(value, n, 0)]
            return [k.reshape(link.shape) for k in split_fused(value, n, 1)]
        if link.kind == "heads_out" and part == "kernel":
            return [value.reshape(link.shape)]
        if link.kind == "dense" and n > 1:
            return split_fused(value, n, value.ndim - 1)
        return [value]


FLAX = FlaxLayout()


def flatten_params(tree) -> dict[str, np.ndarray]:
    """A nested parameter dict (nnx.to_pure_dict, an orbax restore) -> '.'-joined flat names."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": v for name, v in flatten_params(value).items()})
        else:
            flat[str(key)] = np.asarray(value)
    return flat


def nest_params(flat) -> dict:
    """The inverse of flatten_params (block indices stay strings, as orbax restores them)."""
    nested: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = np.asarray(value)
    return nested
