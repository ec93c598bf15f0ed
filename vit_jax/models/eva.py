"""timm's Eva: EVA-02 and DINOv3 (Flax NNX twin of vit_torch/models/eva.py). Images are NHWC;
attribute names are timm's, so the canonical layout maps both twins the same way.

A pre-norm ViT with rotary position embeddings on the patch tokens' queries and keys (tables
from vit_common.config.rope), optional SwiGLU MLPs, inner LayerNorms and LayerScale; see
vit_common.config.eva.EvaConfig for the options and vit_common.weights.module_tables.eva_links for
every parameter.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from vit_common import EvaConfig
from vit_common.config.rope import rope_tables

from .dense import DenseFeatures
from .blocks import run_blocks, run_blocks_with_intermediates, stack_blocks
from .fast_ops import patch_matmul
from vit_common.config.dynamic import grid_of

from .layers import (Buffer, DropPath, attention, check_images, fit_to_patches, layer_norm, normal_02,
                     resample_pos_embed, zeros)

HEAD_INIT_SCALE = 1e-3  # timm's Eva scales its initial head by this


class EvaOutput(NamedTuple):
    logits: jax.Array | None  # (B, K)
    pooled: jax.Array  # features fed to the head, (B, C)
    hidden_states: list[jax.Array]  # every block's output, (B, T, C)
    attentions: list[jax.Array]  # every block's attention weights, (B, heads, T, T)


def rotate_pairs(x: jax.Array) -> jax.Array:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): (even, odd) pairs, EVA-02's layout."""
    return jnp.stack([-x[..., 1::2], x[..., ::2]], axis=-1).reshape(x.shape)


def rotate_halves(x: jax.Array) -> jax.Array:
    """(a, b) halves -> (-b, a): (first half, second half) pairs, DINOv3's layout."""
    a, b = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-b, a], axis=-1)


def apply_rope(x: jax.Array, sin: jax.Array, cos: jax.Array, prefix: int, half: bool) -> jax.Array:
    """Rotate the patch tokens of x (B, T, H, D); the first `prefix` tokens stay as they are."""
    patches = x[:, prefix:]
    sin, cos = sin[:, None], cos[:, None]  # (N, 1, D): the same for every head
    rotated = patches * cos + (rotate_halves(patches) if half else rotate_pairs(patches)) * sin
    return jnp.concatenate([x[:, :prefix], rotated.astype(x.dtype)], axis=1)


def _torch_default_uniform(fan_in: int):
    """PyTorch's default Conv2d init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which timm's Eva keeps."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _linear(din: int, dout: int, *, dtype, rngs, bias: bool = True, std: float = 0.02) -> nnx.Linear:
    """timm's Eva init: kernel N(0, std^2), zero bias."""
    init = normal_02 if std == 0.02 else nnx.initializers.normal(std)
    return nnx.Linear(din, dout, use_bias=bias, kernel_init=init, bias_init=zeros, dtype=dtype, rngs=rngs)


class EvaPatchEmbed(nnx.Module):
    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, *, dynamic: bool = False,
                 pad: bool = False, dtype, rngs):
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.dynamic, self.pad = dynamic, pad  # timm's dynamic_img_size / dynamic_img_pad
        init = _torch_default_uniform(in_chans * patch_size * patch_size)
        self.proj = nnx.Conv(
            in_chans, embed_dim, kernel_size=(patch_size, patch_size), strides=(patch_size, patch_size),
            padding="VALID", kernel_init=init, bias_init=init, dtype=dtype, rngs=rngs,
        )

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return grid_of(height, width, self.patch_size, self.pad)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_images(x, self.img_size, self.in_chans, self.dynamic or self.pad)
        x = fit_to_patches(x, self.patch_size, self.pad)
        x = patch_matmul(self.proj, x)  # = self.proj(x), faster to differentiate on CPU
        return x.reshape(x.shape[0], -1, x.shape[-1])  # (B, N, C)


class EvaAttention(nnx.Module):
    """Self-attention with fused q|k|v and separate q / v biases (k has none), or three projections."""

    def __init__(self, cfg: EvaConfig, proj_std: float, *, dtype, rngs):
        c = cfg.embed_dim
        self.num_heads, self.prefix, self.half = cfg.num_heads, cfg.num_prefix_tokens, cfg.rope_rotate_half
        fused, split = cfg.qkv_fused, not cfg.qkv_fused  # (an nnx attribute is set once: None or a module)
        self.qkv = _linear(c, 3 * c, bias=False, dtype=dtype, rngs=rngs) if fused else None
        self.q_bias = nnx.Param(jnp.zeros((c,))) if fused and cfg.qkv_bias else None
        self.v_bias = nnx.Param(jnp.zeros((c,))) if fused and cfg.qkv_bias else None
        self.q_proj = _linear(c, c, bias=cfg.qkv_bias, dtype=dtype, rngs=rngs) if split else None
        self.k_proj = _linear(c, c, bias=False, dtype=dtype, rngs=rngs) if split else None
        self.v_proj = _linear(c, c, bias=cfg.qkv_bias, dtype=dtype, rngs=rngs) if split else None
        self.attn_drop = nnx.Dropout(cfg.attn_drop_rate, rngs=rngs)
        self.norm = layer_norm(c, dtype, rngs, eps=cfg.norm_eps) if cfg.scale_attn_inner else None
        self.proj = _linear(c, c, std=proj_std, dtype=dtype, rngs=rngs)
        self.proj_drop = nnx.Dropout(cfg.proj_drop_rate, rngs=rngs)

    def _heads(self, x: jax.Array) -> jax.Array:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads)  # (B, N, H, D)

    def __call__(self, x: jax.Array, rope=None, return_weights: bool = False):
        b, n, c = x.shape
        if self.qkv is not None:
            qkv = self.qkv(x)
            if self.q_bias is not None:
                q_bias = self.q_bias[...]
                qkv = qkv + jnp.concatenate([q_bias, jnp.zeros_like(q_bias), self.v_bias[...]]).astype(qkv.dtype)
            q, k, v = (self._heads(t) for t in jnp.split(qkv, 3, axis=-1))
        else:
            q, k, v = (self._heads(proj(x)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        if rope is not None:
            q, k = (apply_rope(t, *rope, self.prefix, self.half) for t in (q, k))
        x, weights = attention(q, k, v, self.attn_drop, return_weights)
        x = x.reshape(b, n, c)
        if self.norm is not None:
            x = self.norm(x)
        return self.proj_drop(self.proj(x)), weights


class EvaMlp(nnx.Module):
    """GELU MLP (fc1, fc2), packed SwiGLU (fc1 = [gate | value]) or split SwiGLU (fc1_g, fc1_x),
    each with an optional LayerNorm on the hidden layer (scale_mlp)."""

    def __init__(self, cfg: EvaConfig, fc2_std: float, *, dtype, rngs):
        c, h = cfg.embed_dim, cfg.mlp_dim
        self.kind = cfg.mlp_kind
        if self.kind == "swiglu":
            self.fc1_g = _linear(c, h, dtype=dtype, rngs=rngs)
            self.fc1_x = _linear(c, h, dtype=dtype, rngs=rngs)
        else:
            self.fc1 = _linear(c, 2 * h if self.kind == "swiglu_packed" else h, dtype=dtype, rngs=rngs)
        self.drop1 = nnx.Dropout(cfg.proj_drop_rate, rngs=rngs)
        self.norm = layer_norm(h, dtype, rngs, eps=cfg.norm_eps) if cfg.scale_mlp else None
        self.fc2 = _linear(h, c, std=fc2_std, dtype=dtype, rngs=rngs)
        self.drop2 = nnx.Dropout(cfg.proj_drop_rate, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "swiglu":
            x = jax.nn.silu(self.fc1_g(x)) * self.fc1_x(x)
        elif self.kind == "swiglu_packed":
            gate, value = jnp.split(self.fc1(x), 2, axis=-1)
            x = jax.nn.silu(gate) * value
        else:
            x = jax.nn.gelu(self.fc1(x), approximate=False)  # exact erf GELU, as timm's nn.GELU
        x = self.drop1(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.drop2(self.fc2(x))


class EvaBlock(nnx.Module):
    """x + gamma_1 * attn(norm1(x)), then x + gamma_2 * mlp(norm2(x)) (no gammas without LayerScale)."""

    def __init__(self, cfg: EvaConfig, index: int, drop_path: float, *, dtype, rngs):
        c = cfg.embed_dim
        residual_std = 0.02 / math.sqrt(2.0 * (index + 1))  # timm's fix_init_weight
        self.norm1 = layer_norm(c, dtype, rngs, eps=cfg.norm_eps)
        self.attn = EvaAttention(cfg, residual_std, dtype=dtype, rngs=rngs)
        layer_scale = cfg.init_values is not None
        self.gamma_1 = nnx.Param(jnp.full((c,), float(cfg.init_values))) if layer_scale else None
        self.drop_path1 = DropPath(drop_path, rngs=rngs)
        self.norm2 = layer_norm(c, dtype, rngs, eps=cfg.norm_eps)
        self.mlp = EvaMlp(cfg, residual_std, dtype=dtype, rngs=rngs)
        self.gamma_2 = nnx.Param(jnp.full((c,), float(cfg.init_values))) if layer_scale else None
        self.drop_path2 = DropPath(drop_path, rngs=rngs)

    def __call__(self, x: jax.Array, rope=None, return_weights: bool = False):
        y, weights = self.attn(self.norm1(x), rope, return_weights)
        if self.gamma_1 is not None:
            y = self.gamma_1[...] * y
        x = x + self.drop_path1(y)
        y = self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            y = self.gamma_2[...] * y
        return x + self.drop_path2(y), weights


class Eva(DenseFeatures, nnx.Module):
    def __init__(self, cfg: EvaConfig, *, dtype=jnp.float32, rngs: nnx.Rngs, scan_layers: bool = False):
        """`dtype` is the compute dtype; parameters stay float32 (bf16 mixed precision).
        scan_layers: blocks stacked and scanned, as in VisionTransformer."""
        self.cfg = cfg
        self.dtype = dtype
        self.scan_layers = scan_layers
        self.grad_checkpointing = None  # or the remat policy: see set_grad_checkpointing
        c = cfg.embed_dim
        self.patch_embed = EvaPatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, c, dynamic=cfg.dynamic_img_size,
                                         pad=cfg.dynamic_img_pad, dtype=dtype, rngs=rngs)
        normal = lambda shape: nnx.Param(normal_02(rngs.params(), shape))  # timm's trunc_normal_(std=0.02)
        self.cls_token = normal((1, 1, c)) if cfg.class_token else None
        self.reg_token = normal((1, cfg.num_reg_tokens, c)) if cfg.num_reg_tokens else None
        self.pos_embed = normal((1, cfg.num_pos_embed, c)) if cfg.use_abs_pos_emb else None
        self.pos_drop = nnx.Dropout(cfg.pos_drop_rate, rngs=rngs)
        tables = rope_tables(cfg) if cfg.use_rot_pos_emb else None
        self.rope_sin = Buffer(jnp.asarray(tables[0])) if tables else None
        self.rope_cos = Buffer(jnp.asarray(tables[1])) if tables else None
        rates = cfg.drop_path_rates()
        if scan_layers:
            self.blocks = stack_blocks([EvaBlock(cfg, i, max(rates), dtype=dtype, rngs=rngs)
                                        for i in range(len(rates))], rates)
        else:
            self.blocks = nnx.List([EvaBlock(cfg, i, rate, dtype=dtype, rngs=rngs) for i, rate in enumerate(rates)])
        self.norm = None if cfg.has_fc_norm else layer_norm(c, dtype, rngs, eps=cfg.norm_eps)
        self.fc_norm = layer_norm(c, dtype, rngs, eps=cfg.norm_eps) if cfg.has_fc_norm else None
        self.head_drop = nnx.Dropout(cfg.drop_rate, rngs=rngs)
        self.head = (_linear(c, cfg.num_classes, std=0.02 * HEAD_INIT_SCALE, dtype=dtype, rngs=rngs)
                     if cfg.num_classes else None)

    def set_grad_checkpointing(self, enable: bool = True, policy: str = "full") -> None:
        """Activation checkpointing per block, as VisionTransformer.set_grad_checkpointing."""
        self.grad_checkpointing = policy if enable else None

    # ---------------------------------------------------------------------------------------------
    def embed(self, x: jax.Array) -> tuple[jax.Array, tuple[int, int]]:
        """Patches, class and register tokens, absolute position embedding: (tokens (B, T, C), the grid)."""
        grid = self.patch_embed.grid(*x.shape[1:3])
        # Matmuls run in self.dtype; the residual stream stays float32 (as under torch.autocast).
        x = self.patch_embed(x.astype(self.dtype)).astype(jnp.float32)
        b, c = x.shape[0], x.shape[-1]
        prefix = [jnp.broadcast_to(t[...], (b,) + t[...].shape[1:]) for t in (self.cls_token, self.reg_token)
                  if t is not None]
        pos = self.pos_embed_at(grid)
        if pos is None:
            x = jnp.concatenate(prefix + [x], axis=1)
        elif self.cfg.no_embed_class:
            x = jnp.concatenate(prefix + [x + pos], axis=1)
        else:
            x = jnp.concatenate(prefix + [x], axis=1) + pos
        return self.pos_drop(x), grid

    def pos_embed_at(self, grid: tuple[int, int]) -> jax.Array | None:
        """The absolute position table on the grid (resized by cfg.pos_embed_interp off the model's grid)."""
        cfg = self.cfg
        if grid != (cfg.grid_size, cfg.grid_size) and not cfg.dynamic_img_size:
            raise ValueError(f"the images give a {grid[0]}x{grid[1]} patch grid, the model's is "
                             f"{cfg.grid_size}x{cfg.grid_size}: create the model with dynamic_img_size=True")
        if self.pos_embed is None:
            return None
        prefix = 0 if cfg.no_embed_class else cfg.num_prefix_tokens
        return resample_pos_embed(self.pos_embed[...], prefix, cfg.grid_size, grid, cfg.pos_embed_interp)

    def block_args(self, grid: tuple[int, int]) -> tuple:
        return (self.rope(grid),)

    def rope(self, grid: tuple[int, int] | None = None):
        """(sin, cos) of the grid: the buffers at the model's grid, else tables cached per shape
        (constants of the trace: one compilation per shape)."""
        if self.rope_sin is None:
            return None
        if grid is None or grid == (self.cfg.grid_size, self.cfg.grid_size):
            return self.rope_sin[...], self.rope_cos[...]
        return tuple(jnp.asarray(t) for t in rope_tables(self.cfg, tuple(grid)))

    def pool(self, x: jax.Array) -> jax.Array:
        """Tokens after the final norm (B, T, C) -> the features fed to the head."""
        x = x[:, 0] if self.cfg.global_pool == "token" else x[:, self.cfg.num_prefix_tokens:].mean(axis=1)
        return self.fc_norm(x) if self.fc_norm is not None else x

    def head_logits(self, pooled: jax.Array) -> jax.Array:
        return self.head(self.head_drop(pooled)) if self.head is not None else pooled

    def forward_features(self, x: jax.Array) -> jax.Array:
        x, grid = self.embed(x)
        x = run_blocks(self.blocks, x, self.rope(grid), remat=self.grad_checkpointing, scanned=self.scan_layers)
        return self.final_norm(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head_logits(self.pool(self.forward_features(x)))

    def forward_intermediates(self, x: jax.Array, attention: bool = True, *, indices=None, norm: bool = False,
                              output_fmt: str = "NHWC", return_prefix_tokens: bool = False,
                              intermediates_only: bool = False, stop_early: bool = False):
        """Without `indices`: logits (None without a head), pooled features, every block's output
        and (if asked) attention. With `indices`: dense features, as VisionTransformer's."""
        if indices is not None:
            return self.dense_intermediates(x, indices, norm, output_fmt, return_prefix_tokens, intermediates_only,
                                             stop_early)
        x, grid = self.embed(x)
        x, hidden, maps = run_blocks_with_intermediates(self.blocks, x, self.rope(grid), attention=attention,
                                                        scanned=self.scan_layers)
        pooled = self.pool(self.final_norm(x))
        logits = self.head_logits(pooled) if self.cfg.num_classes else None
        return EvaOutput(logits, pooled, hidden, maps)
