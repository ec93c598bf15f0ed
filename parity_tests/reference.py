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


# The config's act_layer -> this module's activation; "erf" / "tanh" name the GELUs directly.
ACTIVATIONS = {"gelu": "erf", "gelu_tanh": "tanh"}


def act(x: np.ndarray, kind: str) -> np.ndarray:
    kind = ACTIVATIONS.get(kind, kind)
    if kind in ("erf", "tanh"):
        return gelu(x, kind)
    if kind == "quick_gelu":
        return x / (1.0 + np.exp(-1.702 * x))
    if kind == "silu":
        return x / (1.0 + np.exp(-x))
    raise ValueError(kind)


def layer_norm(x, w, prefix, eps):
    """LayerNorm, or RMSNorm where the weights hold a scale and no bias."""
    if f"{prefix}/bias" not in w:
        return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * w[f"{prefix}/scale"]
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w[f"{prefix}/scale"] + w[f"{prefix}/bias"]


def dense(x, w, prefix):
    out = x @ w[f"{prefix}/kernel"]
    return out + w[f"{prefix}/bias"] if f"{prefix}/bias" in w else out


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
    out = np.einsum("bqhd,hdc->bqc", out, w[f"{prefix}/out/kernel"])
    return (out + w[f"{prefix}/out/bias"] if f"{prefix}/out/bias" in w else out), probs


def mlp(x, w, prefix, gelu_kind):
    """Dense_1(act(Dense_0 x)), or with a `gate` (SwiGLU): Dense_1(act(gate x) * Dense_0 x)."""
    h = dense(x, w, f"{prefix}/Dense_0")
    h = act(dense(x, w, f"{prefix}/gate"), gelu_kind) * h if f"{prefix}/gate/kernel" in w else act(h, gelu_kind)
    return dense(h, w, f"{prefix}/Dense_1")


def forward(weights, cfg: ViTConfig, images_nhwc, **kwargs):
    """(logits, hidden_states, attentions) in float64; keywords as forward_with_pool's."""
    return forward_with_pool(weights, cfg, images_nhwc, **kwargs)[:3]


def forward_with_pool(weights, cfg: ViTConfig, images_nhwc, *, gelu_kind=None, eps=None, posemb_on_prefix=None,
                      posemb=None):
    """(logits, hidden_states, attentions, the MAP probe's attention or None) in float64.
    gelu_kind (the activation: 'erf', 'tanh' or an act_layer name) and eps default to the
    config's; posemb_on_prefix overrides the convention (None: the config's; True:
    vision_transformer; False: big_vision). Any image size whose sides are patch multiples runs,
    with `posemb` (1, prefix + h*w, C) given for its grid when that is not the config's."""
    gelu_kind = cfg.act_layer if gelu_kind is None else gelu_kind
    eps = cfg.norm_eps if eps is None else eps
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    x = np.asarray(images_nhwc, np.float64)
    b, p = x.shape[0], cfg.patch_size
    gh, gw = x.shape[1] // p, x.shape[2] // p
    patches = x.reshape(b, gh, p, gw, p, cfg.in_chans).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, -1)
    tokens = patches @ w["embedding/kernel"].reshape(-1, cfg.embed_dim) + w.get("embedding/bias", 0.0)
    if "embedding_norm/scale" in w:
        tokens = layer_norm(tokens, w, "embedding_norm", eps)

    if posemb is not None:
        posemb = np.asarray(posemb, np.float64)
    else:
        posemb = (w["Transformer/posembed_input/pos_embedding"] if cfg.pos_embed == "learn"
                  else fixed_pos_embed(cfg).astype(np.float64))
    prefix = [np.broadcast_to(w[n], (b, *w[n].shape[1:])) for n in ("cls", "dist", "reg") if n in w]
    on_prefix = (not cfg.no_embed_class) if posemb_on_prefix is None else posemb_on_prefix
    if on_prefix:  # a table shorter than the tokens lands shifted by one: the classic port bug
        x = np.concatenate(prefix + [tokens], axis=1)
        x[:, : posemb.shape[1]] += posemb
    else:
        x = np.concatenate(prefix + [tokens + posemb[:, -gh * gw:]], axis=1)
    if "Transformer/pre_norm/scale" in w:
        x = layer_norm(x, w, "Transformer/pre_norm", eps)

    hidden, maps = [], []
    for i in range(cfg.depth):
        blk = f"Transformer/encoderblock_{i}"
        scale = lambda n: w.get(f"{blk}/LayerScale_{n}/scale", 1.0)
        y = layer_norm(x, w, f"{blk}/LayerNorm_0", eps)
        y, probs = mha(y, y, w, f"{blk}/MultiHeadDotProductAttention_1", cfg.qkv_bias)
        x = x + scale(1) * y
        x = x + scale(2) * mlp(layer_norm(x, w, f"{blk}/LayerNorm_2", eps), w, f"{blk}/MlpBlock_3", gelu_kind)
        hidden.append(x)
        maps.append(probs)
    if "Transformer/encoder_norm/scale" in w:
        x = layer_norm(x, w, "Transformer/encoder_norm", eps)

    pool_probs = None
    if cfg.global_pool == "map":
        probe = np.broadcast_to(w["MAPHead_0/probe"], (b, 1, cfg.embed_dim))
        y, pool_probs = mha(probe, x, w, "MAPHead_0/MultiHeadDotProductAttention_0")
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
    return logits, hidden, maps, pool_probs
