"""Rotary position embedding tables of Eva models, computed once in numpy (float64) so both twins
(and the float64 reference) share them.

A head's D channels form D/2 rotated pairs: D/4 frequencies on the row coordinate, then D/4 on
the column coordinate (timm's 'ij' grid). Pair k of a patch token rotates by the angle
angles[token, k]; q' = q * cos + rotate(q) * sin, with the tables laid out for the pairing:
- (even, odd) pairs (rope_rotate_half=False, EVA-02): each angle repeated twice in place,
  rotate(x) = (-x1, x0, -x3, x2, ...);
- (first half, second half) pairs (rope_rotate_half=True, DINOv3): the angles tiled twice,
  rotate(x) = (-x[D/2:], x[:D/2]).
Prefix tokens (class, registers) are not rotated.

The angles:
- 'cat' (EVA-02, timm's RotaryEmbeddingCat in language mode): token (i, j) sits at
  (i + offset, j + offset), scaled by ref_feat_shape / grid when given (EVA's rule for a grid
  other than the pretraining one); frequencies temperature ** -(k / (D/4)), k < D/4.
- 'dinov3' (DINOv3's RopePositionEmbedding): patch centres (i + 0.5 + offset) / grid mapped to
  [-1, 1]; angle 2 pi * coordinate / period, periods temperature ** (2k / (D/2)).
"""
from __future__ import annotations

import numpy as np


def rope_angles(cfg) -> np.ndarray:
    """(num_patches, head_dim / 2) float64: the row frequencies' angles, then the column ones'."""
    g, quarter = cfg.grid_size, cfg.head_dim // 4
    k = np.arange(quarter, dtype=np.float64)
    if cfg.rope_type == "cat":
        t = np.arange(g, dtype=np.float64) + cfg.rope_grid_offset
        if cfg.ref_feat_shape is not None:
            t = t / g * cfg.ref_feat_shape
        freqs = cfg.rope_temperature ** -(k / quarter)
    elif cfg.rope_type == "dinov3":
        t = 2.0 * (np.arange(g, dtype=np.float64) + 0.5 + cfg.rope_grid_offset) / g - 1.0
        freqs = 2.0 * np.pi / cfg.rope_temperature ** (2.0 * k / (cfg.head_dim // 2))
    else:
        raise ValueError(f"unknown rope_type {cfg.rope_type!r}")
    rows, cols = np.meshgrid(t, t, indexing="ij")
    return np.concatenate([rows.reshape(-1, 1) * freqs, cols.reshape(-1, 1) * freqs], axis=1)


def rope_tables(cfg) -> tuple[np.ndarray, np.ndarray]:
    """(sin, cos), each (num_patches, head_dim) float32, laid out for cfg.rope_rotate_half's pairing."""
    angles = rope_angles(cfg)
    full = np.tile(angles, 2) if cfg.rope_rotate_half else np.repeat(angles, 2, axis=1)
    return np.sin(full).astype(np.float32), np.cos(full).astype(np.float32)
