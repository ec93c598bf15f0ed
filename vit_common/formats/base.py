"""Layout: one way checkpoints in the wild name their weights, how to recognise it and how to read it."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable

from ..weights import Weights


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str  # short name, e.g. 'big_vision' (stored in a Checkpoint's meta as source_layout)
    description: str  # what a person calls it, for reports
    signature: str = ""  # the telltale names, for the error when nothing matches
    # Whether a set of weight names is in this layout; None for folders (train.py runs).
    matches: Callable[[set[str]], bool] | None = None
    # Raw names -> canonical names, or timm's names when names == 'timm' (their fused tensors
    # need the architecture to split, which is known only later).
    read: Callable[[Weights], Weights] = dict
    names: str = "canonical"
    # The way back, for `vit-convert --to NAME`: write (canonical weights, config, metadata) to a
    # path in this layout (a file or a folder, as the format has it). None: read-only.
    write: Callable[[Weights, Any, dict, Path], None] | None = None
    to: str | None = None  # the --to name, e.g. 'hf' (default: the layout's name)
    # The preset a file in this layout implies (given its weights in the names `read` gives), for
    # formats whose shapes cannot say the architecture; it raises CheckpointError naming --model
    # when it cannot tell. None: the weights' shapes say it.
    implied_model: Callable[[Weights], str] | None = None
    # What the format says beyond its weights, from the raw names:
    # notes(keys): lines for the report (e.g. a text tower left behind), whatever the config;
    # implied(keys, given): config fields the format implies where neither a stored config nor
    # --model says; `given` holds the fields set by flags. It raises CheckpointError, naming the
    # flag, for what the format cannot say and no flag gave.
    notes: Callable[[set[str]], list[str]] | None = None
    implied: Callable[[set[str], set[str]], dict[str, Any]] | None = None

    @property
    def output_name(self) -> str:
        return self.to or self.name


def is_swin(keys: Iterable[str]) -> bool:
    """Whether weight names (any layout) are a Swin Transformer's: it has relative position bias tables."""
    return any(k.endswith("relative_position_bias_table") for k in keys)
