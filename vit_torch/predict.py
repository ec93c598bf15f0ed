"""Class probabilities and attention weights from a PyTorch model (twin of vit_jax/predict.py)."""
from __future__ import annotations

import numpy as np
import torch

from vit_common import Checkpoint

from .models import Model, build_model
from .weights import load_canonical_


def load_model(ckpt: Checkpoint) -> Model:
    """The checkpoint's model with its weights, in eval mode."""
    return load_canonical_(build_model(ckpt.config), ckpt.weights).eval()


@torch.inference_mode()
def _probs_and_attentions(model: Model, x: torch.Tensor, attention: bool):
    out = model.forward_intermediates(x, attention=attention)
    return torch.softmax(out.logits.float(), dim=-1), out.attentions


def predict(model: Model, images_nhwc: np.ndarray, attention: bool = True
            ) -> tuple[np.ndarray, list[np.ndarray]]:
    """(B, K) float32 probabilities and, if asked, every layer's attention
    (ViT: (B, heads, T, T); Swin: every block's (B * windows, heads, w*w, w*w)).

    Takes NHWC images like the Flax twin and transposes them to NCHW here."""
    if not model.cfg.num_classes:
        raise ValueError("the model has no classification head (num_classes=0): nothing to predict")
    model.eval()  # dropout off; distilled models average both heads
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(images_nhwc, np.float32).transpose(0, 3, 1, 2)))
    probs, maps = _probs_and_attentions(model, x.to(device), attention)
    return probs.cpu().numpy(), [m.float().cpu().numpy() for m in maps]
