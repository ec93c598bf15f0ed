"""Read any supported checkpoint into canonical weights, a config and metadata."""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint_io import STATE_DICT_SUFFIXES, CheckpointError, _existing, _read_npz, _read_state_dict
from .config import ViTConfig
from .flax_layout import FLAX, flatten_params
from .infer import config_from_summary, summarize_canonical, summarize_timm
from .layout import Weights, canonical_shapes, check_weights
from .layouts import detect_layout, google_to_canonical, hf_to_timm
from .registry import get_config
from .timm_layout import TIMM

# Fields a checkpoint can be adapted to without retraining the body.
ADAPTABLE = ("img_size", "patch_size", "num_classes")
POSEMB_TABLE = "Transformer/posembed_input/pos_embedding"


@dataclasses.dataclass
class Checkpoint:
    weights: Weights  # canonical names and shapes
    config: ViTConfig
    meta: dict[str, Any]  # e.g. class_names, preprocess, source layout, what was adapted


def read_checkpoint(path: str | os.PathLike, model: str | None = None, *, posemb_method: str = "zoom",
                    patch_method: str = "bilinear", **overrides: Any) -> Checkpoint:
    """Canonical weights, config and metadata from any supported checkpoint file.

    The architecture comes from the config the file carries, else the preset `model` (its
    position grid and class count taken from the weights), else the weights' shapes. Overrides
    of img_size / patch_size / num_classes adapt the weights (position embedding resampled
    with `posemb_method`, patch embedding PI-resized, a new zero head); others must fit.
    """
    raw, layout, stored, meta = _read(path)
    meta = {**meta, "source_layout": layout}
    summary = summarize_timm(raw) if layout in ("timm", "hf") else summarize_canonical(raw)

    structural = {k: v for k, v in overrides.items() if k not in ADAPTABLE}
    if stored is not None and model is None:
        source = stored.replace(**structural) if structural else stored
    elif model is not None:
        inferred = config_from_summary(dict(summary), num_heads=overrides.get("num_heads"))
        from_weights = {k: getattr(inferred, k) for k in ("img_size", "patch_size", "num_classes", "no_embed_class")}
        source = get_config(model, **{**from_weights, **structural})
    else:
        source = config_from_summary(dict(summary), **structural)

    weights = TIMM.import_(raw, source) if layout in ("timm", "hf") else raw
    check_weights(weights, source, what=str(path))
    target = source.replace(**{k: v for k, v in overrides.items() if k in ADAPTABLE})
    weights, changes = adapt(weights, source, target, posemb_method=posemb_method, patch_method=patch_method)
    if changes:
        meta["adapted"] = changes
    check_weights(weights, target, what=str(path))
    return Checkpoint(weights, target, meta)


def load_canonical(path: str | os.PathLike, config: ViTConfig) -> Weights:
    """Canonical weights of any checkpoint read_checkpoint takes, for a config known beforehand."""
    raw, layout, _, _ = _read(path)
    weights = TIMM.import_(raw, config) if layout in ("timm", "hf") else raw
    check_weights(weights, config, what=str(path))
    return weights


def _read(path: str | os.PathLike) -> tuple[Weights, str, ViTConfig | None, dict]:
    """(weights, layout, stored config, metadata): canonical names for Google layouts and runs,
    timm names for PyTorch state dicts (their heads need a config to split)."""
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
    elif layout not in ("timm",):
        raw = google_to_canonical(raw)
    return raw, layout, stored, meta


def adapt(weights: Weights, source: ViTConfig, target: ViTConfig, *, posemb_method: str = "zoom",
          patch_method: str = "bilinear") -> tuple[Weights, list[str]]:
    """Weights for `source` made to fit `target` (image size, patch size, class count)."""
    weights, changes = dict(weights), []
    if target.patch_size != source.patch_size:
        from .resample import resample_patch_embed

        weights["embedding/kernel"] = resample_patch_embed(weights["embedding/kernel"], target.patch_size, method=patch_method)
        changes.append(f"patch embedding PI-resized {source.patch_size} -> {target.patch_size} ({patch_method})")
    if POSEMB_TABLE in weights and target.grid_size != source.grid_size:
        from .resample import resample_posemb

        prefix = 0 if source.no_embed_class else source.num_prefix_tokens
        weights[POSEMB_TABLE] = resample_posemb(weights[POSEMB_TABLE], target.grid_size, num_prefix_tokens=prefix,
                                                method=posemb_method)
        changes.append(f"position embedding resampled {source.grid_size}x{source.grid_size} -> "
                       f"{target.grid_size}x{target.grid_size} ({posemb_method})")
    if target.num_classes != source.num_classes:
        shapes = canonical_shapes(target)
        for head in ("head", "head_dist"):
            for part in ("kernel", "bias"):
                weights.pop(f"{head}/{part}", None)
                if f"{head}/{part}" in shapes:  # a fresh zero head, as Google's fine-tuning starts from
                    weights[f"{head}/{part}"] = np.zeros(shapes[f"{head}/{part}"], np.float32)
        changes.append(f"head replaced: {source.num_classes} -> {target.num_classes} classes (zeros)")
    return weights, changes


def _read_training_run(path: Path) -> tuple[Weights, ViTConfig, dict]:
    """Parameters (the EMA ones when the run kept them, as its final export does) of the latest
    checkpoint of a train.py workdir (an orbax step folder from the JAX twin, a step_N.pt file
    from the PyTorch twin), or of one orbax checkpoint step folder in it."""
    if (path / "checkpoints").is_dir():
        workdir, entries = path, list((path / "checkpoints").iterdir())
        torch_steps = [p for p in entries if re.fullmatch(r"step_\d+\.pt", p.name)]
        orbax_steps = [p for p in entries if p.name.isdigit()]
        if not torch_steps and not orbax_steps:
            raise CheckpointError(f"{path}: a training workdir without a finished checkpoint")
        if torch_steps:
            step_path = max(torch_steps, key=lambda p: int(p.name[5:-3]))
        else:
            step_path = max(orbax_steps, key=lambda p: int(p.name))
    elif path.name.isdigit() and (path / "state").is_dir():
        workdir, step_path = path.parent.parent, path
    else:
        raise CheckpointError(f"{path}: a folder, but neither a train.py workdir nor one of its checkpoint steps")
    config_file = workdir / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{workdir}: no config.json beside the checkpoints")
    config = ViTConfig.from_dict(json.loads(config_file.read_text())["model"])
    if step_path.suffix == ".pt":
        return _read_torch_run_step(step_path, config)
    import orbax.checkpoint as ocp  # lazily: only training runs need it (and it brings jax)

    try:
        state = ocp.StandardCheckpointer().restore(step_path.absolute() / "state")
    except Exception as e:  # orbax raises many types for a damaged folder
        raise CheckpointError(f"{step_path}: not a readable orbax checkpoint ({type(e).__name__}: {e})") from e
    params = state.get("ema", state["params"])
    return (FLAX.import_(flatten_params(params), config), config,
            {"source": f"{step_path} (step {step_path.name})", "layout": "flax"})


def _read_torch_run_step(step_path: Path, config: ViTConfig) -> tuple[Weights, ViTConfig, dict]:
    import torch  # lazily: only the PyTorch twin's runs need it

    try:
        state = torch.load(step_path, map_location="cpu", weights_only=True)
        model = state["ema"] if state.get("ema") is not None else state["model"]
    except Exception as e:  # torch raises many types for a damaged file
        raise CheckpointError(f"{step_path}: not a readable train.py checkpoint ({type(e).__name__}: {e})") from e
    weights = TIMM.import_({k: v.float().numpy() for k, v in model.items()}, config)
    return weights, config, {"source": f"{step_path} (step {int(step_path.name[5:-3])})", "layout": "torch_run"}
