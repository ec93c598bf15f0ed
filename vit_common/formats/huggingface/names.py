"""One table of name pairs per transformers family, read both ways: HF -> timm and timm -> HF.

A Rule pairs an HF name template with a timm one. `{i}` stands for a block index, `{j}` for a
second one (Swin's block in a stage), `{p}` for weight | bias. When one side's template holds
`{part}`, that side has one tensor per part and the other side their concatenation along axis 0
(q | k | v into timm's fused qkv; SigLIP's fused in_proj into timm's q and kv), in `sizes`
proportions (default equal). `to_timm` / `to_hf` reshape where the two disagree (CLIP's (C,)
class embedding is timm's (1, 1, C) token). Rules are tried in order; `alias` rules only read
(transformers 5's in-memory spellings), so writing always gives what save_pretrained writes.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Sequence

import numpy as np

from ...errors import CheckpointError
from ...weights import Weights

Array = np.ndarray


def _same(a: Array) -> Array:
    return a


@dataclasses.dataclass(frozen=True)
class Rule:
    hf: str
    timm: str
    parts: tuple[str, ...] = ()
    sizes: tuple[int, ...] | None = None
    to_timm: Callable[[Array], Array] = _same
    to_hf: Callable[[Array], Array] = _same
    alias: bool = False

    def pattern(self, side: str) -> re.Pattern:
        template = re.escape(getattr(self, side))
        for key, group in (("i", r"\d+"), ("j", r"\d+"), ("p", "weight|bias"),
                           ("part", "|".join(map(re.escape, self.parts)) or "(?!)")):
            template = template.replace(re.escape("{" + key + "}"), f"(?P<{key}>{group})")
        return re.compile(template)

    def split_side(self) -> str | None:
        return "hf" if "{part}" in self.hf else "timm" if "{part}" in self.timm else None


def unsqueeze(n: int) -> dict[str, Callable[[Array], Array]]:
    """to_timm / to_hf for an HF tensor that timm holds with `n` more leading axes of size 1."""
    return dict(to_timm=lambda a: a.reshape((1,) * n + a.shape), to_hf=lambda a: a.reshape(a.shape[n:]))


def convert(raw: Weights, rules: Sequence[Rule], src: str, what: str) -> Weights:
    """Rename `raw` from side `src` ('hf' or 'timm') to the other, fusing or splitting parts."""
    dst = "timm" if src == "hf" else "hf"
    usable = [r for r in rules if src == "hf" or not r.alias]
    patterns = [(r, r.pattern(src)) for r in usable]
    out: Weights = {}
    pending: dict[tuple[int, tuple], dict[str, Array]] = {}
    unknown = []
    for name, value in raw.items():
        for index, (rule, pattern) in enumerate(patterns):
            if m := pattern.fullmatch(name):
                break
        else:
            unknown.append(name)
            continue
        groups = m.groupdict()
        part = groups.pop("part", None)
        split = rule.split_side()
        if split == src:  # one of several tensors the other side holds fused
            pending.setdefault((index, tuple(sorted(groups.items()))), {})[part] = value
        elif split == dst:
            sizes = rule.sizes or (1,) * len(rule.parts)
            bounds = np.cumsum([value.shape[0] * s // sum(sizes) for s in sizes])[:-1]
            for part, chunk in zip(rule.parts, np.split(value, bounds)):
                out[getattr(rule, dst).format(part=part, **groups)] = _move(rule, dst, chunk)
        else:
            out[getattr(rule, dst).format(**groups)] = _move(rule, dst, value)
    if unknown:
        raise CheckpointError(f"{what}: names this converter does not know: {sorted(unknown)[:8]}")
    for (index, groups), parts in pending.items():
        rule = usable[index]
        if set(parts) != set(rule.parts):
            name = getattr(rule, src).format(part="{" + "|".join(rule.parts) + "}", **dict(groups))
            raise CheckpointError(f"{what}: {name} needs all of {list(rule.parts)}; found {sorted(parts)}")
        fused = np.concatenate([parts[p] for p in rule.parts])
        out[getattr(rule, dst).format(**dict(groups))] = _move(rule, dst, fused)
    return out


def _move(rule: Rule, dst: str, value: Array) -> Array:
    return np.ascontiguousarray(rule.to_timm(value) if dst == "timm" else rule.to_hf(value))
