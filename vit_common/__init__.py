"""Framework-free core shared by the twins. Imports neither jax nor torch.

    config/    model configs (ViT, Swin, Eva), the named presets, fixed position and window tables
    weights/   the canonical layout (link tables), the twins' parameter names, resampling, adapting
    formats/   checkpoints in the wild, one module per family; reading any of them; pretrained names (Hub)
    train/     the training recipe, run set-up and logs shared by both twins' loops
    predict/   image preprocessing and attention maps
    cli/       vit-convert, vit-predict and vit-export
    export.py  what every deployment artifact shares: formats, the check, the JSON sidecar
"""
from .config import (
    PRESETS, ConfigError, EvaConfig, ModelConfig, SwinConfig, ViTConfig, config_from_dict, fixed_pos_embed, get_config, list_models,
)
from .errors import CheckpointError, WeightsMismatchError
from .formats import (
    Checkpoint, load_canonical, load_npz, load_state_dict, pretrained_source, read_checkpoint, save_npz, save_safetensors,
)
from .weights import TIMM, Weights, canonical_shapes, check_weights, count_params, links

__all__ = [
    "Checkpoint", "CheckpointError", "ConfigError", "EvaConfig", "ModelConfig", "PRESETS", "SwinConfig", "TIMM", "ViTConfig",
    "Weights", "WeightsMismatchError", "canonical_shapes", "check_weights", "config_from_dict", "count_params",
    "fixed_pos_embed", "get_config", "links",
    "list_models", "load_canonical", "read_checkpoint", "load_npz", "load_state_dict", "pretrained_source", "save_npz",
    "save_safetensors",
]
