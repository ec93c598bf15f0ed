"""What the transformers families share: activations, labels, refusing what a class cannot hold."""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from ...errors import CheckpointError
from ..base import refuse

# Ours -> transformers' hidden_act (ACT2FN), and back (with the other spellings of the same function).
HF_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "quick_gelu": "quick_gelu", "silu": "silu"}
OUR_ACT = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "quick_gelu": "quick_gelu",
           "silu": "silu", "swish": "silu"}


def our_act(config: dict[str, Any], default: str) -> str:
    act = config.get("hidden_act", default)
    if act not in OUR_ACT:
        raise CheckpointError(f"hidden_act {act!r}: the twins compute {sorted(OUR_ACT)}")
    return OUR_ACT[act]


def refuse_unless(cfg: Any, what: str, **wanted: Any) -> None:
    """CheckpointError naming every field of `cfg` that transformers' class `what` cannot hold.
    A wanted value is either the value itself or (predicate, what it has)."""
    problems = _unheld(cfg, wanted)
    # The config fields (not derived properties) whose wanted values would make it fit, as train.py's option.
    fields = {f.name for f in dataclasses.fields(cfg)}
    fix = {f: want for f, want in wanted.items() if f in fields and not isinstance(want, tuple) and getattr(cfg, f) != want}
    train = ""
    if problems and fix and not _unheld(cfg.replace(**fix), wanted):
        train = f"; train.py makes models it holds with --model-args '{json.dumps(fix)}'"
    refuse(f"transformers' {what}", ((f"{f}={v!r} (it has {has})", True) for f, v, has in problems),
           lead="this model: ", fix=f". Write another format (--to timm, canonical .npz){train}")


def _unheld(cfg: Any, wanted: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(field, value, what the class has) for each wanted field `cfg` misses."""
    problems = []
    for field, want in wanted.items():
        value = getattr(cfg, field)
        ok, has = (want[0](value), want[1]) if isinstance(want, tuple) else (value == want, repr(want))
        if not ok:
            problems.append((field, value, has))
    return problems


def exact_ratio(width: int, dim: int) -> float:
    """An mlp_ratio with int(dim * ratio) == width exactly (width / dim can fall just below)."""
    ratio = width / dim
    while int(dim * ratio) < width:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def label_fields(meta: dict[str, Any], num_labels: int) -> dict[str, Any]:
    """config.json's id2label / label2id: the class names where meta has one per class, else
    transformers' LABEL_i placeholders."""
    names = meta.get("class_names")
    if not (isinstance(names, list) and len(names) == num_labels):
        names = [f"LABEL_{i}" for i in range(num_labels)]
    return {"id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}


def class_names(id2label: Any) -> list[str] | None:
    """Class names from id2label, unless it is the LABEL_i placeholder every config gets."""
    if not isinstance(id2label, dict) or all(v == f"LABEL_{k}" for k, v in id2label.items()):
        return None
    names = [id2label.get(str(i), id2label.get(i)) for i in range(len(id2label))]
    return names if all(isinstance(n, str) for n in names) else None


def all_zero(value: np.ndarray | None) -> bool:
    return value is not None and not np.any(value)


def size_hints(config: dict[str, Any]) -> dict[str, Any]:
    """Heads and image size, where config.json gives them (the weights' shapes cannot say)."""
    return {ours: config[theirs] for theirs, ours in (("num_attention_heads", "num_heads"), ("image_size", "img_size"))
            if config.get(theirs) is not None}
