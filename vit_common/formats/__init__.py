"""Checkpoints in the wild, one module per format (google, timm, microsoft_swin, swin_canonical,
eva_canonical, meta_dino, eva_baai, aimv2, openclip, huggingface/, run_folder), each a tuple
LAYOUTS of Layouts (base.py) that recognise, read, say what the file implies and write back.
detect.py tries them in DETECTION_ORDER; source.py opens any checkpoint, read.py settles its
config, write.py writes any writable format; the containers they come in (containers.py,
flax_msgpack.py).
Pretrained names resolve through the Hugging Face Hub (hub, hub_configs). Adding a format:
docs/architecture.md."""
from ..errors import CheckpointError
from .containers import load_npz, load_state_dict, save_npz, save_safetensors, save_state_dict, save_torch
from .detect import LAYOUT_NAMES, detect_layout
from .hub import DEFAULT_TAGS, is_pretrained_name, pretrained_source
from .read import Checkpoint, load_canonical, read_checkpoint
from .write import write_checkpoint

__all__ = [
    "Checkpoint", "CheckpointError", "DEFAULT_TAGS", "LAYOUT_NAMES", "detect_layout", "is_pretrained_name",
    "load_canonical", "load_npz", "load_state_dict", "pretrained_source", "read_checkpoint", "save_npz",
    "save_safetensors", "save_state_dict", "save_torch", "write_checkpoint",
]
