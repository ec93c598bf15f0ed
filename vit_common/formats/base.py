"""Layout: one way checkpoints in the wild name their weights: how to recognise it, what a file in
it says about the model (one hook), how to read it and how to write it back."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..errors import CheckpointError
from ..weights import Weights

FAMILIES = ("vit", "eva", "swin")  # the config families (ViTConfig, EvaConfig, SwinConfig: their `arch`)


@dataclasses.dataclass(frozen=True)
class Implied:
    """What a file says about the model beyond its weights' shapes (a Layout's `implies` hook)."""
    family: str | None = None  # vit / eva / swin; None: the Layout's, else the weight names'
    model: str | None = None  # the preset the file implies, for formats whose shapes cannot say it
    # Config fields the format implies where neither a stored config nor --model says (a flag wins).
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Fields the format cannot say: field -> the error (naming the flag) when no flag, config or model gives it.
    needs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()  # lines for the report, whatever the config
    fields_notes: tuple[str, ...] = ()  # lines for the report when `fields` set the config
    # The preprocessing the weights expect (the config read -> preprocess.py's entries), where the
    # file records none and carries no config of this project's; `preprocess_source` names it.
    preprocess: Callable[[Any], dict[str, Any]] | None = None
    preprocess_source: str = ""


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
    family: str | None = None  # vit / eva / swin; None: the weight names say (timm's files, runs)
    # implies(weights in the names `read` gives, the raw names) -> Implied: the one answer to
    # "what does a file in this layout say". None: only its family.
    implies: Callable[[Weights, set[str]], Implied] | None = None
    # The way back, for `vit-convert --to NAME`: write (canonical weights, config, metadata) to a
    # path in this layout, one of `suffixes` ('' a folder). None: read-only.
    write: Callable[[Weights, Any, dict, Path], None] | None = None
    to: str | None = None  # the --to name, e.g. 'hf' (default: the layout's name)
    suffixes: tuple[str, ...] = ()
    # The preprocessing of files in this layout that record none: a row of predict/defaults.py's
    # FAMILIES; with model_first, a named model's family (or the later families' options) comes first.
    preprocess: str | None = None
    model_first: bool = False
    # How the code that released files in this layout resizes their position tables at another
    # image size: a rule of config/dynamic.py ('timm', 'dinov2', 'transformers'; '_reg' added for
    # models with registers where the source treats them otherwise).
    pos_embed_interp: str = "timm"

    @property
    def output_name(self) -> str:
        return self.to or self.name

    def facts(self, weights: Weights, keys: set[str]) -> Implied:
        """What a file in this layout says (the hook's answer), its family always filled in."""
        implied = self.implies(weights, keys) if self.implies is not None else Implied()
        family = implied.family or self.family or family_from_names(keys)
        return dataclasses.replace(implied, family=family)


def is_swin(keys: Iterable[str]) -> bool:
    """Whether weight names (any layout) are a Swin Transformer's: it has relative position bias tables."""
    return any(k.endswith("relative_position_bias_table") for k in keys)


def family_from_names(keys: Iterable[str]) -> str:
    """The family of timm-named or canonical weights, for layouts that hold several (timm's, runs)."""
    from ..weights.infer_eva import is_eva

    keys = set(keys)
    return "swin" if is_swin(keys) else "eva" if is_eva(keys) else "vit"


def refuse(holder: str, problems: Iterable[tuple[str, Any]], *, lead: str = "", fix: str = "") -> None:
    """The one way a writer refuses what its format cannot hold: `problems` are (what, present)
    pairs; every present one is named in a single error ('{holder} cannot hold {lead}A; B{fix}')."""
    found = [what for what, present in problems if present]
    if found:
        raise CheckpointError(f"{holder} cannot hold {lead}{'; '.join(found)}{fix}")


def require(fmt: str, cfg, checks: Mapping[str, bool]) -> None:
    """refuse() for formats that list what they need ({need: whether cfg has it})."""
    describe = cfg.describe() if hasattr(cfg, "describe") else cfg
    refuse(f"--to {fmt}", ((need, not ok) for need, ok in checks.items()),
           lead=f"this model ({describe}): the format needs ")
