"""Hugging Face transformers checkpoints: state dicts (either spelling: the Hub's, as
save_pretrained writes them, or transformers 5's in-memory modules) and model folders
(config.json + model.safetensors), read and written, one module per family:

    vit (ViT, DeiT), swin, dinov2 (with and without registers), clip (CLIPVision), siglip
    (SiglipVision), aimv2 (Aimv2Vision), dinov3 (DINOv3ViT)

Each module holds one table of name pairs (names.Rule), read both ways through timm's names,
and what its config.json says that the weights' shapes cannot (heads, activation, norm eps...).
Writing a folder (`vit-convert SRC DST --to hf`) picks the family that holds the model and
refuses, naming the option, what its transformers class cannot express.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from ...atomic import atomic_write
from ...errors import CheckpointError
from ...weights import TIMM, Weights
from ..base import Layout
from ..containers import save_state_dict
from . import aimv2, clip, dinov2, dinov3, siglip, swin, vit
from .common import class_names
from .family import Family
from .processor import PROCESSOR_FILE, image_processor_config, preprocess_record

CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE = "config.json", "model.safetensors", "model.safetensors.index.json"
# Writing: the first family that accepts a config writes it (ViT takes the ViTs no other one does).
FAMILIES: tuple[Family, ...] = (dinov3.FAMILY, swin.FAMILY, aimv2.FAMILY, clip.FAMILY, siglip.FAMILY, dinov2.FAMILY,
                                vit.FAMILY)
MODEL_TYPES: dict[str, Family] = {t: f for f in FAMILIES for t in f.model_types}


def write_folder(weights: Weights, cfg: Any, meta: dict[str, Any], dst: Path) -> None:
    """config.json + model.safetensors that transformers' from_pretrained loads strictly."""
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir()) and not is_hf_folder(dst)):
        raise CheckpointError(f"{dst} exists and is not a transformers model folder; choose a new folder")
    family = next(f for f in FAMILIES if f.accepts(cfg))
    hf, config = family.write(TIMM.export(weights, cfg), cfg, meta)
    dst.mkdir(parents=True, exist_ok=True)
    save_state_dict(dst / WEIGHTS_FILE, dict(sorted(hf.items())), metadata={"format": "pt"})
    atomic_write(dst / CONFIG_FILE, lambda f: f.write((json.dumps(config, indent=2, sort_keys=True) + "\n").encode()))
    write_processor_config(dst, meta.get("preprocess") or {}, cfg)


def write_processor_config(dst: Path, preprocess: dict[str, Any], cfg: Any) -> None:
    """preprocessor_config.json, so AutoImageProcessor / pipeline() prepare images as the twins do."""
    processor, note = image_processor_config(preprocess, cfg.img_size, cfg.in_chans)
    atomic_write(dst / PROCESSOR_FILE, lambda f: f.write((json.dumps(processor, indent=2, sort_keys=True) + "\n").encode()))
    if cfg.in_chans == 1:
        note = ((note + "; ") if note else "") + (
            "a 1-channel model: transformers' pipeline() converts every image to RGB, so feed grayscale images "
            "through AutoImageProcessor and the model instead")
    if note:
        print(f"note: {PROCESSOR_FILE}: {note}", file=sys.stderr)


def is_hf_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and ((path / WEIGHTS_FILE).is_file() or (path / INDEX_FILE).is_file())


def read_folder(path: str | os.PathLike) -> tuple[Weights, set[str], Layout, dict[str, Any], dict[str, Any]]:
    """(weights in timm's names, their raw names, the layout, config.json, metadata) of a transformers model folder."""
    from ..containers import read_safetensors

    path = Path(path)
    config = read_config(path / CONFIG_FILE)
    family = family_of(config, str(path))
    files = [path / WEIGHTS_FILE]
    if not files[0].is_file():  # sharded: the index names the files
        index = read_config(path / INDEX_FILE)
        files = [path / name for name in sorted(set(index.get("weight_map", {}).values()))]
    raw: Weights = {}
    for file in files:
        raw.update(read_safetensors(file)[0])
    meta: dict[str, Any] = {}
    if names := class_names(config.get("id2label")):
        meta["class_names"] = names
    if (path / PROCESSOR_FILE).is_file():  # how transformers prepares this model's images
        in_chans = config.get("num_channels", (config.get("vision_config") or {}).get("num_channels", 3))
        if record := preprocess_record(read_config(path / PROCESSOR_FILE), in_chans):
            meta["preprocess"] = record
    return family.layout.read(raw), set(raw), family.layout, config, meta


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable JSON file ({e})") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return config


def family_of(config: dict[str, Any], name: str) -> Family:
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise CheckpointError(f"{name}: a transformers {model_type!r} model, which these twins do not read (they read "
                              f"{', '.join(sorted(MODEL_TYPES))})")
    return MODEL_TYPES[model_type]


def model_config(config: dict[str, Any], summary: dict[str, Any], infer: Callable[..., Any], name: str) -> Any:
    """Our config for a transformers config.json: the weights' shapes (`summary`, read by
    `infer`) completed by what config.json says."""
    return infer(dict(summary), **family_of(config, name).hints(config, summary))


# Detection, in the order the layouts must be tried (DINOv2's names contain ViT's).
LAYOUTS: tuple[Layout, ...] = (dinov2.LAYOUT, dinov3.LAYOUT, clip.LAYOUT, siglip.LAYOUT, aimv2.LAYOUT, swin.LAYOUT,
                               dataclasses.replace(vit.LAYOUT, write=write_folder, to="hf", suffixes=("",)))
