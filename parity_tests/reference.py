"""An independent float64 numpy ViT, computed straight from canonical weights.

It shares no model code with the twins: the convolution is an explicit patch matmul, attention
is written out with einsum over the canonical (C, heads, head_dim) kernels. Switches reproduce
the classic porting mistakes so tests can show each one is caught.
"""
from __future__ import annotations

import math

import numpy as np

from vit_common import ViTConfig, fixed_pos_embed


def gelu(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "erf":
        erf = np.vectorize(math.erf)
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def layer_norm(x, w, prefix, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w[f"{prefix}/scale"] + w[f"{prefix}/bias"]


def dense(x, w, prefix):
    return x @ w[f"{prefix}/kernel"] + w[f"{prefix}/bias"]


def _proj(x, w, prefix, has_bias=True):
    out = np.einsum("btc,chd->bthd", x, w[f"{prefix}/kernel"])
    return out + w[f"{prefix}/bias"] if has_bias else out


def mha(xq, xkv, w, prefix, qkv_bias=True):
    q, k, v = (_proj(x, w, f"{prefix}/{n}", qkv_bias) for x, n in ((xq, "query"), (xkv, "key"), (xkv, "value")))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    logits -= logits.max(-1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", probs, v)
    return np.einsum("bqhd,hdc->bqc", out, w[f"{prefix}/out/kernel"]) + w[f"{prefix}/out/bias"], probs


def mlp(x, w, prefix, gelu_kind):
    return dense(gelu(dense(x, w, f"{prefix}/Dense_0"), gelu_kind), w, f"{prefix}/Dense_1")


def forward(weights, cfg: ViTConfig, images_nhwc, *, gelu_kind="erf", eps=1e-6, posemb_on_prefix=None):
    """(logits, hidden_states, attentions) in float64. posemb_on_prefix overrides the
    convention (None: the config's; True: vision_transformer; False: big_vision)."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    x = np.asarray(images_nhwc, np.float64)
    b, p, g = x.shape[0], cfg.patch_size, cfg.grid_size
    patches = x.reshape(b, g, p, g, p, cfg.in_chans).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, -1)
    tokens = patches @ w["embedding/kernel"].reshape(-1, cfg.embed_dim) + w["embedding/bias"]

    posemb = (w["Transformer/posembed_input/pos_embedding"] if cfg.pos_embed == "learn"
              else fixed_pos_embed(cfg).astype(np.float64))
    prefix = [np.broadcast_to(w[n], (b, 1, cfg.embed_dim)) for n in ("cls", "dist") if n in w]
    on_prefix = (not cfg.no_embed_class) if posemb_on_prefix is None else posemb_on_prefix
    if on_prefix:  # a table shorter than the tokens lands shifted by one: the classic port bug
        x = np.concatenate(prefix + [tokens], axis=1)
        x[:, : posemb.shape[1]] += posemb
    else:
        x = np.concatenate(prefix + [tokens + posemb[:, -g * g:]], axis=1)

    hidden, maps = [], []
    for i in range(cfg.depth):
        blk = f"Transformer/encoderblock_{i}"
        y = layer_norm(x, w, f"{blk}/LayerNorm_0", eps)
        y, probs = mha(y, y, w, f"{blk}/MultiHeadDotProductAttention_1", cfg.qkv_bias)
        x = x + y
        x = x + mlp(layer_norm(x, w, f"{blk}/LayerNorm_2", eps), w, f"{blk}/MlpBlock_3", gelu_kind)
        hidden.append(x)
        maps.append(probs)
    if "Transformer/encoder_norm/scale" in w:
        x = layer_norm(x, w, "Transformer/encoder_norm", eps)

    if cfg.global_pool == "map":
        probe = np.broadcast_to(w["MAPHead_0/probe"], (b, 1, cfg.embed_dim))
        y, _ = mha(probe, x, w, "MAPHead_0/MultiHeadDotProductAttention_0")
        y = y + mlp(layer_norm(y, w, "MAPHead_0/LayerNorm_0", eps), w, "MAPHead_0/MlpBlock_0", gelu_kind)
        pooled = y[:, 0]
    elif cfg.global_pool == "avg":
        pooled = x[:, cfg.num_prefix_tokens:].mean(1)
    else:
        pooled = x[:, 0]
    if "fc_norm/scale" in w:
        pooled = layer_norm(pooled, w, "fc_norm", eps)
    if "pre_logits/kernel" in w:
        pooled = np.tanh(dense(pooled, w, "pre_logits"))
    logits = dense(pooled, w, "head") if cfg.num_classes else None
    if cfg.distilled and cfg.num_classes:
        logits = (logits + dense(x[:, 1], w, "head_dist")) / 2
    return logits, hidden, maps
