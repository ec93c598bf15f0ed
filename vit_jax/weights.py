"""The Flax twin's parameters <-> the canonical layout.

Flax already stores kernels as (in, out) and convolutions as HWIO, so the only work is splitting
the fused q|k|v (and MAP head k|v) projections into per-head kernels.
"""
from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from vit_common import Weights, check_weights
from vit_common.layout import FrameworkLayout, Link, split_fused

from .models import VisionTransformer


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
        return arrays[0]

    def decode(self, link: Link, value: np.ndarray, part: str) -> list[np.ndarray]:
        n = len(link.canonical)
        if link.kind == "heads_in":
            if part == "bias":
                return [b.reshape(link.shape[1:]) for b in split_fused(value, n, 0)]
            return [k.reshape(link.shape) for k in split_fused(value, n, 1)]
        if link.kind == "heads_out" and part == "kernel":
            return [value.reshape(link.shape)]
        return [value]


FLAX = FlaxLayout()


def _flat(state: nnx.State) -> dict[str, np.ndarray]:
    return {".".join(map(str, path)): np.asarray(var[...]) for path, var in nnx.to_flat_state(state)}


def to_canonical(model: VisionTransformer) -> Weights:
    """Canonical weights of a model."""
    return FLAX.import_(_flat(nnx.state(model, nnx.Param)), model.cfg)


def grads_to_canonical(grads: nnx.State, cfg) -> Weights:
    """A gradient State (as returned by nnx.grad on the model) mapped to canonical names."""
    return FLAX.import_(_flat(grads), cfg)


def load_canonical_(model: VisionTransformer, weights: Mapping[str, np.ndarray]) -> VisionTransformer:
    """Copy canonical weights into the model in place (strict: every entry, no extras)."""
    check_weights(weights, model.cfg, what="weights")
    values = FLAX.export(weights, model.cfg)
    state = nnx.state(model, nnx.Param)
    for path, var in nnx.to_flat_state(state):
        name = ".".join(map(str, path))
        var[...] = jnp.asarray(values[name], dtype=var[...].dtype)
    nnx.update(model, state)
    return model
