"""An independent float64 Swin Transformer in numpy, from canonical weights.

It never partitions, rolls or reverses windows: each block's attention is one masked attention
over the stage's whole token grid, with the rule written out per token pair. On the grid rolled
by -shift, two tokens attend iff they share a window; a pair whose offset the roll changed
(brought together from opposite borders) gets MASK_VALUE added, as in the original code; the
bias table row is chosen by their offset on the rolled grid. Slow (T^2 pairs per stage), so for
small configs only.
"""
from __future__ import annotations

import math

import numpy as np

EPS = 1e-5  # timm's / Microsoft's Swin LayerNorm
MASK_VALUE = -100.0


def _ln(x, w, prefix):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w[f"{prefix}/scale"] + w[f"{prefix}/bias"]


def _dense(x, w, prefix):
    y = x @ w[f"{prefix}/kernel"]
    return y + w[f"{prefix}/bias"] if f"{prefix}/bias" in w else y


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def pair_rules(resolution: int, window: int, shift: int):
    """(T, T) arrays over the grid's token pairs: attend (same window on the rolled grid),
    masked (same window, but the roll changed their offset) and the bias table row."""
    y, x = np.divmod(np.arange(resolution * resolution), resolution)
    ry, rx = (y - shift) % resolution, (x - shift) % resolution  # positions on the rolled grid
    attend = (ry[:, None] // window == ry[None, :] // window) & (rx[:, None] // window == rx[None, :] // window)
    dy, dx = ry[:, None] - ry[None, :], rx[:, None] - rx[None, :]
    masked = attend & ((dy != y[:, None] - y[None, :]) | (dx != x[:, None] - x[None, :]))
    row = (dy + window - 1) * (2 * window - 1) + (dx + window - 1)
    return attend, masked, np.where(attend, row, 0)


def _attention(x, w, prefix, heads, resolution, window, shift):
    b, t, c = x.shape
    d = c // heads
    qkv = _dense(x, w, f"{prefix}/qkv").reshape(b, t, 3, heads, d)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    attend, masked, row = pair_rules(resolution, window, shift)
    bias = w[f"{prefix}/relative_position_bias_table"][row].transpose(2, 0, 1)  # (H, T, T)
    logits = np.einsum("bqhd,bkhd->bhqk", q / math.sqrt(d), k) + bias + np.where(masked, MASK_VALUE, 0.0)
    logits = np.where(attend, logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", p, v).reshape(b, t, c)
    return _dense(out, w, f"{prefix}/proj"), p


def forward(weights, cfg, images_nhwc):
    """(logits or None, pooled, every stage's output (B, R, R, C), every block's (B, H, T, T) attention)."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    x = np.asarray(images_nhwc, np.float64)
    b, p = x.shape[0], cfg.patch_size
    g = cfg.img_size // p
    patches = x.reshape(b, g, p, g, p, cfg.in_chans).transpose(0, 1, 3, 2, 4, 5)
    x = np.einsum("bijhwc,hwco->bijo", patches, w["patch_embed/proj/kernel"]) + w["patch_embed/proj/bias"]
    x = _ln(x, w, "patch_embed/norm")
    stages, maps = [], []
    for i, depth in enumerate(cfg.depths):
        if i > 0:
            x = np.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
            x = _dense(_ln(x, w, f"layers_{i}/downsample/norm"), w, f"layers_{i}/downsample/reduction")
        r = x.shape[1]
        window = min(cfg.window_size, r)
        shift = 0 if r <= cfg.window_size else cfg.window_size // 2
        x = x.reshape(b, r * r, -1)
        for j in range(depth):
            blk = f"layers_{i}/blocks_{j}"
            y, a = _attention(_ln(x, w, f"{blk}/norm1"), w, f"{blk}/attn", cfg.num_heads[i], r, window,
                              shift if j % 2 else 0)
            x = x + y
            h = _ln(x, w, f"{blk}/norm2")
            x = x + _dense(_gelu(_dense(h, w, f"{blk}/mlp/fc1")), w, f"{blk}/mlp/fc2")
            maps.append(a)
        x = x.reshape(b, r, r, -1)
        stages.append(x)
    x = _ln(x, w, "norm")
    pooled = x.mean(axis=(1, 2)) if cfg.global_pool == "avg" else x
    logits = _dense(pooled, w, "head/fc") if cfg.num_classes else None
    return logits, pooled, stages, maps
