"""What either twin's predict.run() returns, as numpy arrays (framework-free)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Prediction(NamedTuple):
    probs: np.ndarray | None  # (B, K) float32 class probabilities; None for a feature model (num_classes=0)
    features: np.ndarray  # (B, F) the pooled features that feed the head ((B, 2, C) for DeiT distilled)
    attentions: list[np.ndarray]  # every block's attention if asked: ViT (B, heads, T, T); Swin per window
    pool_attention: np.ndarray | None  # a MAP probe's attention over the tokens (B, heads, 1, T), if asked
