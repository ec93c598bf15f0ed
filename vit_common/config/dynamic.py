"""Any image size at call time (timm's dynamic_img_size): how each checkpoint's source
interpolates its learned position table to the grid an image gives.

Every source resizes the table bicubically (corners not aligned); they differ in antialiasing
and in the step between samples. The rule is a config field (`pos_embed_interp`), set by the
reader from the file's source and overridable as a keyword:

  rule              antialias  step             computed by
  timm              yes        old / new        timm's resample_abs_pos_embed (its default)
  dinov2            no         M / (new + 0.1)  DINOv2's hub models without registers
                                                (interpolate_offset=0.1: a scale factor)
  dinov2_reg        yes        old / new        DINOv2's hub models with registers
  transformers      no         old / new        transformers' interpolate_pos_encoding (ViT,
                                                DeiT, CLIP, SigLIP, Dinov2Model)
  transformers_reg  yes        old / new        transformers' Dinov2WithRegistersModel

At the table's own grid every rule returns the table as it is. The matrices are exact float64
numpy (vit_common.weights.resample.bicubic_matrix), so both twins apply the same numbers.
"""
from __future__ import annotations

import functools

import numpy as np

POS_EMBED_INTERPS = {  # rule -> (antialias, offset added to the new side in the scale factor)
    "timm": (True, 0.0),
    "dinov2": (False, 0.1),
    "dinov2_reg": (True, 0.0),
    "transformers": (False, 0.0),
    "transformers_reg": (True, 0.0),
}


def source_rule(source: str, reg_tokens: int = 0) -> str:
    """The rule of a source's code ('timm', 'dinov2', 'transformers': a checkpoint Layout's
    `pos_embed_interp`) for a model with or without registers."""
    return f"{source}_reg" if reg_tokens and f"{source}_reg" in POS_EMBED_INTERPS else source


@functools.lru_cache(maxsize=128)
def pos_embed_matrices(old: int, new: tuple[int, int], rule: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows (h, old), cols (w, old)) float64: the table on an old x old grid, resized to
    new = (h, w) under `rule`, is rows @ table @ cols^T on every channel."""
    from ..weights.resample import bicubic_matrix

    if rule not in POS_EMBED_INTERPS:
        raise ValueError(f"unknown pos_embed_interp {rule!r}; choose one of {sorted(POS_EMBED_INTERPS)}")
    if tuple(new) == (old, old):
        return np.eye(old), np.eye(old)
    antialias, offset = POS_EMBED_INTERPS[rule]
    # DINOv2 gives torch a scale factor (new + 0.1) / M; torch steps by its inverse.
    step = (lambda n: 1.0 / (float(n + offset) / old)) if offset else (lambda n: None)
    return tuple(bicubic_matrix(old, n, antialias=antialias, step=step(n)) for n in new)


def grid_of(height: int, width: int, patch_size: int, pad: bool) -> tuple[int, int]:
    """The patch grid of an image: whole patches only, or (dynamic_img_pad) padded up to them."""
    if pad:
        return -(-height // patch_size), -(-width // patch_size)
    return height // patch_size, width // patch_size
