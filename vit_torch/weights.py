"""The PyTorch twin's parameters <-> the canonical layout (through timm's names)."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from vit_common import TIMM, Weights, check_weights

from .models import Model


def state_dict_numpy(model: torch.nn.Module) -> Weights:
    return {k: v.detach().cpu().float().numpy() if v.dtype == torch.bfloat16 else v.detach().cpu().numpy()
            for k, v in model.state_dict().items()}


def to_canonical(model: Model) -> Weights:
    """Canonical weights of a model."""
    return TIMM.import_(state_dict_numpy(model), model.cfg)


def grads_to_canonical(model: Model) -> Weights:
    """Each parameter's .grad, mapped to canonical names (missing grads count as zeros)."""
    grads = {
        name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu().numpy()
        for name, p in model.named_parameters()
    }
    return TIMM.import_(grads, model.cfg)


def load_canonical_(model: Model, weights: Mapping[str, np.ndarray]) -> Model:
    """Copy canonical weights into the model in place (strict: every entry, no extras)."""
    check_weights(weights, model.cfg, what="weights")
    # Copies: arrays loaded from files may be read-only, which torch.from_numpy refuses to share.
    state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in TIMM.export(weights, model.cfg).items()}
    model.load_state_dict(state, strict=True)
    return model
