"""Class probabilities, features and attention weights from a PyTorch model (twin of vit_jax/predict.py)."""
from __future__ import annotations

import numpy as np
import torch

from vit_common import Checkpoint
from vit_common.predict.outputs import Prediction

from .models import Model, build_model
from .weights import load_canonical_


def load_model(ckpt: Checkpoint) -> Model:
    """The checkpoint's model with its weights, in eval mode."""
    return load_canonical_(build_model(ckpt.config), ckpt.weights).eval()


@torch.inference_mode()
def _forward(model: Model, x: torch.Tensor, attention: bool):
    out = model.forward_intermediates(x, attention=attention)
    probs = None if out.logits is None else torch.softmax(out.logits.float(), dim=-1)
    return probs, out.pooled, out.attentions, getattr(out, "pool_attention", None)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.float().cpu().numpy()


def run(model: Model, images_nhwc: np.ndarray, attention: bool = True) -> Prediction:
    """Probabilities (None without a head), the pooled features that feed the head, and, if
    asked, every layer's attention and a MAP probe's (see Prediction).

    Takes NHWC images like the Flax twin and transposes them to NCHW here."""
    model.eval()  # dropout off; distilled models average both heads
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(images_nhwc, np.float32).transpose(0, 3, 1, 2)))
    probs, features, maps, probe = _forward(model, x.to(device), attention)
    return Prediction(None if probs is None else _numpy(probs), _numpy(features), [_numpy(m) for m in maps],
                      None if probe is None else _numpy(probe))


def predict(model: Model, images_nhwc: np.ndarray, attention: bool = True
            ) -> tuple[np.ndarray, list[np.ndarray]]:
    """(B, K) float32 probabilities and, if asked, every layer's attention
    (ViT: (B, heads, T, T); Swin: every block's (B * windows, heads, w*w, w*w)).

    Takes NHWC images like the Flax twin and transposes them to NCHW here."""
    if not model.cfg.num_classes:
        raise ValueError("the model has no classification head (num_classes=0): nothing to predict")
    out = run(model, images_nhwc, attention)
    return out.probs, out.attentions


@torch.inference_mode()
def patch_features(model: Model, images_nhwc: np.ndarray) -> np.ndarray:
    """(B, H', W', C) float32: the last block's patch tokens after the final norm, on the grid
    (NHWC like the Flax twin's, so both twins save the same array)."""
    if not hasattr(model, "get_intermediate_layers"):
        raise ValueError("patch features need a ViT or Eva model (Swin's tokens are merged per stage)")
    model.eval()
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(images_nhwc, np.float32).transpose(0, 3, 1, 2)))
    out = model.forward_intermediates(x.to(device), indices=1, norm=True, output_fmt="NHWC", intermediates_only=True)
    return _numpy(out[0])
