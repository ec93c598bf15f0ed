"""Model configurations: the ViT, Swin and Eva families, the named presets, fixed tables (position
embeddings, Swin windows). Numpy only."""
from ..errors import ConfigError
from .eva import EvaConfig
from .families import CONFIG_CLASSES, ModelConfig, config_from_dict
from .posemb import fixed_pos_embed
from .presets import PRESETS, config_class, get_config, list_models
from .swin import SwinConfig
from .vit import ViTConfig

__all__ = [
    "CONFIG_CLASSES", "ConfigError", "EvaConfig", "ModelConfig", "PRESETS", "SwinConfig", "ViTConfig", "config_class",
    "config_from_dict", "fixed_pos_embed", "get_config", "list_models",
]
