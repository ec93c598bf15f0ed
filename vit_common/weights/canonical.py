"""The canonical weight layout: Google's ViT checkpoint names, Flax shapes, numpy arrays.

One table of links per family (weights.tables) ties each module of the
twins (named as in timm) to its canonical entries. Both twins' weight mappings, the shape check
and the parameter count are derived from it, so they cannot drift apart.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ..config import ModelConfig, SwinConfig
from ..errors import WeightsMismatchError
from .tables import Link, swin_links, vit_links

Weights = dict[str, np.ndarray]


def links(cfg: ModelConfig) -> list[Link]:
    """Every parameterised module of the model described by cfg, in forward order."""
    return swin_links(cfg) if isinstance(cfg, SwinConfig) else vit_links(cfg)


def canonical_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every canonical entry of the model; allocates nothing."""
    shapes: dict[str, tuple[int, ...]] = {}
    for link in links(cfg):
        shapes.update(link.canonical_shapes())
    return shapes


def count_params(cfg: ModelConfig) -> int:
    """Number of trainable parameters, from shapes alone."""
    return sum(math.prod(s) for s in canonical_shapes(cfg).values())


MAX_LISTED = 20  # a whole model's worth of mismatches helps nobody


def listing(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_LISTED:
        return lines
    return lines[:MAX_LISTED] + [f"  ... and {len(lines) - MAX_LISTED} more"]


def check_weights(weights: Mapping[str, np.ndarray], cfg: ModelConfig, what: str = "checkpoint") -> None:
    """Raise one error naming every missing, unexpected or misshapen canonical entry."""
    expected = canonical_shapes(cfg)
    missing = [k for k in expected if k not in weights]
    unexpected = sorted(k for k in weights if k not in expected)
    wrong = [
        f"  {k}: expected {expected[k]}, found {tuple(np.shape(weights[k]))}"
        for k in expected
        if k in weights and tuple(np.shape(weights[k])) != expected[k]
    ]
    if not (missing or unexpected or wrong):
        return
    lines = [f"{what} does not fit the model ({cfg.describe()}):"]
    if wrong:
        lines += ["shape mismatches:"] + listing(wrong)
    if missing:
        lines += ["missing:"] + listing([f"  {k}: expected {expected[k]}" for k in missing])
    if unexpected:
        lines += ["unexpected:"] + listing([f"  {k}: found {tuple(np.shape(weights[k]))}" for k in unexpected])
    raise WeightsMismatchError("\n".join(lines))
