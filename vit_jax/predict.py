"""Class probabilities, features and attention weights from a Flax model (twin of vit_torch/predict.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vit_common import Checkpoint
from vit_common.predict.outputs import Prediction

from .models import Model, build_model
from .weights import load_canonical_


def load_model(ckpt: Checkpoint) -> Model:
    """The checkpoint's model with its weights, in eval mode."""
    model = load_canonical_(build_model(ckpt.config, rngs=nnx.Rngs(0)), ckpt.weights)
    model.eval()
    return model


@nnx.jit(static_argnames="attention")  # module-level, so compiled once per model structure and shape
def _forward(model: Model, x: jax.Array, attention: bool):
    out = model.forward_intermediates(x, attention=attention)
    probs = None if out.logits is None else jax.nn.softmax(out.logits.astype(jnp.float32), axis=-1)
    return probs, out.pooled, out.attentions, getattr(out, "pool_attention", None)


def run(model: Model, images_nhwc: np.ndarray, attention: bool = True) -> Prediction:
    """Probabilities (None without a head), the pooled features that feed the head, and, if
    asked, every layer's attention and a MAP probe's (see Prediction)."""
    model.eval()  # dropout off; distilled models average both heads
    probs, features, maps, probe = _forward(model, jnp.asarray(images_nhwc, jnp.float32), attention)
    return Prediction(None if probs is None else np.asarray(probs), np.asarray(features, np.float32),
                      [np.asarray(m, np.float32) for m in maps],
                      None if probe is None else np.asarray(probe, np.float32))


def predict(model: Model, images_nhwc: np.ndarray, attention: bool = True
            ) -> tuple[np.ndarray, list[np.ndarray]]:
    """(B, K) float32 probabilities and, if asked, every layer's attention
    (ViT: (B, heads, T, T); Swin: every block's (B * windows, heads, w*w, w*w))."""
    if not model.cfg.num_classes:
        raise ValueError("the model has no classification head (num_classes=0): nothing to predict")
    out = run(model, images_nhwc, attention)
    return out.probs, out.attentions


@nnx.jit
def _patch_features(model: Model, x: jax.Array) -> jax.Array:
    return model.forward_intermediates(x, indices=1, norm=True, output_fmt="NHWC", intermediates_only=True)[0]


def patch_features(model: Model, images_nhwc: np.ndarray) -> np.ndarray:
    """(B, H', W', C) float32: the last block's patch tokens after the final norm, on the grid."""
    if not hasattr(model, "get_intermediate_layers"):
        raise ValueError("patch features need a ViT or Eva model (Swin's tokens are merged per stage)")
    model.eval()
    return np.asarray(_patch_features(model, jnp.asarray(images_nhwc, jnp.float32)), np.float32)
