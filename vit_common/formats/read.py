"""Read any supported checkpoint (source.py finds and opens it) into canonical weights, a config and metadata.

What a format says beyond its weights comes from its Layout (`Layout.facts`); this module only
dispatches: find the layout, settle the config (stored, else a preset, else the shapes), adapt."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..config import CONFIG_CLASSES, ConfigError, ModelConfig, config_class, get_config
from ..errors import CheckpointError, WeightsMismatchError
from ..config.dynamic import source_rule
from ..weights import TIMM, Weights, check_weights
from ..weights.adapt import ADAPTABLE, adapt
from ..weights.canonical import check_values
from .source import Source, open_checkpoint


@dataclasses.dataclass
class Checkpoint:
    weights: Weights  # canonical names and shapes
    config: ModelConfig
    meta: dict[str, Any]  # e.g. class_names, preprocess, source layout, notes, what was adapted


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
    src = open_checkpoint(path)
    implied, meta = src.implied, {**src.meta, "source_layout": src.layout.name}
    if implied.notes:
        meta["notes"] = list(implied.notes)
    if model is None and src.config is None:
        model = implied.model
    # The family: a stored config or a preset says first, but no config turns windowed weights into
    # plain ones or back (Eva's names are timm's ViT names plus a few, which not every Eva has).
    family = CONFIG_CLASSES[implied.family]
    named = type(src.config) if src.config is not None and model is None else config_class(model) if model else None
    if named is not None and _windowed(named) == _windowed(family):
        family = named
    summary, infer = src.summary(family.arch)
    if "window_size" in overrides and not _windowed(family):
        raise ConfigError(f"window_size applies to Swin Transformers only; this checkpoint holds {family.kind}")
    structural = {k: v for k, v in overrides.items() if k not in ADAPTABLE}
    if src.config is not None and model is None:
        source = src.config.replace(**structural) if structural else src.config
    elif model is not None:
        if _windowed(named) != _windowed(family):
            raise CheckpointError(f"{path} holds {family.kind}, but --model {model} is {named.kind}")
        # The heads the weights cannot say come from --num-heads, else the preset (the weights' other
        # shapes are checked against it below), never an inference the preset makes needless.
        heads = overrides.get("num_heads") or getattr(get_config(model), "num_heads", None)
        inferred = infer(dict(summary), **({} if _windowed(family) else {"num_heads": heads}))
        source = get_config(model, **{**{k: getattr(inferred, k) for k in named.FROM_WEIGHTS}, **structural})
    else:
        for field, error in implied.needs.items():
            if field not in structural:
                raise CheckpointError(error)
        source = infer(dict(summary), **{**implied.fields, **structural})
        if set(implied.fields) - set(structural):
            meta["notes"] = [*meta.get("notes", []), *implied.fields_notes]

    try:
        weights = _to_canonical(src, source, path)
    except WeightsMismatchError:
        if model is not None and src.config is not None and not structural:  # the name fights the stored config
            raise CheckpointError(_named_differs(path, model, src.config, source)) from None
        raise
    weights, casts = check_values(weights, what=str(path))
    target = source.replace(**{k: v for k, v in overrides.items() if k in ADAPTABLE})
    if (src.config is None or src.derived) and "pos_embed_interp" not in overrides and hasattr(target, "pos_embed_interp"):
        # Any size at call time as the file's source computes it (a stored config says it itself).
        target = target.replace(pos_embed_interp=source_rule(src.layout.pos_embed_interp, getattr(target, "reg_tokens", 0)))
    weights, changes = adapt(weights, source, target, posemb_method=posemb_method, patch_method=patch_method)
    if casts or changes:
        meta["adapted"] = casts + changes
    if target.num_classes != source.num_classes:
        meta.pop("class_names", None)  # they named the replaced head's classes
    check_weights(weights, target, what=str(path))
    # The format's preprocessing, for weights that record none and carry no config of this project's.
    if implied.preprocess and "preprocess" not in meta and (src.config is None or "architecture" in meta):
        meta["preprocess"], meta["preprocess_source"] = implied.preprocess(target), implied.preprocess_source
    return Checkpoint(weights, target, meta)


def load_canonical(path: str | os.PathLike, config: ModelConfig) -> Weights:
    """Canonical weights of any checkpoint read_checkpoint takes, for a config known beforehand;
    checked as read_checkpoint checks them (half precision widened to float32 without a note)."""
    return check_values(_to_canonical(open_checkpoint(path), config, path), what=str(path))[0]


def _named_differs(path, model: str, stored: ModelConfig, named: ModelConfig) -> str:
    ours, theirs = stored.to_dict(), named.to_dict()
    diffs = [f"{k}={ours[k]!r} (the preset's {theirs.get(k)!r})" for k in ours
             if ours[k] != theirs.get(k) and not k.endswith("drop_rate")]
    return (f"{path} stores a model that differs from {model}: {', '.join(diffs)}; leave the name out to build "
            "what the file stores (create_model(checkpoint=...); vit-predict / vit-convert without --model)")


def _windowed(cls) -> bool:
    """Whether a config family computes attention in windows (Swin's): its weights say so, whatever the config."""
    return "window_size" in {f.name for f in dataclasses.fields(cls)}


def _to_canonical(src: Source, config: ModelConfig, path) -> Weights:
    try:
        weights = TIMM.import_(src.weights, config) if src.layout.names == "timm" else src.weights
    except WeightsMismatchError as e:  # say which checkpoint (a file, or a pretrained name)
        raise WeightsMismatchError(f"{path}: {e}") from None
    check_weights(weights, config, what=str(path))
    return weights
