"""Read any supported checkpoint (a file in any layout, or a train.py run) into canonical weights, a config and metadata.

What a format says beyond its weights comes from its Layout (`Layout.facts`); this module only
dispatches: find the layout, settle the config (stored, else a preset, else the shapes), adapt."""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

from ..config import ConfigError, ModelConfig, config_class, get_config
from ..errors import CheckpointError, WeightsMismatchError
from ..weights import TIMM, Weights, check_weights
from ..weights.adapt import ADAPTABLE, adapt
from ..weights.canonical import check_values
from ..weights.infer import summarize
from ..weights.infer_eva import eva_from_weights
from .base import Implied, Layout
from .containers import existing, read_file
from .detect import LAYOUTS, detect_layout
from .hub import fetch_pretrained, is_pretrained_name, name_hint
from .hub_configs import repo_config, repo_meta
from .huggingface import is_hf_folder, model_config, read_folder
from .run_folder import read_training_run

# The fields a preset (--model) takes from the weights, per family (Eva's: see eva_from_weights).
FROM_WEIGHTS = {"vit": ("img_size", "patch_size", "num_classes", "no_embed_class"),
                "swin": ("img_size", "patch_size", "num_classes", "window_size")}


@dataclasses.dataclass
class Checkpoint:
    weights: Weights  # canonical names and shapes
    config: ModelConfig
    meta: dict[str, Any]  # e.g. class_names, preprocess, source layout, notes, what was adapted


@dataclasses.dataclass
class Source:
    """A checkpoint as found, before its config is settled."""
    weights: Weights  # in the names its layout reads to (canonical, or timm's)
    keys: set[str]  # the names as the file holds them
    layout: Layout
    config: ModelConfig | None  # the config it carries (a Hub repository's config.json says it for pretrained names)
    meta: dict[str, Any]

    @functools.cached_property
    def implied(self) -> Implied:
        return self.layout.facts(self.weights, self.keys)

    def summary(self, family: str):
        return summarize(self.weights, family, self.layout.names == "timm")


def read_checkpoint(path: str | os.PathLike, model: str | None = None, *, posemb_method: str = "zoom",
                    patch_method: str = "bilinear", **overrides: Any) -> Checkpoint:
    """Canonical weights, config and metadata from any supported checkpoint file, or pretrained
    weights named `timm:NAME[.TAG]` or `hf-hub:ORG/REPO` (see hub.py).

    The architecture comes from the config the file carries, else the preset `model` (or the one
    the format implies; its position grid / window and class count taken from the weights), else
    the weights' shapes completed by what the format implies (a Google .npz: act_layer='gelu_tanh',
    as Google's code computes it; meta['notes'] says so). Overrides of img_size / patch_size /
    num_classes (and window_size for Swin) adapt the weights (position embedding resampled with
    `posemb_method`, Swin's relative position bias tables resampled bicubic, patch embedding
    PI-resized, a new zero head); others must fit. Non-finite or non-float weights raise
    WeightsMismatchError; float16 / bfloat16 ones are widened to float32, noted in meta['adapted'].
    """
    src = _read(path)
    implied, meta = src.implied, {**src.meta, "source_layout": src.layout.name}
    if implied.notes:
        meta["notes"] = list(implied.notes)
    if model is None and src.config is None:
        model = implied.model
    family = implied.family  # a stored config or a preset says first (Eva's names are timm's ViT names plus a few)
    named = src.config if src.config is not None and model is None else (config_class(model) if model else None)
    if named is not None and "swin" not in (family, named.arch):
        family = named.arch
    summary, infer = src.summary(family)
    if family != "swin" and "window_size" in overrides:
        raise ConfigError("window_size applies to Swin Transformers only; this checkpoint holds "
                          f"{'an Eva model' if family == 'eva' else 'a ViT'}")
    structural = {k: v for k, v in overrides.items() if k not in ADAPTABLE}
    if src.config is not None and model is None:
        source = src.config.replace(**structural) if structural else src.config
    elif model is not None:
        preset = config_class(model).arch
        if (preset == "swin") != (family == "swin"):
            what = {True: "Swin Transformer", False: "ViT"}
            raise CheckpointError(f"{path} holds a {what[family == 'swin']}, but --model {model} is a "
                                  f"{what[preset == 'swin']}")
        inferred = infer(dict(summary), **({} if family == "swin" else {"num_heads": overrides.get("num_heads")}))
        from_weights = eva_from_weights(summary) if family == "eva" else FROM_WEIGHTS[family]
        source = get_config(model, **{**{k: getattr(inferred, k) for k in from_weights}, **structural})
    else:
        for field, error in implied.needs.items():
            if field not in structural:
                raise CheckpointError(error)
        source = infer(dict(summary), **{**implied.fields, **structural})
        if set(implied.fields) - set(structural):
            meta["notes"] = [*meta.get("notes", []), *implied.fields_notes]

    weights = _to_canonical(src, source, path)
    weights, casts = check_values(weights, what=str(path))
    target = source.replace(**{k: v for k, v in overrides.items() if k in ADAPTABLE})
    weights, changes = adapt(weights, source, target, posemb_method=posemb_method, patch_method=patch_method)
    if casts or changes:
        meta["adapted"] = casts + changes
    if target.num_classes != source.num_classes:
        meta.pop("class_names", None)  # they named the replaced head's classes
    check_weights(weights, target, what=str(path))
    # The format's preprocessing, for weights that record none and carry no config of this project's.
    if implied.preprocess and "preprocess" not in meta and (src.config is None or "architecture" in meta):
        meta["preprocess"] = implied.preprocess(target)
    return Checkpoint(weights, target, meta)


def load_canonical(path: str | os.PathLike, config: ModelConfig) -> Weights:
    """Canonical weights of any checkpoint read_checkpoint takes, for a config known beforehand;
    checked as read_checkpoint checks them (half precision widened to float32 without a note)."""
    return check_values(_to_canonical(_read(path), config, path), what=str(path))[0]


def _to_canonical(src: Source, config: ModelConfig, path) -> Weights:
    try:
        weights = TIMM.import_(src.weights, config) if src.layout.names == "timm" else src.weights
    except WeightsMismatchError as e:  # say which checkpoint (a file, or a pretrained name)
        raise WeightsMismatchError(f"{path}: {e}") from None
    check_weights(weights, config, what=str(path))
    return weights


def _read(path: str | os.PathLike) -> Source:
    if is_pretrained_name(path):
        files = fetch_pretrained(path)
        src = _read(files.weights)
        config = repo_config(files, *src.summary(src.implied.family))
        return Source(src.weights, src.keys, src.layout, config, {**src.meta, **repo_meta(files)})
    path = Path(path)
    if not path.exists() and (hint := name_hint(path)):
        raise CheckpointError(f"checkpoint {path} does not exist{hint}")
    if path.is_dir() and is_hf_folder(path):  # transformers' save_pretrained folder
        weights, keys, layout, hf_config, meta = read_folder(path)
        src = Source(weights, keys, layout, None, meta)
        src.config = model_config(hf_config, *src.summary(src.implied.family), str(path))
        return src
    if path.is_dir():
        weights, stored, meta = read_training_run(path)  # already canonical
        return Source(weights, set(weights), LAYOUTS[meta.pop("layout")], stored, meta)
    raw, stored, meta = read_file(existing(path))
    layout = LAYOUTS[detect_layout(raw)]
    return Source(layout.read(raw), set(raw), layout, stored, meta)
