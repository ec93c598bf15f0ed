"""timm's Hub folder: config.json (`architecture`, `num_classes`, `model_args`, `pretrained_cfg`) and
model.safetensors in timm's names, as timm's push_to_hf_hub writes a repository. timm opens one with
`timm.create_model("local-dir:FOLDER", pretrained=True)` (or `hf-hub:ORG/REPO` once uploaded); the
twins read it as they read a timm repository (hub_configs.py). Written by `vit-convert SRC FOLDER --to timm`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..config import get_config, list_models
from ..errors import CheckpointError
from ..weights import TIMM, Weights
from .containers import save_state_dict
from .hub import CONFIG_FILE, WEIGHT_FILES, HubRepo, PretrainedFiles

WEIGHTS_FILE = WEIGHT_FILES[0]
# Config fields that are timm's keyword arguments of the same name and meaning, per family (`arch`).
# The others (distilled: the architecture says it; norm_eps, mlp_layer, representation_size: no
# keyword of timm's) can only take the preset's value.
TIMM_KWARGS = {
    "vit": {"img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads", "mlp_ratio",
            "qkv_bias", "class_token", "no_embed_class", "global_pool", "fc_norm", "pos_embed", "init_values",
            "reg_tokens", "pre_norm", "act_layer", "norm_layer", "proj_bias", "embed_norm_layer", "dynamic_img_size",
            "dynamic_img_pad"},
    "swin": {"img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depths", "num_heads", "window_size",
             "mlp_ratio", "qkv_bias", "global_pool", "dynamic_img_size"},
    "eva": {"img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim", "depth", "num_heads",
            "qkv_bias", "qkv_fused", "mlp_ratio", "swiglu_mlp", "swiglu_align_to", "scale_mlp", "scale_attn_inner",
            "init_values", "class_token", "num_reg_tokens", "no_embed_class", "use_abs_pos_emb", "use_rot_pos_emb",
            "rope_type", "rope_temperature", "rope_grid_offset", "rope_rotate_half", "ref_feat_shape", "use_fc_norm",
            "dynamic_img_size", "dynamic_img_pad"},
}
# Not written: dropout is training-only, and timm resizes position tables by its own rule.
NOT_WRITTEN = ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate", "pos_embed_interp")
CROP_MODES = {"shorter_side": "center", "center_square": "center", "squash": "squash"}  # ours -> timm's crop_mode


def is_timm_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() or not any((path / name).is_file() for name in WEIGHT_FILES):
        return False
    try:
        return "architecture" in json.loads((path / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False


def folder_files(path: Path) -> PretrainedFiles:
    """A timm folder as the Hub repository it mirrors (its config.json read as hub_configs reads one)."""
    config = json.loads((path / CONFIG_FILE).read_text())
    weights = next(path / name for name in WEIGHT_FILES if (path / name).is_file())
    return PretrainedFiles(HubRepo(str(path), None), weights, config)


def timm_arguments(cfg) -> tuple[str, dict[str, Any]]:
    """(timm architecture, model_args) that build `cfg`: the preset needing the fewest overrides,
    each a timm keyword; a model no preset and keywords can state is refused, naming the fields."""
    ours = {k: v for k, v in cfg.to_dict().items() if k not in NOT_WRITTEN}
    best, unstated = None, None
    for name in list_models():
        base = get_config(name)
        if base.arch != cfg.arch or type(base) is not type(cfg):
            continue
        preset = base.to_dict()
        args = {k: v for k, v in ours.items() if preset.get(k) != v}
        bad = sorted(set(args) - TIMM_KWARGS[cfg.arch])
        if bad:
            unstated = unstated if unstated is not None and len(unstated[1]) <= len(bad) else (name, bad)
            continue
        if best is None or len(args) < len(best[1]):
            best = name, args
    if best is None:
        name, bad = unstated or ("-", ["arch"])
        raise CheckpointError(f"--to timm cannot write this model: timm has no keyword for "
                              f"{', '.join(f'{k}={getattr(cfg, k)!r}' for k in bad)} (closest preset {name}); "
                              "write a timm state dict (.safetensors) or a canonical .npz instead")
    return best


def pretrained_cfg(cfg, meta: dict[str, Any]) -> dict[str, Any]:
    """timm's pretrained_cfg for the recorded preprocessing (preprocess.py's record)."""
    p = {"resize": "shorter_side", "crop_pct": 0.875, "interpolation": "bicubic", "mean": 0.5, "std": 0.5,
         **{k: v for k, v in (meta.get("preprocess") or {}).items() if v is not None}}
    channels = lambda v: [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)] * cfg.in_chans
    out = dict(input_size=[cfg.in_chans, cfg.img_size, cfg.img_size], fixed_input_size=True,
               interpolation=p["interpolation"], crop_pct=p["crop_pct"], crop_mode=CROP_MODES[p["resize"]],
               mean=channels(p["mean"]), std=channels(p["std"]), num_classes=cfg.num_classes,
               first_conv="patch_embed.proj", classifier="head", custom_load=False)
    if isinstance(meta.get("class_names"), list) and len(meta["class_names"]) == cfg.num_classes:
        out["label_names"] = list(meta["class_names"])
    return out


def write_folder(weights: Weights, cfg, meta: dict[str, Any], dst: Path) -> None:
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise CheckpointError(f"{dst} exists; choose a new folder")
    architecture, args = timm_arguments(cfg)
    num_classes = args.pop("num_classes", cfg.num_classes)
    config = dict(architecture=architecture, num_classes=num_classes, num_features=cfg.embed_dim
                  if cfg.arch != "swin" else cfg.embed_dim * 2 ** (len(cfg.depths) - 1),
                  global_pool=cfg.global_pool, model_args=args, pretrained_cfg=pretrained_cfg(cfg, meta))
    dst.mkdir(parents=True, exist_ok=True)
    save_state_dict(dst / WEIGHTS_FILE, TIMM.export(weights, cfg), metadata={"format": "pt"})
    atomic_write(dst / CONFIG_FILE, lambda f: f.write((json.dumps(config, indent=2) + "\n").encode()))
