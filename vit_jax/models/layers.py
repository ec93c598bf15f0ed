"""Building blocks of the Flax NNX twin; attribute names mirror vit_torch (timm's names)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from vit_common.config.dynamic import grid_of, pos_embed_matrices
from vit_common.predict.dense import check_output_fmt

from .attention import dot_product_attention
from .fast_ops import FastLayerNorm, patch_matmul

LN_EPS = 1e-6  # Google's ViT; PyTorch's default (1e-5) is a classic porting bug

xavier_uniform = nnx.initializers.xavier_uniform()
lecun_normal = nnx.initializers.lecun_normal()  # truncated normal, variance 1/fan_in
zeros = nnx.initializers.zeros_init()
# timm's trunc_normal_(std=0.02) cuts at +-2 in absolute terms, i.e. at 100 std: a plain normal.
normal_02 = nnx.initializers.normal(0.02)


def xavier_uniform_fused(parts: int):
    """Xavier-uniform as if each of `parts` side-by-side (C, C) projections were its own Dense."""

    def init(key, shape, dtype=jnp.float32):
        bound = math.sqrt(6.0 / (shape[0] + shape[1] // parts))
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def layer_norm(dim: int, dtype, rngs: nnx.Rngs, eps: float | None = None) -> nnx.LayerNorm:
    """LayerNorm with ViT's epsilon (LN_EPS) unless `eps` is given (Swin: 1e-5)."""
    # Two-pass variance, as PyTorch computes it; the fast E[x^2]-E[x]^2 form loses float32 digits.
    return FastLayerNorm(dim, epsilon=LN_EPS if eps is None else eps, use_fast_variance=False, dtype=dtype, rngs=rngs)


def make_norm(kind: str, dim: int, eps: float, dtype, rngs: nnx.Rngs) -> nnx.Module:
    """A norm of the config's kind: LayerNorm (scale, bias) or RMSNorm (scale only, timm's RmsNorm)."""
    if kind == "rmsnorm":
        return nnx.RMSNorm(dim, epsilon=eps, use_fast_variance=False, dtype=dtype, rngs=rngs)
    return layer_norm(dim, dtype, rngs, eps=eps)


def quick_gelu(x: jax.Array) -> jax.Array:
    """x * sigmoid(1.702 x): OpenAI CLIP's approximation of GELU (timm 'quick_gelu')."""
    return x * jax.nn.sigmoid(1.702 * x)


def activation(name: str, x: jax.Array) -> jax.Array:
    """timm's act_layer names. jax.nn.gelu defaults to the tanh approximation: 'gelu' asks for erf."""
    if name == "gelu":
        return jax.nn.gelu(x, approximate=False)
    if name == "gelu_tanh":
        return jax.nn.gelu(x, approximate=True)
    if name == "quick_gelu":
        return quick_gelu(x)
    if name == "silu":
        return jax.nn.silu(x)
    raise ValueError(f"unknown act_layer {name!r}")


class Buffer(nnx.Variable):
    """A constant array held by a module (fixed position tables): not a trainable parameter."""


def fit_to_patches(x: jax.Array, patch_size: int, pad: bool) -> jax.Array:
    """NHWC images cut to whole patches, or (pad) padded right / bottom with zeros up to them (timm)."""
    h, w = x.shape[1:3]
    gh, gw = grid_of(h, w, patch_size, pad)
    if pad:
        return jnp.pad(x, ((0, 0), (0, gh * patch_size - h), (0, gw * patch_size - w), (0, 0)))
    return x[:, :gh * patch_size, :gw * patch_size]


def check_images(x: jax.Array, img_size: int, in_chans: int, any_size: bool) -> None:
    """Images must be NHWC of the model's size, or of any size large enough for one patch."""
    if any_size:
        if x.ndim != 4 or x.shape[-1] != in_chans:
            raise ValueError(f"expected images of shape (batch, height, width, {in_chans}) (NHWC), got {tuple(x.shape)}")
        return
    expected = (img_size, img_size, in_chans)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"expected images of shape (batch, {', '.join(map(str, expected))}) (NHWC), got {tuple(x.shape)}; "
            "dynamic_img_size=True runs any size"
        )


def resample_pos_embed(pos: jax.Array, num_prefix: int, old: int, grid: tuple[int, int], rule: str) -> jax.Array:
    """A (1, num_prefix + old*old, C) table on the (h, w) grid under `rule` (vit_common.config.dynamic):
    one fixed float64-exact matrix per axis, so it is differentiable and a shape traces once."""
    if tuple(grid) == (old, old):
        return pos
    rows, cols = (jnp.asarray(m, pos.dtype) for m in pos_embed_matrices(old, tuple(grid), rule))
    c, highest = pos.shape[-1], jax.lax.Precision.HIGHEST
    table = jnp.einsum("hi,ijc->hjc", rows, pos[0, num_prefix:].reshape(old, old, c), precision=highest)
    table = jnp.einsum("wj,hjc->hwc", cols, table, precision=highest)
    return jnp.concatenate([pos[:, :num_prefix], table.reshape(1, -1, c)], axis=1)


def dense_output(tokens: jax.Array, num_prefix: int, grid: tuple[int, int], output_fmt: str):
    """(patch tokens on the grid, prefix tokens): NHWC (B, H', W', C), NCHW or NLC (B, N, C)."""
    check_output_fmt(output_fmt)
    prefix, patches = tokens[:, :num_prefix], tokens[:, num_prefix:]
    if output_fmt != "NLC":
        patches = patches.reshape(patches.shape[0], *grid, patches.shape[-1])
        if output_fmt == "NCHW":
            patches = patches.transpose(0, 3, 1, 2)
    return patches, prefix


class PatchEmbed(nnx.Module):
    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, bias: bool = True,
                 norm: nnx.Module | None = None, *, dynamic: bool = False, pad: bool = False, dtype, rngs):
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.dynamic, self.pad = dynamic, pad  # timm's dynamic_img_size / dynamic_img_pad
        self.proj = nnx.Conv(
            in_chans, embed_dim, kernel_size=(patch_size, patch_size), strides=(patch_size, patch_size),
            padding="VALID", use_bias=bias, kernel_init=lecun_normal, bias_init=zeros, dtype=dtype, rngs=rngs,
        )
        self.norm = norm  # AIMv2 normalises the patch tokens

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return grid_of(height, width, self.patch_size, self.pad)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_images(x, self.img_size, self.in_chans, self.dynamic or self.pad)
        x = fit_to_patches(x, self.patch_size, self.pad)
        x = patch_matmul(self.proj, x)  # = self.proj(x), faster to differentiate on CPU
        x = x.reshape(x.shape[0], -1, x.shape[-1])  # (B, N, C)
        return self.norm(x) if self.norm is not None else x


def _heads(x: jax.Array, num_heads: int) -> jax.Array:
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads)  # (B, N, H, D)


def attention(q, k, v, dropout: nnx.Dropout | None, return_weights: bool):
    """Softmax attention over (B, N, H, D); the backend's fast formulation unless weights or dropout are needed."""
    if not return_weights and (dropout is None or dropout.rate == 0.0 or dropout.deterministic):
        return dot_product_attention(q, k, v), None
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * q.shape[-1] ** -0.5, k)
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", weights if dropout is None else dropout(weights), v), weights


class Attention(nnx.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float,
                 proj_bias: bool = True, *, dtype, rngs):
        self.num_heads = num_heads
        self.qkv = nnx.Linear(dim, 3 * dim, use_bias=qkv_bias, kernel_init=xavier_uniform_fused(3),
                              bias_init=zeros, dtype=dtype, rngs=rngs)
        self.attn_drop = nnx.Dropout(attn_drop, rngs=rngs)
        self.proj = nnx.Linear(dim, dim, use_bias=proj_bias, kernel_init=xavier_uniform, bias_init=zeros, dtype=dtype,
                               rngs=rngs)
        self.proj_drop = nnx.Dropout(proj_drop, rngs=rngs)

    def __call__(self, x: jax.Array, return_weights: bool = False):
        b, n, c = x.shape
        q, k, v = (_heads(t, self.num_heads) for t in jnp.split(self.qkv(x), 3, axis=-1))
        x, weights = attention(q, k, v, self.attn_drop, return_weights)
        return self.proj_drop(self.proj(x.reshape(b, n, c))), weights


def _linear(dim_in: int, dim_out: int, init: str, bias: bool, dtype, rngs) -> nnx.Linear:
    """init 'jax': Google's ViT (Xavier-uniform kernels, biases N(0, 1e-6));
    'timm': timm's default (kernels N(0, 0.02^2), zero biases), as Swin uses."""
    kernel_init, bias_init = (xavier_uniform, nnx.initializers.normal(1e-6)) if init == "jax" else (normal_02, zeros)
    return nnx.Linear(dim_in, dim_out, use_bias=bias, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype,
                      rngs=rngs)


class Mlp(nnx.Module):
    def __init__(self, dim: int, hidden: int, drop: float, *, init: str = "jax", act: str = "gelu", bias: bool = True,
                 dtype, rngs):
        self.act = act  # default: exact erf GELU, as in Google's ViT
        self.fc1 = _linear(dim, hidden, init, bias, dtype, rngs)
        self.drop1 = nnx.Dropout(drop, rngs=rngs)
        self.fc2 = _linear(hidden, dim, init, bias, dtype, rngs)
        self.drop2 = nnx.Dropout(drop, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.drop2(self.fc2(self.drop1(activation(self.act, self.fc1(x)))))


class SwiGLUPacked(nnx.Module):
    """timm's GluMlp as SwiGLUPacked (DINOv2 giant): fc1 (dim -> hidden) split in halves, act(first) * second."""

    def __init__(self, dim: int, hidden: int, drop: float, *, act: str = "silu", bias: bool = True, dtype, rngs):
        self.act = act
        self.fc1 = _linear(dim, hidden, "jax", bias, dtype, rngs)
        self.drop1 = nnx.Dropout(drop, rngs=rngs)
        self.fc2 = _linear(hidden // 2, dim, "jax", bias, dtype, rngs)
        self.drop2 = nnx.Dropout(drop, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        gate, x = jnp.split(self.fc1(x), 2, axis=-1)
        return self.drop2(self.fc2(self.drop1(activation(self.act, gate) * x)))


class SwiGLU(nnx.Module):
    """timm's SwiGLU (AIMv2): act(fc1_g(x)) * fc1_x(x), then fc2."""

    def __init__(self, dim: int, hidden: int, drop: float, *, act: str = "silu", bias: bool = True, dtype, rngs):
        self.act = act
        self.fc1_g = _linear(dim, hidden, "jax", bias, dtype, rngs)
        self.fc1_x = _linear(dim, hidden, "jax", bias, dtype, rngs)
        self.drop1 = nnx.Dropout(drop, rngs=rngs)
        self.fc2 = _linear(hidden, dim, "jax", bias, dtype, rngs)
        self.drop2 = nnx.Dropout(drop, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.drop2(self.fc2(self.drop1(activation(self.act, self.fc1_g(x)) * self.fc1_x(x))))


MLP_LAYERS = {"mlp": Mlp, "swiglu_packed": SwiGLUPacked, "swiglu": SwiGLU}


class LayerScale(nnx.Module):
    """A learned per-channel scale of a residual branch (timm: `gamma`, initialised to init_values)."""

    def __init__(self, dim: int, init_values: float):
        self.gamma = nnx.Param(jnp.full((dim,), float(init_values)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.gamma[...].astype(x.dtype)


class DropPath(nnx.Module):
    """Stochastic depth: drop a sample's whole residual branch with probability `rate`."""

    def __init__(self, rate: float, *, rngs: nnx.Rngs):
        self.rate = rate
        self.deterministic = False  # set by model.train() / model.eval(), like nnx.Dropout
        self.rngs = rngs["dropout"].fork() if rate > 0 else nnx.data(None)

    def __call__(self, x: jax.Array) -> jax.Array:
        # A scanned block's rate is an array (one per layer, see blocks.stack_blocks), else a float.
        rate = self.rate[...] if isinstance(self.rate, nnx.Variable) else self.rate
        if self.deterministic or (isinstance(rate, float) and rate == 0.0):
            return x
        keep = 1.0 - rate
        mask = jax.random.bernoulli(self.rngs(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


class Block(nnx.Module):
    """Pre-norm encoder block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))); ls*: LayerScale or nothing."""

    def __init__(self, cfg, drop_path: float, *, dtype, rngs):
        dim = cfg.embed_dim
        self.norm1 = make_norm(cfg.norm_layer, dim, cfg.norm_eps, dtype, rngs)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.proj_drop_rate, cfg.proj_bias,
                              dtype=dtype, rngs=rngs)
        self.ls1 = LayerScale(dim, cfg.init_values) if cfg.init_values is not None else None
        self.drop_path1 = DropPath(drop_path, rngs=rngs)
        self.norm2 = make_norm(cfg.norm_layer, dim, cfg.norm_eps, dtype, rngs)
        self.mlp = MLP_LAYERS[cfg.mlp_layer](dim, cfg.mlp_dim, cfg.proj_drop_rate, act=cfg.act_layer,
                                             bias=cfg.proj_bias, dtype=dtype, rngs=rngs)
        self.ls2 = LayerScale(dim, cfg.init_values) if cfg.init_values is not None else None
        self.drop_path2 = DropPath(drop_path, rngs=rngs)

    def __call__(self, x: jax.Array, return_weights: bool = False):
        y, weights = self.attn(self.norm1(x), return_weights)
        x = x + self.drop_path1(self.ls1(y) if self.ls1 is not None else y)
        y = self.mlp(self.norm2(x))
        x = x + self.drop_path2(self.ls2(y) if self.ls2 is not None else y)
        return x, weights


class AttentionPoolLatent(nnx.Module):
    """Multihead attention pooling (big_vision's MAPHead): a learned probe attends to all tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, norm: str = "layernorm", eps: float = LN_EPS,
                 act: str = "gelu", dtype, rngs):
        self.num_heads = num_heads
        self.latent = nnx.Param(xavier_uniform(rngs.params(), (1, 1, dim)))
        self.q = nnx.Linear(dim, dim, kernel_init=xavier_uniform, bias_init=zeros, dtype=dtype, rngs=rngs)
        self.kv = nnx.Linear(dim, 2 * dim, kernel_init=xavier_uniform_fused(2), bias_init=zeros, dtype=dtype, rngs=rngs)
        self.proj = nnx.Linear(dim, dim, kernel_init=xavier_uniform, bias_init=zeros, dtype=dtype, rngs=rngs)
        self.norm = make_norm(norm, dim, eps, dtype, rngs)
        self.mlp = Mlp(dim, mlp_dim, 0.0, act=act, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, return_weights: bool = False):
        """(pooled features (B, C), the probe's attention (B, heads, 1, T) if asked, else None)."""
        b, n, c = x.shape
        latent = jnp.broadcast_to(self.latent[...].astype(x.dtype), (b, 1, c))
        q = _heads(self.q(latent), self.num_heads)
        k, v = (_heads(t, self.num_heads) for t in jnp.split(self.kv(x), 2, axis=-1))
        x, weights = attention(q, k, v, None, return_weights)
        x = self.proj(x.reshape(b, 1, c))
        x = x + self.mlp(self.norm(x))
        return x[:, 0], weights


class PreLogits(nnx.Module):
    """The original ViT's representation layer: Dense + tanh before the head."""

    def __init__(self, dim: int, representation_size: int, *, dtype, rngs):
        self.fc = nnx.Linear(dim, representation_size, kernel_init=lecun_normal, bias_init=zeros, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.tanh(self.fc(x))
