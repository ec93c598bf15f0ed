"""An independent float64 numpy Eva (EVA-02, DINOv3), computed straight from canonical weights.

Written from the papers' and timm's semantics, sharing no code with the twins (nor their rotary
tables): the patch embedding is a matmul over flattened patches, attention is written out with
einsum, and the rotary embedding rotates each pair of channels as a complex number,
z * exp(i * angle), with the angles derived here token by token:
- pair p < D/4 turns with the token's row, pair D/4 + p with its column, at frequency index p;
- EVA-02 ('cat'): coordinate = index (+ offset) [* ref / grid], frequency temperature^(-p / (D/4));
- DINOv3: coordinate = patch centre in [-1, 1], angle 2 pi coordinate / temperature^(p / (D/4)).
Pairs are channels (2p, 2p+1) (EVA-02) or (p, p + D/2) (DINOv3's rotate-half). Prefix tokens
(class, registers) are never rotated.
"""
from __future__ import annotations

import math

import numpy as np


def _ln(x, w, prefix, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w[f"{prefix}/scale"] + w[f"{prefix}/bias"]


def _dense(x, w, prefix):
    y = x @ w[f"{prefix}/kernel"]
    return y + w[f"{prefix}/bias"] if f"{prefix}/bias" in w else y


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _silu(x):
    return x / (1.0 + np.exp(-x))


def rotary_angles(cfg, grid=None) -> np.ndarray:
    """(num_patches, D/2): the angle of every channel pair of every patch token (row-major grid;
    `grid` (h, w) for a size other than the config's, each axis scaled by its own length)."""
    gh, gw = (cfg.grid_size, cfg.grid_size) if grid is None else grid
    d = cfg.head_dim
    quarter = d // 4
    angles = np.zeros((gh * gw, d // 2))
    for token in range(gh * gw):
        row, col = divmod(token, gw)
        for axis, (index, g) in enumerate(((row, gh), (col, gw))):
            for p in range(quarter):
                if cfg.rope_type == "cat":
                    position = index + cfg.rope_grid_offset
                    if cfg.ref_feat_shape is not None:
                        position *= cfg.ref_feat_shape / g
                    angle = position * cfg.rope_temperature ** (-p / quarter)
                else:  # dinov3
                    centre = 2.0 * (index + 0.5 + cfg.rope_grid_offset) / g - 1.0
                    angle = 2.0 * math.pi * centre / cfg.rope_temperature ** (p / quarter)
                angles[token, axis * quarter + p] = angle
    return angles


def rotate(x, angles, half: bool):
    """x (B, N, H, D) of the patch tokens, each pair turned by its angle (N, D/2)."""
    d = x.shape[-1]
    if half:
        z = x[..., : d // 2] + 1j * x[..., d // 2:]
    else:
        z = x[..., 0::2] + 1j * x[..., 1::2]
    z = z * np.exp(1j * angles)[None, :, None, :]
    out = np.empty_like(x)
    if half:
        out[..., : d // 2], out[..., d // 2:] = z.real, z.imag
    else:
        out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def _attention(x, w, blk, cfg, angles):
    b, t, c = x.shape
    heads = cfg.num_heads
    a = f"{blk}/attn"
    if cfg.qkv_fused:
        kernel = w[f"{a}/qkv/kernel"]
        q, k, v = x @ kernel[:, :c], x @ kernel[:, c:2 * c], x @ kernel[:, 2 * c:]
        if f"{a}/q_bias" in w:
            q, v = q + w[f"{a}/q_bias"], v + w[f"{a}/v_bias"]
    else:
        q, k, v = (_dense(x, w, f"{a}/{n}_proj") for n in "qkv")
    q, k, v = (y.reshape(b, t, heads, c // heads) for y in (q, k, v))
    if angles is not None:
        n = cfg.num_prefix_tokens
        q = np.concatenate([q[:, :n], rotate(q[:, n:], angles, cfg.rope_rotate_half)], axis=1)
        k = np.concatenate([k[:, :n], rotate(k[:, n:], angles, cfg.rope_rotate_half)], axis=1)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(c // heads)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, c)
    if cfg.scale_attn_inner:
        out = _ln(out, w, f"{a}/norm", cfg.norm_eps)
    return _dense(out, w, f"{a}/proj"), probs


def _mlp(x, w, blk, cfg):
    m = f"{blk}/mlp"
    if f"{m}/fc1_g/kernel" in w:
        h = _silu(_dense(x, w, f"{m}/fc1_g")) * _dense(x, w, f"{m}/fc1_x")
    elif cfg.swiglu_mlp:  # packed: the first half of fc1 is the gate
        y = _dense(x, w, f"{m}/fc1")
        gate, value = np.split(y, 2, axis=-1)
        h = _silu(gate) * value
    else:
        h = _gelu(_dense(x, w, f"{m}/fc1"))
    if cfg.scale_mlp:
        h = _ln(h, w, f"{m}/norm", cfg.norm_eps)
    return _dense(h, w, f"{m}/fc2")


def forward(weights, cfg, images_nhwc, grid=None):
    """(logits or None, pooled, every block's output (B, T, C), every block's (B, H, T, T) attention).
    `grid`: the (h, w) patch grid of images of another size (with weights' pos_embed for it)."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    x = np.asarray(images_nhwc, np.float64)
    b, p = x.shape[0], cfg.patch_size
    gh, gw = (cfg.grid_size, cfg.grid_size) if grid is None else grid
    patches = x.reshape(b, gh, p, gw, p, cfg.in_chans).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, -1)
    x = patches @ w["patch_embed/proj/kernel"].reshape(-1, cfg.embed_dim) + w["patch_embed/proj/bias"]
    prefix = [np.broadcast_to(w[n], (b,) + w[n].shape[1:]) for n in ("cls_token", "reg_token") if n in w]
    if "pos_embed" in w and cfg.no_embed_class:
        x = x + w["pos_embed"]
    x = np.concatenate(prefix + [x], axis=1)
    if "pos_embed" in w and not cfg.no_embed_class:
        x = x + w["pos_embed"]
    angles = rotary_angles(cfg, grid) if cfg.use_rot_pos_emb else None

    hidden, maps = [], []
    for i in range(cfg.depth):
        blk = f"blocks_{i}"
        y, probs = _attention(_ln(x, w, f"{blk}/norm1", cfg.norm_eps), w, blk, cfg, angles)
        x = x + (w[f"{blk}/gamma_1"] * y if f"{blk}/gamma_1" in w else y)
        y = _mlp(_ln(x, w, f"{blk}/norm2", cfg.norm_eps), w, blk, cfg)
        x = x + (w[f"{blk}/gamma_2"] * y if f"{blk}/gamma_2" in w else y)
        hidden.append(x)
        maps.append(probs)
    if "norm/scale" in w:
        x = _ln(x, w, "norm", cfg.norm_eps)
    pooled = x[:, 0] if cfg.global_pool == "token" else x[:, cfg.num_prefix_tokens:].mean(1)
    if "fc_norm/scale" in w:
        pooled = _ln(pooled, w, "fc_norm", cfg.norm_eps)
    logits = _dense(pooled, w, "head") if "head/kernel" in w else None
    return logits, pooled, hidden, maps
