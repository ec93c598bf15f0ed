"""create_model: a named preset, keyword overrides, optional weights."""
from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp
from flax import nnx

from vit_common import get_config, load_canonical

from .models import VisionTransformer
from .weights import load_canonical_


def create_model(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    rngs: nnx.Rngs | None = None,
    dtype=jnp.float32,
    **overrides: Any,
) -> VisionTransformer:
    """Build `name` (timm's preset names and keyword overrides), in eval mode.

    The config is validated before anything is allocated. `checkpoint` may be a canonical .npz
    or a timm-named state dict (.safetensors, .pt, .pth). `dtype` is the compute dtype.
    """
    cfg = get_config(name, **overrides)
    weights = load_canonical(checkpoint, cfg) if checkpoint is not None else None
    model = VisionTransformer(cfg, dtype=dtype, rngs=rngs if rngs is not None else nnx.Rngs(0))
    if weights is not None:
        load_canonical_(model, weights)
    model.eval()
    return model
