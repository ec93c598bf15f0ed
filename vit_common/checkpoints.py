"""Read any supported checkpoint into canonical weights, a config and metadata."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint_io import (STATE_DICT_SUFFIXES, CheckpointError, _existing, _read_npz, _read_state_dict,
                            run_checkpoint_steps)
from .config import ConfigError, ModelConfig, SwinConfig, config_from_dict
from .flax_layout import FLAX, flatten_params
from .infer import (
    config_from_summary, summarize_canonical, summarize_swin_canonical, summarize_swin_timm, summarize_timm,
    swin_config_from_summary,
)
from .layout import Weights, canonical_shapes, check_weights
from .layouts import (
    TORCH_LAYOUTS, detect_layout, drop_swin_buffers, google_to_canonical, hf_to_timm, is_swin, microsoft_swin_to_timm,
)
from .registry import config_class, get_config
from .timm_layout import TIMM

# Fields a checkpoint can be adapted to without retraining the body (window_size: Swin only).
ADAPTABLE = ("img_size", "patch_size", "num_classes", "window_size")
POSEMB_TABLE = "Transformer/posembed_input/pos_embedding"
PATCH_KERNELS = ("embedding/kernel", "patch_embed/proj/kernel")  # ViT's, Swin's
SWIN_IMAGENET_PREPROCESS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic"}


@dataclasses.dataclass
class Checkpoint:
    weights: Weights  # canonical names and shapes
    config: ModelConfig
    meta: dict[str, Any]  # e.g. class_names, preprocess, source layout, what was adapted


def read_checkpoint(path: str | os.PathLike, model: str | None = None, *, posemb_method: str = "zoom",
                    patch_method: str = "bilinear", **overrides: Any) -> Checkpoint:
    """Canonical weights, config and metadata from any supported checkpoint file.

    The architecture comes from the config the file carries, else the preset `model` (its
    position grid / window and class count taken from the weights), else the weights' shapes.
    Overrides of img_size / patch_size / num_classes (and window_size for Swin) adapt the
    weights (position embedding resampled with `posemb_method`, Swin's relative position bias
    tables resampled bicubic, patch embedding PI-resized, a new zero head); others must fit.
    """
    raw, layout, stored, meta = _read(path)
    meta = {**meta, "source_layout": layout}
    swin = is_swin(raw)
    # timm's and Microsoft's Swin weights were trained on ImageNet mean / std pixels, not [-1, 1].
    imagenet_swin = swin and "preprocess" not in meta and (layout == "swin_ms" or layout == "timm" and stored is None)
    if swin:
        summary = summarize_swin_timm(raw) if layout in TORCH_LAYOUTS else summarize_swin_canonical(raw)
        infer = swin_config_from_summary
        from_weights = ("img_size", "patch_size", "num_classes", "window_size")
    else:
        summary = summarize_timm(raw) if layout in TORCH_LAYOUTS else summarize_canonical(raw)
        infer = config_from_summary
        from_weights = ("img_size", "patch_size", "num_classes", "no_embed_class")
        if "window_size" in overrides:
            raise ConfigError("window_size applies to Swin Transformers only; this checkpoint holds a ViT")

    structural = {k: v for k, v in overrides.items() if k not in ADAPTABLE}
    if stored is not None and model is None:
        source = stored.replace(**structural) if structural else stored
    elif model is not None:
        family = config_class(model)
        if (family is SwinConfig) != swin:
            raise CheckpointError(f"{path} holds a {'Swin Transformer' if swin else 'ViT'}, but --model {model} "
                                  f"is a {'Swin Transformer' if family is SwinConfig else 'ViT'}")
        inferred = infer(dict(summary), **({} if swin else {"num_heads": overrides.get("num_heads")}))
        source = get_config(model, **{**{k: getattr(inferred, k) for k in from_weights}, **structural})
    else:
        source = infer(dict(summary), **structural)

    weights = TIMM.import_(raw, source) if layout in TORCH_LAYOUTS else raw
    check_weights(weights, source, what=str(path))
    target = source.replace(**{k: v for k, v in overrides.items() if k in ADAPTABLE})
    weights, changes = adapt(weights, source, target, posemb_method=posemb_method, patch_method=patch_method)
    if changes:
        meta["adapted"] = changes
    check_weights(weights, target, what=str(path))
    if imagenet_swin:  # timm's default_cfg for these weights: crop 0.9 at 224, none at 384
        meta["preprocess"] = dict(SWIN_IMAGENET_PREPROCESS, crop_pct=1.0 if target.img_size >= 384 else 0.9)
    return Checkpoint(weights, target, meta)


def load_canonical(path: str | os.PathLike, config: ModelConfig) -> Weights:
    """Canonical weights of any checkpoint read_checkpoint takes, for a config known beforehand."""
    raw, layout, _, _ = _read(path)
    weights = TIMM.import_(raw, config) if layout in TORCH_LAYOUTS else raw
    check_weights(weights, config, what=str(path))
    return weights


def _read(path: str | os.PathLike) -> tuple[Weights, str, ModelConfig | None, dict]:
    """(weights, layout, stored config, metadata): canonical names for Google layouts, canonical
    Swin files and runs, timm names for PyTorch state dicts (their heads need a config to split)."""
    path = Path(path)
    if path.is_dir():
        raw, stored, meta = _read_training_run(path)  # already canonical
        return raw, meta.pop("layout"), stored, meta
    path = _existing(path)
    if path.suffix == ".npz":
        raw, stored, meta = _read_npz(path)
    elif path.suffix in STATE_DICT_SUFFIXES:
        raw, stored, meta = _read_state_dict(path)
    else:
        raise CheckpointError(f"{path}: unknown checkpoint format {path.suffix!r}; expected .npz or one of {STATE_DICT_SUFFIXES}")
    layout = detect_layout(raw)
    if layout == "hf":
        raw = hf_to_timm(raw)
    elif layout == "swin_ms":
        raw = microsoft_swin_to_timm(raw)
    elif layout == "timm" and is_swin(raw):
        raw = drop_swin_buffers(raw)
    elif layout not in ("timm", "swin_canonical"):
        raw = google_to_canonical(raw)
    return raw, layout, stored, meta


def adapt(weights: Weights, source: ModelConfig, target: ModelConfig, *, posemb_method: str = "zoom",
          patch_method: str = "bilinear") -> tuple[Weights, list[str]]:
    """Weights for `source` made to fit `target` (image size, patch size, window size, class count)."""
    weights, changes = dict(weights), []
    if target.patch_size != source.patch_size:
        from .resample import resample_patch_embed

        kernel = next(k for k in PATCH_KERNELS if k in weights)
        weights[kernel] = resample_patch_embed(weights[kernel], target.patch_size, method=patch_method)
        changes.append(f"patch embedding PI-resized {source.patch_size} -> {target.patch_size} ({patch_method})")
    if POSEMB_TABLE in weights and target.grid_size != source.grid_size:
        from .resample import resample_posemb

        prefix = 0 if source.no_embed_class else source.num_prefix_tokens
        weights[POSEMB_TABLE] = resample_posemb(weights[POSEMB_TABLE], target.grid_size, num_prefix_tokens=prefix,
                                                method=posemb_method)
        changes.append(f"position embedding resampled {source.grid_size}x{source.grid_size} -> "
                       f"{target.grid_size}x{target.grid_size} ({posemb_method})")
    if isinstance(source, SwinConfig):
        changes += _adapt_swin_windows(weights, source, target)
    if target.num_classes != source.num_classes:
        shapes = canonical_shapes(target)
        for name in [k for k in weights if k.split("/")[0] in ("head", "head_dist")]:
            del weights[name]
        for name, shape in shapes.items():
            if name.split("/")[0] in ("head", "head_dist"):  # a fresh zero head, as Google's fine-tuning starts from
                weights[name] = np.zeros(shape, np.float32)
        changes.append(f"head replaced: {source.num_classes} -> {target.num_classes} classes (zeros)")
    return weights, changes


def _adapt_swin_windows(weights: Weights, source: SwinConfig, target: SwinConfig) -> list[str]:
    """Resample (bicubic) every relative position bias table of a stage whose window changes."""
    from .resample import resample_relative_position_bias

    changes = []
    for i, depth in enumerate(source.depths):
        old, new = source.stage_window(i), target.stage_window(i)
        if old == new:
            continue
        for j in range(depth):
            name = f"layers_{i}/blocks_{j}/attn/relative_position_bias_table"
            weights[name] = resample_relative_position_bias(weights[name], new, method="bicubic")
        changes.append(f"stage {i} relative position bias tables resampled for {old}x{old} -> {new}x{new} "
                       f"windows (bicubic)")
    return changes


def _read_training_run(path: Path) -> tuple[Weights, ModelConfig, dict]:
    """Parameters (the EMA ones when the run kept them, as its final export does) of the latest
    checkpoint of a train.py workdir (an orbax step folder from the JAX twin, a step_N.pt file
    from the PyTorch twin), or of one orbax checkpoint step folder in it."""
    if (path / "checkpoints").is_dir():
        steps = run_checkpoint_steps(path / "checkpoints")
        if not steps:
            raise CheckpointError(f"{path}: a training workdir without a finished checkpoint")
        workdir, step = path, max(steps)
        step_path = steps[step]
    elif path.name.isdigit() and (path / "state").is_dir():
        workdir, step, step_path = path.parent.parent, int(path.name), path
    else:
        raise CheckpointError(f"{path}: a folder, but neither a train.py workdir nor one of its checkpoint steps")
    config_file = workdir / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{workdir}: no config.json beside the checkpoints")
    config = config_from_dict(json.loads(config_file.read_text())["model"])
    if step_path.suffix == ".pt":
        return _read_torch_run_step(step_path, step, config)
    import orbax.checkpoint as ocp  # lazily: only training runs need it (and it brings jax)

    try:
        state = ocp.StandardCheckpointer().restore(step_path.absolute() / "state")
    except Exception as e:  # orbax raises many types for a damaged folder
        raise CheckpointError(f"{step_path}: not a readable orbax checkpoint ({type(e).__name__}: {e})") from e
    params = state.get("ema", state["params"])
    return (FLAX.import_(flatten_params(params), config), config,
            {"source": f"{step_path} (step {step})", "layout": "flax"})


def _read_torch_run_step(step_path: Path, step: int, config: ModelConfig) -> tuple[Weights, ModelConfig, dict]:
    import torch  # lazily: only the PyTorch twin's runs need it

    try:
        state = torch.load(step_path, map_location="cpu", weights_only=True)
        model = state["ema"] if state.get("ema") is not None else state["model"]
    except Exception as e:  # torch raises many types for a damaged file
        raise CheckpointError(f"{step_path}: not a readable train.py checkpoint ({type(e).__name__}: {e})") from e
    weights = TIMM.import_({k: v.float().numpy() for k, v in model.items()}, config)
    return weights, config, {"source": f"{step_path} (step {step})", "layout": "torch_run"}
