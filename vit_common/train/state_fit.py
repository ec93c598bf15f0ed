"""Resuming with a recipe that changes the saved state's structure (EMA on or off, drop path on
or off, another model or optimizer): fit what a checkpoint holds to what the run now holds,
part by part, before any compute. The EMA weights and the model's RNG streams may start afresh
(and say so); a part the run needs but does not have any more is dropped (and said); any other
mismatch is refused with a message naming the recipe fields that changed, never a tree-mismatch
traceback from deep inside a checkpoint library."""
from __future__ import annotations

import dataclasses

from ..errors import ConfigError

Path = tuple[str, ...]
Spec = tuple[tuple[int, ...], str]  # (shape, dtype)

PARTS = {"params": "the model's parameters", "model": "the model's parameters", "opt_state": "the optimizer state",
         "optimizer": "the optimizer state", "step": "the step counter", "ema": "the EMA weights",
         "rest": "the model's RNG streams (dropout, drop path)", "bad_run": "the non-finite-step counter"}
# Parts that may start afresh when the checkpoint lacks them, and how.
FRESH = {"ema": "start from the restored weights", "rest": "start from their seeds",
         "bad_run": "counts from here"}


@dataclasses.dataclass
class Fit:
    restore: set[Path]  # leaves restored from the checkpoint
    fresh: set[str]  # parts some of whose leaves start afresh
    notes: list[str]  # what starts afresh or is dropped, one line each


def _describe(spec: Spec | None) -> str:
    return "absent" if spec is None else f"{spec[1]}{list(spec[0])}"


def _examples(paths: list[Path], saved: dict, now: dict) -> str:
    shown = [f"{'.'.join(p)}: saved {_describe(saved.get(p))}, now {_describe(now.get(p))}" for p in paths[:3]]
    return ", ".join(shown) + (f", ... {len(paths) - 3} more" if len(paths) > 3 else "")


def fit_state(saved: dict[Path, Spec], now: dict[Path, Spec], *, where: str, changed: list[str]) -> Fit:
    """Match the checkpoint's leaves (path -> shape, dtype) to the run's. Raises ConfigError when a
    part that cannot start afresh differs."""
    same = {p for p in saved.keys() & now.keys() if saved[p] == now[p]}
    now_parts = {p[0] for p in now}
    bad: dict[str, list[Path]] = {}
    fresh: dict[str, int] = {}
    dropped: dict[str, int] = {}
    for p in sorted((saved.keys() | now.keys()) - same):
        part = p[0]
        if p in now and part in FRESH:
            fresh[part] = fresh.get(part, 0) + 1
        elif p not in now and (part in FRESH or part not in now_parts):
            dropped[part] = dropped.get(part, 0) + 1
        else:
            bad.setdefault(part, []).append(p)
    if bad:
        order = list(PARTS)
        bad = dict(sorted(bad.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
        details = "; ".join(f"{PARTS.get(part, part)} ({_examples(paths, saved, now)})" for part, paths in bad.items())
        why = (f"the recipe changed: {'; '.join(changed)}" if changed else
               "the recipe is unchanged, so the code that wrote the checkpoint differs")
        raise ConfigError(f"cannot resume {where}: the checkpoint does not fit this run: {details}; {why}. Put the "
                          "saved values back, or train in a new --workdir (--init with this one starts from its weights)")
    notes = []
    saved_parts = {p[0] for p in saved}
    for part, n in fresh.items():
        what = PARTS.get(part, part)
        head = f"the checkpoint has no {what.removeprefix('the ')}" if part not in saved_parts else \
            f"{what}: {n} not in the checkpoint"
        notes.append(f"{head}; {'they' if part != 'bad_run' else 'it'} {FRESH[part]}")
    for part, n in dropped.items():
        what = PARTS.get(part, part)
        notes.append(f"{what} in the checkpoint: not used by this recipe, dropped" if part not in now_parts else
                     f"{what}: {n} in the checkpoint not used by this recipe, dropped")
    return Fit(restore=same, fresh=set(fresh), notes=notes)
