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

import functools

import numpy as np


def rope_angles(cfg, grid: tuple[int, int] | None = None) -> np.ndarray:
    """(h * w, head_dim / 2) float64 on the (h, w) patch grid (default: the config's square one):
    the row frequencies' angles, then the column ones'. Each axis is scaled by its own length
    (timm: ref_feat_shape / feat_shape per axis; DINOv3: coordinates normalised per axis,
    its 'separate' rule)."""
    h, w = (cfg.grid_size, cfg.grid_size) if grid is None else grid
    quarter = cfg.head_dim // 4
    k = np.arange(quarter, dtype=np.float64)
    if cfg.rope_type == "cat":
        def coords(g):
            t = np.arange(g, dtype=np.float64) + cfg.rope_grid_offset
            return t / g * cfg.ref_feat_shape if cfg.ref_feat_shape is not None else t
        freqs = cfg.rope_temperature ** -(k / quarter)
    elif cfg.rope_type == "dinov3":
        def coords(g):
            return 2.0 * (np.arange(g, dtype=np.float64) + 0.5 + cfg.rope_grid_offset) / g - 1.0
        freqs = 2.0 * np.pi / cfg.rope_temperature ** (2.0 * k / (cfg.head_dim // 2))
    else:
        raise ValueError(f"unknown rope_type {cfg.rope_type!r}")
    rows, cols = np.meshgrid(coords(h), coords(w), indexing="ij")
    return np.concatenate([rows.reshape(-1, 1) * freqs, cols.reshape(-1, 1) * freqs], axis=1)


@functools.lru_cache(maxsize=64)
def rope_tables(cfg, grid: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sin, cos), each (h * w, head_dim) float32, laid out for cfg.rope_rotate_half's pairing;
    cached per (config, grid), so a model running many sizes computes each table once."""
    angles = rope_angles(cfg, grid)
    full = np.tile(angles, 2) if cfg.rope_rotate_half else np.repeat(angles, 2, axis=1)
    sin, cos = np.sin(full).astype(np.float32), np.cos(full).astype(np.float32)
    sin.flags.writeable = cos.flags.writeable = False  # shared by every caller of the cache
    return sin, cos
