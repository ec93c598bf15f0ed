"""The config families (ViT, Swin, Eva) and reading any back from the JSON a checkpoint carries.

A config travels inside checkpoints as `to_dict()` JSON; Swin's dict says `"arch": "swin"`,
Eva's `"arch": "eva"`, ViT's carries no tag, as before Swin existed.
"""
from __future__ import annotations

from typing import Any, Union

from ..errors import ConfigError
from .eva import EvaConfig
from .swin import SwinConfig
from .vit import ViTConfig

ModelConfig = Union[ViTConfig, SwinConfig, EvaConfig]
CONFIG_CLASSES = {"vit": ViTConfig, "swin": SwinConfig, "eva": EvaConfig}


def config_from_dict(values: dict[str, Any]) -> ModelConfig:
    """A config of any family from its to_dict() form (no 'arch' key: a ViT)."""
    arch = values.get("arch", "vit")
    if arch not in CONFIG_CLASSES:
        raise ConfigError(f"unknown model arch {arch!r}; known: {sorted(CONFIG_CLASSES)}")
    if arch == "vit":
        return ViTConfig.from_dict({k: v for k, v in values.items() if k != "arch"})
    return CONFIG_CLASSES[arch].from_dict(values)
