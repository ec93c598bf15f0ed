"""Read any supported checkpoint into canonical weights, a config and metadata."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .checkpoint_io import STATE_DICT_SUFFIXES, CheckpointError, _existing, _read_npz, _read_state_dict
from .config import ViTConfig
from .layout import Weights, check_weights
from .registry import get_config
from .timm_layout import TIMM


@dataclasses.dataclass
class Checkpoint:
    weights: Weights  # canonical names and shapes
    config: ViTConfig
    meta: dict[str, Any]  # e.g. class_names, preprocess, source


def read_checkpoint(path: str | os.PathLike, model: str | None = None, **overrides: Any) -> Checkpoint:
    """Canonical weights, config and metadata from a checkpoint file.

    The config is, in order of preference: the preset `model` with `overrides`; the config the
    file carries, with `overrides`. Raises CheckpointError / WeightsMismatchError naming the problem.
    """
    path = _existing(path)
    if path.suffix == ".npz":
        raw, stored, meta = _read_npz(path)
    elif path.suffix in STATE_DICT_SUFFIXES:
        raw, stored, meta = _read_state_dict(path)
    else:
        raise CheckpointError(f"{path}: unknown checkpoint format {path.suffix!r}; expected .npz or one of {STATE_DICT_SUFFIXES}")
    if model is not None:
        config = get_config(model, **overrides)
    elif stored is not None:
        config = stored.replace(**overrides) if overrides else stored
    else:
        raise CheckpointError(f"{path}: carries no model config; name the architecture (e.g. --model vit_base_patch16_224)")
    weights = raw if path.suffix == ".npz" else TIMM.import_(raw, config)
    check_weights(weights, config, what=str(path))
    return Checkpoint(weights, config, meta)
