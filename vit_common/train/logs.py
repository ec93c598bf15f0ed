"""What a training run leaves for people: metrics.jsonl, TensorBoard scalars, a training-curve
PNG and summary.json. Framework-free, so both twins' loops write the same files."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..imports import import_without


class RunLog:
    def __init__(self, workdir: str | os.PathLike, resume_step: int = 0, tensorboard: bool = True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path = self.workdir / "metrics.jsonl"
        self._drop_rows_after(resume_step)  # rows logged after the checkpoint we resume from
        self._file = open(self.path, "a")
        self._tb = None
        if tensorboard:
            try:
                SummaryWriter = import_without("tensorboardX", "torch").SummaryWriter
                self._tb = SummaryWriter(str(self.workdir / "tensorboard"), purge_step=resume_step or None)
            except ImportError:
                pass

    def _drop_rows_after(self, step: int) -> None:
        if not self.path.exists():
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        atomic_write(self.path, lambda f: f.write("".join(r + "\n" for r in rows).encode()))

    def write(self, step: int, kind: str, values: dict[str, float]) -> None:
        row = {"step": int(step), "kind": kind, **{k: float(v) for k, v in values.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{kind}/{k}", float(v), int(step))

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()

    def rows(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def plot(self, title: str = "") -> Path:
        """training_curves.png: train loss per logged step, test accuracy per epoch."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()
        train = [r for r in rows if r["kind"] == "train"]
        test = [r for r in rows if r["kind"] == "test"]
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label="train loss")
        if test:
            ax_loss.plot([r["step"] for r in test], [r["loss"] for r in test], "o-", label="test loss")
        ax_loss.set_xlabel("step"), ax_loss.set_ylabel("cross-entropy"), ax_loss.legend(), ax_loss.grid(alpha=0.3)
        if train:
            ax_acc.plot([r["step"] for r in train], [r["accuracy"] for r in train], lw=1, alpha=0.6, label="train (batch)")
        if test:
            ax_acc.plot([r["step"] for r in test], [r["accuracy"] for r in test], "o-", label="test")
        ax_acc.set_xlabel("step"), ax_acc.set_ylabel("accuracy"), ax_acc.legend(), ax_acc.grid(alpha=0.3)
        fig.suptitle(title)
        fig.tight_layout()
        out = self.workdir / "training_curves.png"
        atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=110))
        plt.close(fig)
        return out


def write_json(path: str | os.PathLike, values: dict[str, Any]) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(values, indent=2, sort_keys=True).encode()))
