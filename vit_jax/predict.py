"""Class probabilities and attention weights from a Flax model (twin of vit_torch/predict.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vit_common import Checkpoint

from .models import Model, build_model
from .weights import load_canonical_


def load_model(ckpt: Checkpoint) -> Model:
    """The checkpoint's model with its weights, in eval mode."""
    model = load_canonical_(build_model(ckpt.config, rngs=nnx.Rngs(0)), ckpt.weights)
    model.eval()
    return model


@nnx.jit(static_argnames="attention")  # module-level, so compiled once per model structure and shape
def _probs_and_attentions(model: Model, x: jax.Array, attention: bool):
    out = model.forward_intermediates(x, attention=attention)
    return jax.nn.softmax(out.logits.astype(jnp.float32), axis=-1), out.attentions


def predict(model: Model, images_nhwc: np.ndarray, attention: bool = True
            ) -> tuple[np.ndarray, list[np.ndarray]]:
    """(B, K) float32 probabilities and, if asked, every layer's attention
    (ViT: (B, heads, T, T); Swin: every block's (B * windows, heads, w*w, w*w))."""
    if not model.cfg.num_classes:
        raise ValueError("the model has no classification head (num_classes=0): nothing to predict")
    model.eval()  # dropout off; distilled models average both heads
    probs, maps = _probs_and_attentions(model, jnp.asarray(images_nhwc, jnp.float32), attention)
    return np.asarray(probs), [np.asarray(m, np.float32) for m in maps]
