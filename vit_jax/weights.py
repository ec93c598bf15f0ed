"""The Flax twin's parameters <-> the canonical layout (see vit_common.weights.flax_names)."""
from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from vit_common import Weights, check_weights
from vit_common.weights import FLAX, flatten_params

from .models import Model


def _flat(state: nnx.State) -> dict[str, np.ndarray]:
    return flatten_params(nnx.to_pure_dict(state))


def to_canonical(model: Model) -> Weights:
    """Canonical weights of a model."""
    return FLAX.import_(_flat(nnx.state(model, nnx.Param)), model.cfg)


def grads_to_canonical(grads: nnx.State, cfg) -> Weights:
    """A gradient State (as returned by nnx.grad on the model) mapped to canonical names."""
    return FLAX.import_(_flat(grads), cfg)


def load_canonical_(model: Model, weights: Mapping[str, np.ndarray]) -> Model:
    """Copy canonical weights into the model in place (strict: every entry, no extras)."""
    check_weights(weights, model.cfg, what="weights")
    values = FLAX.export(weights, model.cfg)
    state = nnx.state(model, nnx.Param)
    for path, var in nnx.to_flat_state(state):
        name = ".".join(map(str, path))
        var[...] = jnp.asarray(values[name], dtype=var[...].dtype)
    nnx.update(model, state)
    return model
