"""What a Hub repository's config.json says about the weights beside it.

timm's (written by timm's push_to_hf_hub): `architecture` (a preset name), `num_classes`,
optional `model_args` (keyword overrides) and `pretrained_cfg` (the evaluation transform, label
names); older files hold the pretrained_cfg entries at the top level. transformers': `model_type`
and the fields the weights' shapes cannot say (read by the family's module in huggingface/).
"""
from __future__ import annotations

from typing import Any, Callable

from ..config import ConfigError, ModelConfig, get_config
from ..errors import CheckpointError
from .hub import PretrainedFiles, weights_repository_name
from .huggingface import model_config
from .huggingface.common import class_names
# timm model_args that only loosen the accepted input size: nothing for these twins to build.
IGNORED_TIMM_ARGS = ("dynamic_img_size", "dynamic_img_pad", "strict_img_size")
# timm's eval crop modes -> preprocess.py's resize rules ('border' has no equivalent here).
TIMM_CROP_MODES = {"center": "shorter_side", "squash": "squash"}


def repo_config(files: PretrainedFiles, summary: dict[str, Any], infer: Callable[..., ModelConfig]) -> ModelConfig:
    """The architecture of a repository's weights: timm's preset (with its class count and
    model_args) or, for transformers, the config inferred from `summary` (the weights' shapes)
    completed by config.json."""
    config, name = files.config, files.repo.name
    if config is not None and "architecture" not in config and "model_type" in config:
        return _build(name, lambda: model_config(config, summary, infer, name))
    if config is None:  # a timm name whose cache holds only the weights, as timm.create_model leaves it
        architecture, fields = files.repo.architecture, {"num_classes": summary["num_classes"]}
    else:
        architecture = config.get("architecture")
        if architecture is None:
            raise CheckpointError(f"{name}: its config.json names neither a timm architecture ('architecture') nor "
                                  "a transformers model_type")
        wanted = files.repo.architecture
        if wanted is not None and architecture not in (wanted, weights_repository_name(wanted)):
            raise CheckpointError(f"{name}: its config.json says architecture {architecture!r}, "
                                  f"not {wanted!r}")
        architecture = wanted or architecture  # a QuickGELU name runs its plain name's weights with QuickGELU
        pretrained = config.get("pretrained_cfg", config)
        args = {k: v for k, v in (config.get("model_args") or {}).items() if k not in IGNORED_TIMM_ARGS}
        fields = {**args, "num_classes": config.get("num_classes", pretrained.get("num_classes", 1000))}
    return _build(name, lambda: get_config(architecture, **fields))


def _build(name: str, make: Callable[[], ModelConfig]) -> ModelConfig:
    try:
        return make()
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{name}: its architecture is not one these twins build: {e}") from e


def repo_meta(files: PretrainedFiles) -> dict[str, Any]:
    """Where the weights came from, and what config.json records of their classes and of the
    preprocessing they were evaluated with (timm's pretrained_cfg)."""
    meta: dict[str, Any] = {"source": files.repo.name}
    config = files.config or {}
    architecture = files.repo.architecture or config.get("architecture")
    if architecture:
        meta["architecture"] = architecture
    pretrained = config.get("pretrained_cfg", config)
    names = config.get("label_names", pretrained.get("label_names")) or class_names(config.get("id2label"))
    if isinstance(names, dict):
        names = [names.get(str(i), names.get(i)) for i in range(len(names))]
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        meta["class_names"] = names
    if "architecture" in config and (preprocess := _timm_preprocess(pretrained)):
        meta["preprocess"] = preprocess
    return meta


def _timm_preprocess(pretrained: dict[str, Any]) -> dict[str, Any] | None:
    """timm's eval transform in preprocess.py's terms; None where it has no equivalent here."""
    resize = TIMM_CROP_MODES.get(pretrained.get("crop_mode", "center"))
    crop_pct = pretrained.get("crop_pct", 0.875)
    if resize is None or "mean" not in pretrained or "std" not in pretrained or (resize == "squash" and crop_pct != 1):
        return None
    return dict(resize=resize, crop_pct=crop_pct, interpolation=pretrained.get("interpolation", "bicubic"),
                mean=list(pretrained["mean"]), std=list(pretrained["std"]))
