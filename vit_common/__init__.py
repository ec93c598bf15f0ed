"""Framework-free core shared by the twins: configs, presets, the canonical layout, file I/O.

Imports neither jax nor torch.
"""
from .checkpoint_io import CheckpointError, load_npz, load_state_dict, save_npz, save_safetensors
from .checkpoints import Checkpoint, load_canonical, read_checkpoint
from .config import ConfigError, ModelConfig, SwinConfig, ViTConfig, config_from_dict
from .layout import Weights, WeightsMismatchError, canonical_shapes, check_weights, count_params, links
from .posemb import fixed_pos_embed
from .registry import PRESETS, get_config, list_models
from .timm_layout import TIMM

__all__ = [
    "Checkpoint", "CheckpointError", "ConfigError", "ModelConfig", "PRESETS", "SwinConfig", "TIMM", "ViTConfig",
    "Weights", "WeightsMismatchError", "canonical_shapes", "check_weights", "config_from_dict", "count_params",
    "fixed_pos_embed", "get_config", "links",
    "list_models", "load_canonical", "read_checkpoint", "load_npz", "load_state_dict", "save_npz", "save_safetensors",
]
