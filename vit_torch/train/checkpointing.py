"""Checkpoints of the whole run, mirroring vit_jax/train/checkpointing.py: model, EMA and
optimizer state, the update and bad-step counters and the data iterator's position, one file
per step in workdir/checkpoints. Atomic (written aside, then renamed), the last k kept. The
dropout masks are a function of the step (step.step_seed), so no RNG state needs keeping.

Under DDP only rank 0 writes; every rank reads the step rank 0 picked, so on several nodes the
workdir must be on a filesystem they all share (check_shared_workdir says so at start-up)."""
from __future__ import annotations

import secrets
from pathlib import Path

import torch
import torch.distributed as dist

from vit_common.atomic import atomic_write
from vit_common.errors import CheckpointError
from vit_common.formats.run_folder import (move_aside, newest_readable, run_checkpoint_steps, short_reason,
                                           torch_step_name)
from vit_common.train.state_fit import fit_state


def _broadcast(obj, world: int):
    """rank 0's `obj` on every rank (a barrier too)."""
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(obj, world: int) -> list:
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def check_shared_workdir(folder: Path, rank: int, world: int) -> None:
    """Several processes: every rank must see what rank 0 writes in the workdir (it alone writes the
    checkpoints, and every rank resumes from them). A token written by rank 0 and read by all."""
    if world == 1:
        return
    marker = folder / ".ranks_share_this_folder"
    token = None
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        atomic_write(marker, lambda f: f.write(token.encode()))
    token = _broadcast(token, world)
    seen = _gather(marker.is_file() and marker.read_text() == token, world)
    if rank == 0:
        marker.unlink(missing_ok=True)
    blind = [r for r, ok in enumerate(seen) if not ok]
    if blind:
        raise CheckpointError(f"{folder}: ranks {blind} do not see what rank 0 writes there. Rank 0 writes the "
                              "checkpoints and every rank resumes from them: with torchrun on several nodes, put "
                              "--workdir on a filesystem every node mounts (NFS, Lustre, a bucket mount)")


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

    @staticmethod
    def _read(step: int, path: Path) -> dict:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "model" not in state or "data" not in state:
            raise CheckpointError(f"{path}: not a train.py checkpoint")
        return state

    def restore_latest(self, rank: int, world: int) -> tuple[int, dict | None]:
        """(step, state) of the newest readable checkpoint, or (0, None). Rank 0 picks it (naming and
        moving aside damaged ones); the others wait for its choice, then read the same file."""
        step, state, error = 0, None, None
        if rank == 0:
            steps = run_checkpoint_steps(self.folder)
            try:
                if steps:
                    step, state = newest_readable(steps, self._read, where=self.folder.parent,
                                                  on_unreadable=lambda _, p: move_aside(p))
            except CheckpointError as e:
                error = str(e)
        step, rank0_error = _broadcast((step, error), world)
        if rank0_error:
            raise CheckpointError(rank0_error if rank == 0 else "rank 0 found no readable checkpoint (see its message)")
        if rank != 0 and step:
            path = self.folder / torch_step_name(step)
            try:
                state = self._read(step, path)
            except Exception as e:
                error = f"rank {rank} cannot read {path}, which rank 0 read ({short_reason(e)})"
        errors = [e for e in _gather(error, world) if e]
        if errors:
            raise CheckpointError(f"{'; '.join(errors)}: every rank resumes from the checkpoints rank 0 writes, so "
                                  "--workdir must be on a filesystem every node shares")
        return step, state


def _specs(prefix: str, tensors: dict) -> dict:
    return {(prefix, k): (tuple(v.shape), str(v.dtype)) for k, v in tensors.items()}


def load_state(state: dict, step: int, *, model, optimizer, ema, changed: list[str], where: str) -> list[str]:
    """Load a checkpoint into the run, fitted to its recipe (vit_common.train.state_fit): the EMA
    starts from the restored weights when the checkpoint has none; a mismatch in the model or the
    optimizer's parameter groups is refused before any compute. Returns what started afresh."""
    groups = lambda opt_state: (tuple(len(g["params"]) for g in opt_state["param_groups"]), "groups")  # noqa: E731
    saved = {**_specs("model", state["model"]), ("optimizer",): groups(state["optimizer"])}
    now = {**_specs("model", model.state_dict()), ("optimizer",): groups(optimizer.state_dict())}
    if state.get("ema") is not None:
        saved |= _specs("ema", state["ema"])
    if ema is not None:
        now |= _specs("ema", ema.state_dict())
    fit = fit_state(saved, now, where=f"{where} from step {step}", changed=changed)
    model.load_state_dict(state["model"])
    # torch restores the saved groups' settings too; the recipe's current ones (weight decay,
    # beta2, layer-decay factors) rule from here on, as they do in the JAX twin.
    settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(state["optimizer"])
    for group, current in zip(optimizer.param_groups, settings):
        params = group["params"]
        group.clear()
        group.update(current, params=params)
    if ema is not None:
        ema.load_state_dict(state["ema"] if "ema" not in fit.fresh else model.state_dict())
    return fit.notes
