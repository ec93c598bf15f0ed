"""Fixed position-embedding tables, computed once in numpy (float64) so both twins share them."""
from __future__ import annotations

import numpy as np

from .vit import ViTConfig


def sincos_2d(grid: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
    """(grid*grid, width): sin/cos of x then y at geometric frequencies, as in big_vision and MAE."""
    quarter = width // 4
    freqs = temperature ** -(np.arange(quarter) / max(quarter - 1, 1))
    ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    angle_x = xs.reshape(-1, 1) * freqs
    angle_y = ys.reshape(-1, 1) * freqs
    return np.concatenate([np.sin(angle_x), np.cos(angle_x), np.sin(angle_y), np.cos(angle_y)], axis=1)


def sincos_1d(length: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
    """(length, width): the original Transformer's table, sin on even channels, cos on odd."""
    angles = np.arange(length)[:, None] * temperature ** -(np.arange(0, width, 2) / width)
    table = np.empty((length, width))
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles)
    return table


def fixed_pos_embed(cfg: ViTConfig) -> np.ndarray:
    """(1, cfg.num_pos_embed, embed_dim) float32 table for pos_embed='sincos2d' | 'sincos1d'.

    With an entry for the prefix tokens, sincos1d numbers them 0.. before the patches and
    sincos2d gives them zeros (they have no place on the grid).
    """
    prefix = 0 if cfg.no_embed_class else cfg.num_prefix_tokens
    if cfg.pos_embed == "sincos1d":
        table = sincos_1d(prefix + cfg.num_patches, cfg.embed_dim)
    elif cfg.pos_embed == "sincos2d":
        table = sincos_2d(cfg.grid_size, cfg.embed_dim)
        table = np.concatenate([np.zeros((prefix, cfg.embed_dim)), table])
    else:
        raise ValueError(f"pos_embed={cfg.pos_embed!r} is learned, not a fixed table")
    return table[None].astype(np.float32)
