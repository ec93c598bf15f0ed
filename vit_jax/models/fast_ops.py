"""Faster-to-differentiate formulations of two layers, with the numbers of the originals.

XLA:CPU trains these slowly in their textbook form (see docs/benchmarks.md):
- LayerNorm: autodiff of the two-pass variance lets XLA fuse the residual-gradient chain into
  every weight gradient, so the backward's work grows with depth squared. FastLayerNorm keeps
  nnx.LayerNorm's forward op for op and gives it the closed-form backward.
- Patch embedding: a stride-p p x p convolution is a matmul over flattened patches; XLA:CPU's
  convolution (forward and backward) is ~10x slower than its matmul here. patch_matmul applies
  an nnx.Conv's own HWIO kernel and bias that way.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx


def _ln_forward(x, scale, bias, eps):
    """nnx.LayerNorm's forward (two-pass variance, over the last axis), op for op."""
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # statistics in at least float32
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    rstd = jax.lax.rsqrt(var + eps)
    y = (x - mean) * (rstd * scale) + bias
    return y.astype(x.dtype), (xf - mean) * rstd, rstd


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm_fn(x, scale, bias, eps):
    return _ln_forward(x, scale, bias, eps)[0]


def _ln_fwd(x, scale, bias, eps):
    y, xhat, rstd = _ln_forward(x, scale, bias, eps)
    return y, (xhat, rstd, scale, bias)


def _ln_bwd(eps, res, dy):
    xhat, rstd, scale, bias = res
    g = dy.astype(xhat.dtype)
    batch_axes = tuple(range(g.ndim - 1))
    dscale = jnp.sum(g * xhat, axis=batch_axes)
    dbias = jnp.sum(g, axis=batch_axes)
    gx = g * scale.astype(g.dtype)  # the gradient w.r.t. xhat
    dx = rstd * (gx - gx.mean(-1, keepdims=True) - xhat * (gx * xhat).mean(-1, keepdims=True))
    return dx.astype(dy.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


layer_norm_fn.defvjp(_ln_fwd, _ln_bwd)


class FastLayerNorm(nnx.LayerNorm):
    """nnx.LayerNorm (same parameters, same forward) over the last axis, with a closed-form backward."""

    def __call__(self, x, *, mask=None):
        if mask is not None or self.scale is None or self.bias is None or self.reduction_axes not in (-1, (-1,)):
            return super().__call__(x, mask=mask)
        x, scale, bias = self.promote_dtype((x, self.scale[...], self.bias[...]), dtype=self.dtype)
        return layer_norm_fn(x, scale, bias, self.epsilon)


def patch_matmul(conv: nnx.Conv, x: jax.Array) -> jax.Array:
    """conv(x) for a stride-p, p x p, VALID nnx.Conv, as reshape + matmul: (B, H, W, C) -> (B, H/p, W/p, E)."""
    p = conv.kernel_size[0]
    b, h, w, c = x.shape
    bias = conv.bias[...] if conv.bias is not None else None
    x, kernel, bias = conv.promote_dtype((x, conv.kernel[...], bias), dtype=conv.dtype)
    patches = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // p, w // p, p * p * c)
    # HWIO kernel rows in (kh, kw, c) order match the patches' flattening.
    y = jnp.matmul(patches, kernel.reshape(p * p * c, -1), precision=conv.precision)
    return y + bias if bias is not None else y
