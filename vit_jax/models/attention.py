"""Softmax attention, chosen per backend: jax.nn.dot_product_attention (cuDNN on GPU), and on CPU
(opt-in, see CPU_ATTENTION) a formulation with its own backward whose forward + backward XLA:CPU
runs ~1.3-2x faster than the autodiff of the former.

Why the CPU version is faster (see docs/cpu-performance.md): autodiff of the (B, N, H, D) einsums
leaves XLA:CPU batched dots over non-leading batch axes plus a materialised transpose of the
(B, H, N, N) probabilities. Here every operand is head-major (B, H, N, D), so each dot's batch axes
lead and its operands are contiguous; the backward is written out (the textbook softmax-attention
gradient, as flash attention computes it) so that no (N, N) matrix is ever transposed: only the
small (N, D) operands are, and only where their layout requires it.

No key blocking (online softmax): at ViT sequence lengths one head's keys and values (a few
hundred tokens x D floats) fit in L2 cache, so a single key block is the blocked algorithm, and the
probabilities are kept for the backward rather than recomputed (a matmul saved for ~B*H*N*N floats
of memory per layer). Forward and gradients equal jax.nn.dot_product_attention's within float32
rounding (tests/test_jax_attention.py).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from jax import lax

# Opt-in until an idle-machine measurement shows the whole train step faster: on a loaded 2-core
# Xeon (2026-12-07) the attention alone ran 1.3-2x faster, but the step 0.89x (ViT-Ti/16) and 0.93x
# (Fashion-MNIST ViT) of the fused op's, within that machine's noise (docs/cpu-performance.md).
CPU_ATTENTION = os.environ.get("VIT_JAX_CPU_ATTENTION", "0") == "1"

# dot_general dimension numbers on head-major (B, H, N, D) operands; batch axes (B, H) lead.
_QK = (((3,), (3,)), ((0, 1), (0, 1)))  # (B,H,Nq,D) x (B,H,Nk,D) -> (B,H,Nq,Nk)
_PV = (((3,), (2,)), ((0, 1), (0, 1)))  # (B,H,Nq,Nk) x (B,H,Nk,D) -> (B,H,Nq,D)
# (B,H,D,Nq) x (B,H,Nq,Nk) -> (B,H,D,Nk): key-side gradients, transposed. XLA:CPU hands a dot to its
# fast matmul library (YNNPACK) only when the left operand contracts its last axis; a dot contracting
# the (N, N) matrix's query axis in place falls to a slower generic loop (measured: ~5x the time).
_KT = (((3,), (2,)), ((0, 1), (0, 1)))


def _head_major(x: jax.Array) -> jax.Array:
    return x.transpose(0, 2, 1, 3)  # (B, N, H, D) <-> (B, H, N, D)


def _forward(q, k, v):
    qh, kh, vh = _head_major(q), _head_major(k), _head_major(v)
    # As jax.nn.dot_product_attention: logits, then the scale, softmax in float32.
    logits = lax.dot_general(qh, kh, _QK) * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    probs = jax.nn.softmax(logits, axis=-1)
    out = lax.dot_general(probs, vh, _PV)
    return _head_major(out), (qh, kh, vh, probs, out)


@jax.custom_vjp
def cpu_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(D)) v over (B, N, H, D) operands, float32; a backward of its own."""
    return _forward(q, k, v)[0]


def _cpu_attention_bwd(res, d_out):
    qh, kh, vh, probs, out = res
    d_out = _head_major(d_out)
    d_probs = lax.dot_general(d_out, vh, _QK)
    # softmax's backward: p * (dp - sum_k p dp), and sum_k p dp = sum_d dO * O (fewer terms).
    row = jnp.sum(d_out * out, axis=-1, keepdims=True)
    d_logits = probs * (d_probs - row) * jnp.asarray(qh.shape[-1] ** -0.5, qh.dtype)
    dq = lax.dot_general(d_logits, kh, _PV)
    # dK^T = Q^T dS and dV^T = dO^T P: only the small (N, D) operands are transposed.
    dk = lax.dot_general(qh.transpose(0, 1, 3, 2), d_logits, _KT)
    dv = lax.dot_general(d_out.transpose(0, 1, 3, 2), probs, _KT)
    return _head_major(dq), dk.transpose(0, 3, 1, 2), dv.transpose(0, 3, 1, 2)


cpu_attention.defvjp(_forward, _cpu_attention_bwd)


def use_cpu_attention(dtype) -> bool:
    """The CPU formulation (when enabled: VIT_JAX_CPU_ATTENTION=1) for float32 on the CPU backend;
    everything else keeps the fused op (cuDNN on GPU; bf16 keeps its float32 logits there)."""
    return CPU_ATTENTION and jax.default_backend() == "cpu" and jnp.dtype(dtype) == jnp.float32


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(D)) v over (B, N, H, D): the best formulation for this backend and dtype."""
    if use_cpu_attention(q.dtype) and q.dtype == k.dtype == v.dtype:
        return cpu_attention(q, k, v)
    return jax.nn.dot_product_attention(q, k, v)
