"""Checkpoints of the whole run, mirroring vit_jax/train/checkpointing.py: model, EMA and
optimizer state, the update and bad-step counters and the data iterator's position, one file
per step in workdir/checkpoints. Atomic (written aside, then renamed), the last k kept. The
dropout masks are a function of the step (step.step_seed), so no RNG state needs keeping."""
from __future__ import annotations

from pathlib import Path

import torch

from vit_common.atomic import atomic_write
from vit_common.errors import CheckpointError
from vit_common.formats.run_folder import run_checkpoint_steps, torch_step_name


class RunCheckpointer:
    def __init__(self, workdir: str | Path, keep: int):
        self.folder = Path(workdir).absolute() / "checkpoints"
        self.keep = keep

    def latest_step(self) -> int | None:
        return max(run_checkpoint_steps(self.folder), default=None)

    def save(self, step: int, state: dict, data_state: dict) -> None:
        atomic_write(self.folder / torch_step_name(step), lambda f: torch.save(dict(state, step=step, data=data_state), f))
        saved = run_checkpoint_steps(self.folder)
        for old in sorted(saved)[:-self.keep]:
            saved[old].unlink(missing_ok=True)

    def restore(self, step: int) -> tuple[dict, dict]:
        """(state, data_state) of the checkpoint at `step`."""
        path = run_checkpoint_steps(self.folder)[step]
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a damaged file
            raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
        return state, state.pop("data")
