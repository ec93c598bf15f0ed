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
from .module_tables import eva_links, swin_links
from .tables import Link, vit_links

Weights = dict[str, np.ndarray]


def links(cfg: ModelConfig) -> list[Link]:
    """Every parameterised module of the model described by cfg, in forward order."""
    if cfg.arch == "eva":
        return eva_links(cfg)
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


HALF_DTYPES = ("float16", "bfloat16")  # widened to float32 on reading; every half value is exact in float32


def check_values(weights: Mapping[str, np.ndarray], what: str = "checkpoint") -> tuple[Weights, list[str]]:
    """The weights with half-precision entries cast to float32, and a note of each cast.

    Raises one single-line WeightsMismatchError naming every entry that is not floating point
    (integers, bool: no model weight is) or holds NaN / inf: a model built from them would run
    and print NaN or garbage instead of failing.
    """
    out: Weights = {}
    casts: dict[str, int] = {}
    wrong_dtype, non_finite = [], []
    for k, v in weights.items():
        v = np.asarray(v)
        if v.dtype.name in HALF_DTYPES:  # bfloat16 (ml_dtypes) is not an np.floating subtype
            casts[v.dtype.name] = casts.get(v.dtype.name, 0) + 1
            v = v.astype(np.float32)
        if not np.issubdtype(v.dtype, np.floating):
            wrong_dtype.append(f"{k} ({v.dtype})")
        elif not np.isfinite(v).all():
            non_finite.append(k)
        out[k] = v
    problems = []
    if wrong_dtype:
        problems.append("not floating point: " + _inline(sorted(wrong_dtype)))
    if non_finite:
        problems.append("NaN or inf values: " + _inline(sorted(non_finite)))
    if problems:
        raise WeightsMismatchError(f"{what}: unusable weights; " + "; ".join(problems))
    notes = [f"{n} {dtype} weight{'s' if n > 1 else ''} cast to float32 (exact)" for dtype, n in sorted(casts.items())]
    return out, notes


def _inline(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f", ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")
