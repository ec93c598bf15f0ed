"""Checkpoints in the wild: one module per family of layouts (google, timm, huggingface,
microsoft_swin, swin_canonical, run_folder), the containers they come in (containers), their
detection (detect) and reading any of them (read). A new format is a new module whose Layout
is listed in detect.FILE_LAYOUTS. Pretrained names resolve through the Hugging Face Hub (hub,
hub_configs)."""
from ..errors import CheckpointError
from .containers import load_npz, load_state_dict, save_npz, save_safetensors, save_torch
from .detect import LAYOUT_NAMES, detect_layout
from .hub import DEFAULT_TAGS, is_pretrained_name, pretrained_source
from .read import Checkpoint, load_canonical, read_checkpoint

__all__ = [
    "Checkpoint", "CheckpointError", "DEFAULT_TAGS", "LAYOUT_NAMES", "detect_layout", "is_pretrained_name",
    "load_canonical", "load_npz", "load_state_dict", "pretrained_source", "read_checkpoint", "save_npz",
    "save_safetensors", "save_torch",
]
