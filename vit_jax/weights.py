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
    return unstack_blocks(flatten_params(nnx.to_pure_dict(state)))


def _stacked(name: str) -> bool:
    """A scanned model's block parameter: 'blocks.attn.qkv.kernel', no block index after 'blocks'."""
    head, _, tail = name.partition(".")
    return head == "blocks" and bool(tail) and not tail.split(".", 1)[0].isdigit()


def unstack_blocks(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Flat Flax names of a scanned model (blocks.NAME with a leading depth axis) -> per block
    (blocks.I.NAME), the unrolled model's names, which the canonical layout maps; others unchanged."""
    out = {}
    for name, value in flat.items():
        if _stacked(name):
            tail = name.partition(".")[2]
            out.update({f"blocks.{i}.{tail}": value[i] for i in range(value.shape[0])})
        else:
            out[name] = value
    return out


def flat_params(tree) -> dict[str, np.ndarray]:
    """A parameter tree (nnx.to_pure_dict, a train state's params) -> flat per-block Flax names."""
    return unstack_blocks(flatten_params(tree))


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
        if _stacked(name):  # a scanned model: block i's array at index i
            tail = name.partition(".")[2]
            value = np.stack([values[f"blocks.{i}.{tail}"] for i in range(var[...].shape[0])])
        else:
            value = values[name]
        var[...] = jnp.asarray(value, dtype=var[...].dtype)
    nnx.update(model, state)
    return model
