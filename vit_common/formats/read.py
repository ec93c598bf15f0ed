"""Read any supported checkpoint (a file in any layout, or a train.py run) into canonical weights, a config and metadata."""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

from ..config import ConfigError, EvaConfig, ModelConfig, SwinConfig, config_class, get_config
from ..errors import CheckpointError, WeightsMismatchError
from ..config.dynamic import pos_embed_interp_for
from ..weights import TIMM, Weights, check_weights
from ..weights.adapt import ADAPTABLE, adapt
from ..weights.canonical import check_values
from ..weights.infer import (
    config_from_summary, summarize_canonical, summarize_swin_canonical, summarize_swin_timm, summarize_timm,
    swin_config_from_summary,
)
from ..weights.infer_eva import eva_config_from_summary, eva_from_weights, is_eva, summarize_eva
from .base import Layout, is_swin
from .containers import STATE_DICT_SUFFIXES, existing, read_msgpack, read_npz, read_state_dict
from .detect import LAYOUTS, TORCH_LAYOUTS, to_known_names
from .google import GOOGLE_LAYOUTS
from .hub import fetch_pretrained, is_pretrained_name, name_hint
from .hub_configs import repo_config, repo_meta
from .huggingface import EVA_LAYOUTS, is_hf_folder, model_config, read_folder
from .run_folder import read_training_run

GOOGLE_GELU_NOTE = ("act_layer='gelu_tanh': a Google .npz without a config or a model name runs as Google's "
                    "vision_transformer and big_vision run it, with Flax's nn.gelu, the tanh approximation by "
                    "default (timm runs these weights with exact GELU: --act-layer gelu, or --model NAME)")
SWIN_IMAGENET_PREPROCESS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic"}


@dataclasses.dataclass
class Checkpoint:
    weights: Weights  # canonical names and shapes
    config: ModelConfig
    meta: dict[str, Any]  # e.g. class_names, preprocess, source layout, what was adapted


def read_checkpoint(path: str | os.PathLike, model: str | None = None, *, posemb_method: str = "zoom",
                    patch_method: str = "bilinear", **overrides: Any) -> Checkpoint:
    """Canonical weights, config and metadata from any supported checkpoint file, or pretrained
    weights named `timm:NAME[.TAG]` or `hf-hub:ORG/REPO` (see hub.py).

    The architecture comes from the config the file carries, else the preset `model` (its
    position grid / window and class count taken from the weights), else the weights' shapes.
    A Google .npz that carries no config, read without `model`, gets act_layer='gelu_tanh' as
    Google's code computes it (meta['notes'] says so; timm's names keep timm's exact GELU).
    Overrides of img_size / patch_size / num_classes (and window_size for Swin) adapt the
    weights (position embedding resampled with `posemb_method`, Swin's relative position bias
    tables resampled bicubic, patch embedding PI-resized, a new zero head); others must fit.
    Non-finite or non-float weights raise WeightsMismatchError; float16 / bfloat16 ones are
    widened to float32, noted first in meta['adapted'].
    """
    raw, layout, stored, meta = _read(path)
    meta = {**meta, "source_layout": layout}
    implied = meta.pop("_implied", None)  # what the format says of the config, where nothing else does
    if model is None and stored is None and (implied_model := LAYOUTS[layout].implied_model) is not None:
        try:
            model = implied_model(raw)  # e.g. DINOv2's hub files: nothing in them says the heads or LayerScale
        except CheckpointError:
            if "num_heads" not in overrides:
                raise
            # a width no preset has: with the heads given, the rest is read off the shapes below
    swin = is_swin(raw)
    # Eva's names are timm's ViT names plus a few of its own, which not every Eva has: the
    # stored config or the preset says first.
    named = stored if stored is not None and model is None else (config_class(model) if model else None)
    eva = not swin and (getattr(named, "arch", None) == "eva" if named is not None else is_eva(raw))
    # timm's and Microsoft's Swin weights were trained on ImageNet mean / std pixels, not [-1, 1].
    # (timm files carrying a config came from this project, unless from timm's Hub repository.)
    imagenet_swin = swin and "preprocess" not in meta and (
        layout == "swin_ms" or layout == "timm" and (stored is None or "architecture" in meta))
    summary, infer = _summarize(raw, layout, eva)
    if swin:
        from_weights = ("img_size", "patch_size", "num_classes", "window_size")
    elif eva:
        from_weights = eva_from_weights(summary)
        if "window_size" in overrides:
            raise ConfigError("window_size applies to Swin Transformers only; this checkpoint holds an Eva model")
    else:
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
        fields = implied(set(structural)) if implied is not None else {}
        source = infer(dict(summary), **{**fields, **structural})
        if (layout in GOOGLE_LAYOUTS and not swin and source.act_layer == "gelu"
                and "act_layer" not in structural and "act_layer" not in fields):
            # A Google file with neither a config nor a timm name runs as Google's code runs it.
            source = source.replace(act_layer="gelu_tanh")
            meta["notes"] = [*meta.get("notes", []), GOOGLE_GELU_NOTE]

    weights = _to_canonical(raw, layout, source, path)
    check_weights(weights, source, what=str(path))
    weights, casts = check_values(weights, what=str(path))
    target = source.replace(**{k: v for k, v in overrides.items() if k in ADAPTABLE})
    if stored is None and "pos_embed_interp" not in overrides and hasattr(target, "pos_embed_interp"):
        # Any size at call time as the file's source computes it (a stored config says it itself).
        target = target.replace(pos_embed_interp=pos_embed_interp_for(layout, getattr(target, "reg_tokens", 0)))
    weights, changes = adapt(weights, source, target, posemb_method=posemb_method, patch_method=patch_method)
    if casts or changes:
        meta["adapted"] = casts + changes
    if target.num_classes != source.num_classes:
        meta.pop("class_names", None)  # they named the replaced head's classes
    check_weights(weights, target, what=str(path))
    if imagenet_swin:  # timm's default_cfg for these weights: crop 0.9 at 224, none at 384
        meta["preprocess"] = dict(SWIN_IMAGENET_PREPROCESS, crop_pct=1.0 if target.img_size >= 384 else 0.9)
    return Checkpoint(weights, target, meta)


def load_canonical(path: str | os.PathLike, config: ModelConfig) -> Weights:
    """Canonical weights of any checkpoint read_checkpoint takes, for a config known beforehand;
    checked as read_checkpoint checks them (half precision widened to float32 without a note)."""
    raw, layout, _, _ = _read(path)
    weights = _to_canonical(raw, layout, config, path)
    check_weights(weights, config, what=str(path))
    return check_values(weights, what=str(path))[0]


def _to_canonical(raw: Weights, layout: str, config: ModelConfig, path) -> Weights:
    if layout not in TORCH_LAYOUTS:
        return raw
    try:
        return TIMM.import_(raw, config)
    except WeightsMismatchError as e:  # say which checkpoint (a file, or a pretrained name)
        raise WeightsMismatchError(f"{path}: {e}") from None


def _summarize(raw: Weights, layout: str, eva: bool | None = None):
    """(the weights' shapes, the function that infers a config from them)."""
    if eva if eva is not None else not is_swin(raw) and is_eva(raw):
        return summarize_eva(raw, timm=layout in TORCH_LAYOUTS), eva_config_from_summary
    if is_swin(raw):
        return (summarize_swin_timm(raw) if layout in TORCH_LAYOUTS else summarize_swin_canonical(raw),
                swin_config_from_summary)
    return summarize_timm(raw) if layout in TORCH_LAYOUTS else summarize_canonical(raw), config_from_summary


def _read(path: str | os.PathLike) -> tuple[Weights, str, ModelConfig | None, dict]:
    """(weights, layout, stored config, metadata): canonical names for Google layouts, canonical
    Swin files and runs, timm names for PyTorch state dicts and transformers folders (their heads
    need a config to split)."""
    if is_pretrained_name(path):
        files = fetch_pretrained(path)
        raw, layout, _, meta = _read(files.weights)
        eva = layout in EVA_LAYOUTS if layout.startswith("hf") else None  # AIMv2's fc1_g is not Eva's
        return raw, layout, repo_config(files, *_summarize(raw, layout, eva)), {**meta, **repo_meta(files)}
    path = Path(path)
    if not path.exists() and (hint := name_hint(path)):
        raise CheckpointError(f"checkpoint {path} does not exist{hint}")
    if path.is_dir() and is_hf_folder(path):  # transformers' save_pretrained folder
        raw, layout, config, meta = read_folder(path)
        return raw, layout, model_config(config, *_summarize(raw, layout, layout in EVA_LAYOUTS), str(path)), meta
    if path.is_dir():
        raw, stored, meta = read_training_run(path)  # already canonical
        return raw, meta.pop("layout"), stored, meta
    path = existing(path)
    if path.suffix == ".npz":
        raw, stored, meta = read_npz(path)
    elif path.suffix in STATE_DICT_SUFFIXES:
        raw, stored, meta = read_state_dict(path)
    elif path.suffix == ".msgpack":  # Flax's serialization (AIMv2's JAX release)
        raw, stored, meta = read_msgpack(path), None, {}
    else:
        raise CheckpointError(f"{path}: unknown checkpoint format {path.suffix!r}; expected .npz, .msgpack or one of "
                              f"{STATE_DICT_SUFFIXES}")
    keys = set(raw)
    raw, layout = to_known_names(raw)
    return raw, layout, stored, {**meta, **_format_facts(LAYOUTS[layout], keys)}


def _format_facts(layout: Layout, keys: set[str]) -> dict:
    """The format's notes (meta['notes']) and, for read_checkpoint, the config fields it implies."""
    facts: dict = {}
    if layout.notes is not None and (notes := layout.notes(keys)):
        facts["notes"] = notes
    if layout.implied is not None:
        facts["_implied"] = functools.partial(layout.implied, keys)
    return facts
