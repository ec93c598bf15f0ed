"""A transformers family: how its names are recognised and read, its config.json read and written."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ...weights import Weights
from ..base import Layout


@dataclasses.dataclass(frozen=True)
class Family:
    model_types: tuple[str, ...]  # config.json's model_type values it reads
    layout: Layout  # detection and reading of its state dicts (HF names -> timm names)
    # (config.json, the weights' shape summary) -> our config's fields the shapes cannot say.
    hints: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
    # Whether this family is the one that writes a config (the first that accepts wins).
    accepts: Callable[[Any], bool]
    # (timm-named weights, config, metadata) -> (HF-named weights, config.json); refuses what the
    # transformers class cannot hold.
    write: Callable[[Weights, Any, dict[str, Any]], tuple[Weights, dict[str, Any]]]


def strip_prefix(raw: Weights, prefixes: tuple[str, ...]) -> Weights:
    """Names without the prefix a task class puts before its base model ('vit.', 'vision_model.')."""
    out = {}
    for name, value in raw.items():
        for prefix in prefixes:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        out[name] = value
    return out


def hf_config(model_type: str, architecture: str, cfg: Any, **fields: Any) -> dict[str, Any]:
    """config.json's common part: what transformers needs to pick and build the class."""
    return {"model_type": model_type, "architectures": [architecture], "num_channels": cfg.in_chans,
            "image_size": cfg.img_size, "patch_size": cfg.patch_size, "hidden_size": cfg.embed_dim,
            "num_attention_heads": cfg.num_heads, "num_hidden_layers": cfg.depth, "dtype": "float32", **fields}
