"""Swin Transformer (Flax NNX twin of vit_torch/models/swin.py). Images are NHWC.

Tokens stay on their (B, H, W, C) grid throughout, as in timm. A stage starts with a patch
merging (stages 1..), then alternates blocks with regular and shifted windows; the relative
position bias table, its index and the shifted-window mask come from vit_common.config.windows.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from vit_common import SwinConfig
from vit_common.config.windows import relative_position_index, shifted_window_mask

from .blocks import run_blocks
from .fast_ops import patch_matmul
from .layers import Buffer, DropPath, Mlp, check_images, fit_to_patches, layer_norm, normal_02, zeros

# timm's and Microsoft's Swin use nn.LayerNorm's default epsilon, 1e-5 (ViT's is 1e-6).
SWIN_LN_EPS = 1e-5


class SwinOutput(NamedTuple):
    logits: jax.Array | None  # (B, K); (B, H, W, K) with global_pool=''
    pooled: jax.Array  # features fed to the head: (B, C), or (B, H, W, C) with global_pool=''
    hidden_states: list[jax.Array]  # every block's output, (B, H, W, C) at its stage's resolution
    attentions: list[jax.Array]  # every block's window attention, (B * windows, heads, w*w, w*w)
    stages: list[jax.Array]  # every stage's output, (B, H, W, C)


def _torch_default_uniform(fan_in: int):
    """PyTorch's default Conv2d / Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which timm's
    Swin keeps for the patch projection (weight and bias)."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def window_partition(x: jax.Array, window: int) -> jax.Array:
    """(B, H, W, C) -> (B * windows, w*w, C), windows row-major within each image."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: jax.Array, window: int, resolution: int | tuple[int, int]) -> jax.Array:
    """(B * windows, w*w, C) -> (B, H, W, C), the inverse of window_partition (resolution: R or (H, W))."""
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


class SwinPatchEmbed(nnx.Module):
    """Non-overlapping p x p patches -> LayerNorm'd tokens on a (B, H/p, W/p, C) grid."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, *, dynamic: bool = False,
                 pad: bool = False, dtype, rngs):
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.dynamic, self.pad = dynamic, pad  # timm's dynamic_img_size / dynamic_img_pad
        init = _torch_default_uniform(in_chans * patch_size * patch_size)
        self.proj = nnx.Conv(
            in_chans, embed_dim, kernel_size=(patch_size, patch_size), strides=(patch_size, patch_size),
            padding="VALID", kernel_init=init, bias_init=init, dtype=dtype, rngs=rngs,
        )
        self.norm = layer_norm(embed_dim, dtype, rngs, eps=SWIN_LN_EPS)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_images(x, self.img_size, self.in_chans, self.dynamic or self.pad)
        x = fit_to_patches(x, self.patch_size, self.pad)
        return self.norm(patch_matmul(self.proj, x))  # = self.proj(x), faster to differentiate on CPU


class WindowAttention(nnx.Module):
    """Multi-head self-attention inside each window, plus a learned bias per relative offset."""

    def __init__(self, dim: int, num_heads: int, window: int, qkv_bias: bool, attn_drop: float, proj_drop: float,
                 *, dtype, rngs):
        self.num_heads, self.window = num_heads, window
        self.relative_position_bias_table = nnx.Param(normal_02(rngs.params(), ((2 * window - 1) ** 2, num_heads)))
        self.relative_position_index = Buffer(jnp.asarray(relative_position_index(window)))
        self.qkv = nnx.Linear(dim, 3 * dim, use_bias=qkv_bias, kernel_init=normal_02, bias_init=zeros, dtype=dtype,
                              rngs=rngs)
        self.attn_drop = nnx.Dropout(attn_drop, rngs=rngs)
        self.proj = nnx.Linear(dim, dim, kernel_init=normal_02, bias_init=zeros, dtype=dtype, rngs=rngs)
        self.proj_drop = nnx.Dropout(proj_drop, rngs=rngs)

    def relative_position_bias(self) -> jax.Array:
        """(heads, w*w, w*w): the table's row for each (query, key) offset."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[...][self.relative_position_index[...].reshape(-1)]
        return bias.reshape(n, n, self.num_heads).transpose(2, 0, 1)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None, return_weights: bool = False):
        """x: (B * windows, w*w, C); mask: (windows, w*w, w*w) or None."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B', N, H, D)
        bias = self.relative_position_bias()[None]  # (1, H, N, N)
        if mask is not None:  # the same mask for every image: windows are image-major
            bias = jnp.tile(bias + mask[:, None], (b // mask.shape[0], 1, 1, 1))
        if not return_weights and (self.attn_drop.rate == 0.0 or self.attn_drop.deterministic):
            out, weights = jax.nn.dot_product_attention(q, k, v, bias=bias.astype(q.dtype)), None
        else:
            logits = jnp.einsum("bqhd,bkhd->bhqk", q * q.shape[-1] ** -0.5, k) + bias
            weights = jax.nn.softmax(logits, axis=-1)
            out = jnp.einsum("bhqk,bkhd->bqhd", self.attn_drop(weights).astype(v.dtype), v)
        return self.proj_drop(self.proj(out.reshape(b, n, c))), weights


class SwinBlock(nnx.Module):
    """Pre-norm block: x + attn over (shifted) windows of norm1(x), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, resolution: int, window: int, shift: int, mlp_dim: int,
                 qkv_bias: bool, proj_drop: float, attn_drop: float, drop_path: float, *, dtype, rngs):
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = layer_norm(dim, dtype, rngs, eps=SWIN_LN_EPS)
        self.attn = WindowAttention(dim, num_heads, window, qkv_bias, attn_drop, proj_drop, dtype=dtype, rngs=rngs)
        self.drop_path1 = DropPath(drop_path, rngs=rngs)
        self.norm2 = layer_norm(dim, dtype, rngs, eps=SWIN_LN_EPS)
        self.mlp = Mlp(dim, mlp_dim, proj_drop, init="timm", dtype=dtype, rngs=rngs)
        self.drop_path2 = DropPath(drop_path, rngs=rngs)
        mask = shifted_window_mask(resolution, window, shift)
        self.attn_mask = Buffer(jnp.asarray(mask)) if mask is not None else None

    def mask_for(self, h: int, w: int) -> jax.Array | None:
        """The shifted-window mask of an (h, w) grid of whole windows (the buffer at the model's own)."""
        if self.attn_mask is None:
            return None
        if (h, w) == (self.resolution, self.resolution):
            return self.attn_mask[...]
        return jnp.asarray(shifted_window_mask((h, w), self.window, self.shift))

    def __call__(self, x: jax.Array, return_weights: bool = False):
        s, win = self.shift, self.window
        h, w = x.shape[1:3]
        y = self.norm1(x)
        if s:  # cyclic shift: windows then straddle the previous block's window borders
            y = jnp.roll(y, (-s, -s), axis=(1, 2))
        if h % win or w % win:  # another image size: pad the shifted grid to whole windows, as timm does
            y = jnp.pad(y, ((0, 0), (0, -h % win), (0, -w % win), (0, 0)))
        hp, wp = y.shape[1:3]
        y, weights = self.attn(window_partition(y, win), self.mask_for(hp, wp), return_weights)
        y = window_reverse(y, win, (hp, wp))[:, :h, :w]
        if s:
            y = jnp.roll(y, (s, s), axis=(1, 2))
        x = x + self.drop_path1(y)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x, weights


class PatchMerging(nnx.Module):
    """2x2 neighbourhoods -> one token: concatenate, LayerNorm(4C), Linear(4C -> out, no bias)."""

    def __init__(self, dim: int, out_dim: int, *, dtype, rngs):
        self.norm = layer_norm(4 * dim, dtype, rngs, eps=SWIN_LN_EPS)
        self.reduction = nnx.Linear(4 * dim, out_dim, use_bias=False, kernel_init=normal_02, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        # Microsoft's order, which every released checkpoint's reduction expects:
        # (row, col) offsets (0, 0), (1, 0), (0, 1), (1, 1). Odd sides are padded with zeros (timm).
        if x.shape[1] % 2 or x.shape[2] % 2:
            x = jnp.pad(x, ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0)))
        x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
        return self.reduction(self.norm(x))


class SwinStage(nnx.Module):
    def __init__(self, cfg: SwinConfig, i: int, *, dtype, rngs):
        dim = cfg.stage_dim(i)
        self.downsample = PatchMerging(dim // 2, dim, dtype=dtype, rngs=rngs) if i > 0 else None
        self.blocks = nnx.List([
            SwinBlock(dim, cfg.num_heads[i], cfg.stage_resolution(i), cfg.stage_window(i), cfg.block_shift(i, j),
                      cfg.mlp_dim(i), cfg.qkv_bias, cfg.proj_drop_rate, cfg.attn_drop_rate, rate,
                      dtype=dtype, rngs=rngs)
            for j, rate in enumerate(cfg.drop_path_rates()[i])
        ])
        self.grad_checkpointing = None  # or the remat policy: set by SwinTransformer.set_grad_checkpointing

    def __call__(self, x: jax.Array, return_weights: bool = False):
        """The stage's output, every block's output and (if asked) attention weights."""
        if self.downsample is not None:
            x = self.downsample(x).astype(jnp.float32)  # the residual stream stays float32
        if self.grad_checkpointing is not None and not return_weights:  # training: the output only
            return run_blocks(self.blocks, x, remat=self.grad_checkpointing), [], []
        hidden, maps = [], []
        for block in self.blocks:
            x, weights = block(x, return_weights)
            hidden.append(x)
            maps.append(weights)
        return x, hidden, maps


class ClassifierHead(nnx.Module):
    """Global average pooling over the grid (or none), dropout, Linear (timm's head.fc)."""

    def __init__(self, dim: int, num_classes: int, global_pool: str, drop_rate: float, *, dtype, rngs):
        self.global_pool = global_pool
        self.drop = nnx.Dropout(drop_rate, rngs=rngs)
        self.fc = (nnx.Linear(dim, num_classes, kernel_init=normal_02, bias_init=zeros, dtype=dtype, rngs=rngs)
                   if num_classes else None)

    def pool(self, x: jax.Array) -> jax.Array:
        return x.mean(axis=(1, 2)) if self.global_pool == "avg" else x

    def logits(self, pooled: jax.Array) -> jax.Array:
        return self.fc(self.drop(pooled)) if self.fc is not None else pooled

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.logits(self.pool(x))


class SwinTransformer(nnx.Module):
    def __init__(self, cfg: SwinConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        """`dtype` is the compute dtype; parameters stay float32 (bf16 mixed precision)."""
        self.cfg = cfg
        self.dtype = dtype
        self.patch_embed = SwinPatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim,
                                          dynamic=cfg.dynamic_img_size, pad=cfg.dynamic_img_pad,
                                          dtype=dtype, rngs=rngs)
        self.layers = nnx.List([SwinStage(cfg, i, dtype=dtype, rngs=rngs) for i in range(cfg.num_stages)])
        self.norm = layer_norm(cfg.num_features, dtype, rngs, eps=SWIN_LN_EPS)
        self.head = ClassifierHead(cfg.num_features, cfg.num_classes, cfg.global_pool, cfg.drop_rate,
                                   dtype=dtype, rngs=rngs)

    def set_grad_checkpointing(self, enable: bool = True, policy: str = "full") -> None:
        """Activation checkpointing per block, as VisionTransformer.set_grad_checkpointing. (Swin's
        blocks alternate window shifts, so they are not scanned.)"""
        for stage in self.layers:
            stage.grad_checkpointing = policy if enable else None

    def embed(self, x: jax.Array) -> jax.Array:
        """Images -> the (B, H/p, W/p, C) token grid; matmuls in self.dtype, the stream in float32."""
        return self.patch_embed(x.astype(self.dtype)).astype(jnp.float32)

    def forward_features(self, x: jax.Array) -> jax.Array:
        x = self.embed(x)
        for stage in self.layers:
            x, _, _ = stage(x)
        return self.norm(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.forward_features(x))

    def forward_intermediates(self, x: jax.Array, attention: bool = True) -> SwinOutput:
        """Logits plus every stage's and block's output and (if asked) every block's window attention."""
        x = self.embed(x)
        hidden, maps, stages = [], [], []
        for stage in self.layers:
            x, stage_hidden, stage_maps = stage(x, return_weights=attention)
            hidden += stage_hidden
            stages.append(x)
            if attention:
                maps += stage_maps
        pooled = self.head.pool(self.norm(x))
        logits = self.head.logits(pooled) if self.cfg.num_classes else None
        return SwinOutput(logits, pooled, hidden, maps, stages)
