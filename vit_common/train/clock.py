"""Where a run's wall time goes: the first step (compilation), the train step itself, waiting
for data, evaluation, checkpoints and the rest (logging, the progress bar). The step's own rate
and the whole run's rate come from the same clock, so `train.py` can say how far the run falls
behind its step, and why."""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict

PHASES = ("compile", "step", "data", "eval", "checkpoint")


class RunClock:
    """Seconds per phase since start(), plus counters for the current logging window."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self._window: dict[str, float] = defaultdict(float)
        self.start()

    def start(self) -> None:
        self.t0 = self._window_t0 = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str):
        """Time a block. The step's block must wait for the step's result (the loops block on its
        metrics), else asynchronous dispatch would bill the step's compute to whatever waits next."""
        t = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t
            self.totals[name] += dt
            self._window[name] += dt

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def take_window(self) -> tuple[float, dict[str, float]]:
        """(wall seconds, seconds per phase) since the last call, and start a new window."""
        now = time.perf_counter()
        wall, phases = now - self._window_t0, dict(self._window)
        self._window_t0, self._window = now, defaultdict(float)
        return wall, phases

    def breakdown(self) -> dict[str, float]:
        """Seconds per phase since start(); 'other' is the wall time no phase accounts for."""
        out = {name: self.totals.get(name, 0.0) for name in PHASES}
        out["other"] = max(0.0, self.elapsed() - sum(self.totals.values()))
        return out
