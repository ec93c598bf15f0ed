"""Run both twins on the same weights and inputs and measure how far apart they are.

Shared by the pytest suite and the demo/report command. This is the only code (with bench/)
that imports both frameworks.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import vit_jax
import vit_torch
from vit_common import ModelConfig, Weights

FLOAT32_TOL = 1e-5  # the contract (docs/parity.md): every tensor within 1e-5 relative to max(1, max|b|)
BF16_TOL = 1e-2
MEASURE = "max|a-b| / max(1, max|b|)"  # what rel_error computes, as reports name it


def bf16_tolerance(depth: int) -> float:
    """The bound on two twins' bf16 logits for a model of `depth` blocks.

    BF16_TOL up to 2 blocks (the suite's configs, measured 1.5e-3 to 5.9e-3), then growing as
    sqrt(depth / 2): each block adds two residual branches rounded to bf16's 8 significant bits,
    and independent rounding errors add up like a random walk. At depth 12 (DeiT-S, ViT-B) the
    twins' bf16 logits were measured ~1.1e-2 apart, each ~1e-2 from float32; the bound there is 2.4e-2.
    """
    return BF16_TOL * max(1.0, float(np.sqrt(depth / 2)))


def decided(reference_logits: np.ndarray, tol: float) -> np.ndarray:
    """The images whose float32 top-1 leads the runner-up by more than bf16 can resolve (2 x tol of
    the logits' scale): only there must bf16 predictions agree. A random head gives near-ties
    (margins ~1e-3) that no bf16 computation can order reliably."""
    top2 = np.sort(reference_logits, axis=-1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) > 2 * tol * max(1.0, float(np.abs(reference_logits).max()))


def rel_error(a, b) -> float:
    """max|a-b| / max(1, max|b|): absolute for small tensors, relative for large ones.

    inf when either side holds NaN or inf: a NaN error compares False with every tolerance
    (`nan > tol`, and Python's max() skips it), so it would pass checks written either way.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))) if a.size else 0.0)


def failures(errors: dict[str, float], tol: float) -> dict[str, float]:
    """The entries of `errors` not within `tol`, NaN included, for an assertion to name."""
    return {k: v for k, v in errors.items() if not v <= tol}


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Pin float32 matmuls: JAX's default on GPU/TPU is reduced precision, PyTorch may use TF32."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with jax.default_matmul_precision("highest"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def random_images(cfg: ModelConfig, batch: int, seed: int = 0) -> np.ndarray:
    """NHWC float32 pixels in [-1, 1], the range Google's checkpoints expect."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (batch, cfg.img_size, cfg.img_size, cfg.in_chans)).astype(np.float32)


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def perturb(weights: Weights, seed: int, scale: float = 0.02) -> Weights:
    """Add N(0, scale^2) noise to every entry, so zero heads, unit scales and zero biases carry
    information (a swapped scale/bias or a zero head would otherwise pass unnoticed).

    The scale is timm's init std, which keeps activations in a trained network's range. Much
    larger noise (0.05 on ViT-B, above its own weight scale) saturates every softmax (peak
    attention 0.99+), and near-one-hot attention is ill-conditioned: any two correct float32
    implementations then differ by ~1e-5 in the attention probabilities.
    """
    rng = np.random.default_rng(seed)
    return {k: (v + scale * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in weights.items()}


@dataclass
class Outputs:
    """One twin's outputs as float64-comparable numpy arrays, NHWC-independent."""

    logits: np.ndarray | None
    pooled: np.ndarray
    hidden_states: list[np.ndarray]
    attentions: list[np.ndarray]
    grads: Weights = field(default_factory=dict)
    stages: list[np.ndarray] = field(default_factory=list)  # Swin: every stage's output
    pool_attention: np.ndarray | None = None  # the MAP probe's attention (when attention was asked for)


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(jnp.asarray(x, jnp.float32))


def run_torch(model: vit_torch.models.Model, images_nhwc: np.ndarray, attention: bool = True,
              dtype: torch.dtype | None = None) -> Outputs:
    x = torch.from_numpy(nhwc_to_nchw(images_nhwc))
    autocast = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        out = model.forward_intermediates(x, attention=attention)
    return _outputs(out)


def _outputs(out) -> Outputs:
    return Outputs(None if out.logits is None else _np(out.logits), _np(out.pooled),
                   [_np(h) for h in out.hidden_states], [_np(a) for a in out.attentions],
                   stages=[_np(h) for h in getattr(out, "stages", [])],
                   pool_attention=None if getattr(out, "pool_attention", None) is None else _np(out.pool_attention))


@nnx.jit(static_argnames="attention")
def _jax_forward(model, x, attention):
    return model.forward_intermediates(x, attention=attention)


def run_jax(model: vit_jax.models.Model, images_nhwc: np.ndarray, attention: bool = True) -> Outputs:
    return _outputs(_jax_forward(model, jnp.asarray(images_nhwc), attention))


def labels_for(cfg: ModelConfig, batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + 1).integers(0, cfg.num_classes, batch)


def torch_grads(model: vit_torch.models.Model, images_nhwc: np.ndarray, labels: np.ndarray) -> tuple[float, Weights]:
    """Mean cross-entropy and its gradient for every parameter, in canonical names."""
    model.zero_grad(set_to_none=True)
    logits = model(torch.from_numpy(nhwc_to_nchw(images_nhwc)))
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
    loss.backward()
    return loss.item(), vit_torch.grads_to_canonical(model)


@nnx.jit
def _jax_loss_and_grads(model, x, labels):
    def loss_fn(m):
        logits = m(x)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        return -jnp.take_along_axis(logp, labels[:, None], axis=1).mean()

    return nnx.value_and_grad(loss_fn)(model)


def jax_grads(model: vit_jax.models.Model, images_nhwc: np.ndarray, labels: np.ndarray) -> tuple[float, Weights]:
    loss, grads = _jax_loss_and_grads(model, jnp.asarray(images_nhwc), jnp.asarray(labels))
    return float(loss), vit_jax.grads_to_canonical(grads, model.cfg)


def named_tensors(out: Outputs) -> dict[str, np.ndarray]:
    """Every tensor of one twin's outputs, named as the parity report names it."""
    named = {}
    for i, h in enumerate(out.hidden_states):
        named[f"block {i} hidden"] = h
        if out.attentions:
            named[f"block {i} attention"] = out.attentions[i]
    named.update({f"stage {i} output": h for i, h in enumerate(out.stages)})
    if out.pool_attention is not None:
        named["pool attention"] = out.pool_attention
    named["pooled"] = out.pooled
    if out.logits is not None:
        named["logits"] = out.logits
    return named


def non_finite(out: Outputs) -> list[str]:
    """Names of the tensors holding NaN or inf, in forward order."""
    return [name for name, x in named_tensors(out).items() if not np.isfinite(x).all()]


def compare(a: Outputs, b: Outputs) -> dict[str, float]:
    """Worst error per tensor kind (b is the reference side)."""
    errors = {"pooled": rel_error(a.pooled, b.pooled)}
    if b.logits is not None:
        errors["logits"] = rel_error(a.logits, b.logits)
    errors["hidden"] = max((rel_error(x, y) for x, y in zip(a.hidden_states, b.hidden_states, strict=True)), default=0.0)
    if b.stages:
        errors["stages"] = max(rel_error(x, y) for x, y in zip(a.stages, b.stages, strict=True))
    if b.attentions:
        errors["attention"] = max(rel_error(x, y) for x, y in zip(a.attentions, b.attentions, strict=True))
    if b.pool_attention is not None:  # the MAP probe's: an attention map too
        errors["attention"] = max(errors.get("attention", 0.0), rel_error(a.pool_attention, b.pool_attention))
    return errors


def compare_weights(a: Weights, b: Weights) -> dict[str, float]:
    if set(a) != set(b):
        raise ValueError(f"different entries: {sorted(set(a) ^ set(b))}")
    return {k: rel_error(a[k], b[k]) for k in b}


def build_pair(name: str, source: str, seed: int = 0, **overrides) -> tuple[vit_torch.models.Model, vit_jax.models.Model, Weights]:
    """Initialise in `source` ('torch' or 'jax'), perturb, convert through the canonical layout
    into the other twin. Returns (torch model, jax model, canonical weights), both in eval mode."""
    if source == "torch":
        torch.manual_seed(seed)
        tm = vit_torch.create_model(name, **overrides)
        weights = perturb(vit_torch.to_canonical(tm), seed)
        vit_torch.load_canonical_(tm, weights)
        jm = vit_jax.create_model(name, rngs=nnx.Rngs(seed + 100), **overrides)
        vit_jax.load_canonical_(jm, vit_torch.to_canonical(tm))
    elif source == "jax":
        jm = vit_jax.create_model(name, rngs=nnx.Rngs(seed), **overrides)
        weights = perturb(vit_jax.to_canonical(jm), seed)
        vit_jax.load_canonical_(jm, weights)
        tm = vit_torch.create_model(name, **overrides)
        vit_torch.load_canonical_(tm, vit_jax.to_canonical(jm))
    else:
        raise ValueError(f"source must be 'torch' or 'jax', got {source!r}")
    return tm, jm, weights
