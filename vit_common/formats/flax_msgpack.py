"""Flax's msgpack files (flax.serialization), as AIMv2's JAX release ships them: read to flat
'/'-joined names, and written back."""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from ..atomic import atomic_write
from ..errors import CheckpointError
from ..weights import Weights
from .containers import existing


def read_msgpack(path) -> Weights:
    """A Flax msgpack file (flax.serialization) as flat '/'-joined names; a variables dict's
    'params' collection is unwrapped and its other collections (batch_stats) dropped."""
    path = existing(path)
    try:
        from flax import serialization
    except ImportError as e:
        raise CheckpointError(f"{path}: reading Flax .msgpack files needs flax") from e
    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack raises several types for damaged bytes
        raise CheckpointError(f"{path}: not a readable Flax .msgpack file ({type(e).__name__}: {e})") from e
    if not isinstance(tree, dict):
        raise CheckpointError(f"{path}: holds a {type(tree).__name__}, not a tree of parameters")
    if isinstance(tree.get("params"), dict):
        tree = tree["params"]
    flat: Weights = {}
    _flatten(tree, "", flat, path)
    return flat


def _flatten(tree: Mapping, prefix: str, out: Weights, path) -> None:
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(value, name + "/", out, path)
        elif isinstance(value, np.ndarray):
            out[name] = value
        else:
            raise CheckpointError(f"{path}: entry {name} is a {type(value).__name__}, not an array")


def save_msgpack(path: str | os.PathLike, flat: Mapping[str, np.ndarray]) -> None:
    """Flat '/'-joined names -> a Flax variables dict {'params': tree}, as flax.serialization writes it."""
    from flax import serialization

    tree: dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = np.ascontiguousarray(value)
    blob = serialization.msgpack_serialize({"params": tree})
    atomic_write(path, lambda f: f.write(blob))
