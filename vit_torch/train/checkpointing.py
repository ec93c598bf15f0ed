"""Checkpoints of the whole run, mirroring vit_jax/train/checkpointing.py: model, EMA and
optimizer state, the update and bad-step counters and the data iterator's position, one file
per step in workdir/checkpoints. Atomic (written aside, then renamed), the last k kept. The
dropout masks are a function of the step (step.step_seed), so no RNG state needs keeping.

Under DDP only rank 0 writes; every rank reads the step rank 0 picked, so on several nodes the
workdir must be on a filesystem they all share (check_shared_workdir says so at start-up)."""
from __future__ import annotations

import secrets
import shutil
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


class ShardedCheckpointer:
    """FSDP's checkpoints (--sharding fsdp under torchrun): torch.distributed.checkpoint, each rank
    writing its own shards of the model, EMA and optimizer state into one folder per step, and
    rank 0 the counters and the data iterator's position. Atomic: written under a hidden name, renamed
    by rank 0 once every rank has finished; the last k kept. The same interface as RunCheckpointer."""

    def __init__(self, workdir: str | Path, keep: int, rank: int, world: int):
        self.folder = Path(workdir).absolute() / "checkpoints"
        self.keep, self.rank, self.world = keep, rank, world

    def latest_step(self) -> int | None:
        return max(run_checkpoint_steps(self.folder), default=None)

    @staticmethod
    def _sharded(model, optimizer, ema) -> dict:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

        model_state, optimizer_state = get_state_dict(model, optimizer)
        return dict(model=model_state, optimizer=optimizer_state, ema=get_model_state_dict(ema) if ema is not None else {})

    def save(self, step: int, model, optimizer, ema, counters: dict, data_state: dict) -> None:
        import torch.distributed.checkpoint as dcp

        final = self.folder / torch_step_name(step, sharded=True)
        partial = self.folder / f".{final.name}.partial"
        if self.rank == 0:
            shutil.rmtree(partial, ignore_errors=True)  # a save cut short before
            partial.mkdir(parents=True)
        _broadcast(None, self.world)
        dcp.save(self._sharded(model, optimizer, ema), checkpoint_id=partial)
        if self.rank == 0:
            atomic_write(partial / "run.pt", lambda f: torch.save(dict(counters, step=step, data=data_state), f))
        _broadcast(None, self.world)  # every rank's shards are written
        if self.rank == 0:
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
            saved = run_checkpoint_steps(self.folder)
            for old in sorted(saved)[:-self.keep]:
                shutil.rmtree(saved[old], ignore_errors=True)
        _broadcast(None, self.world)

    def restore_latest(self, model, optimizer, ema) -> tuple[int, dict | None]:
        """Load the newest readable checkpoint into model, optimizer and EMA; (step, counters and
        data position) or (0, None). Rank 0 picks the step, every rank reads its own shards."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

        step, error = 0, None
        if self.rank == 0:
            steps = {s: p for s, p in run_checkpoint_steps(self.folder).items() if p.suffix == ".dcp"}
            try:
                if steps:
                    step, _ = newest_readable(steps, lambda s, p: torch.load(p / "run.pt", weights_only=True),
                                              where=self.folder.parent, on_unreadable=lambda _, p: move_aside(p))
            except CheckpointError as e:
                error = str(e)
        step, error = _broadcast((step, error), self.world)
        if error:
            raise CheckpointError(error if self.rank == 0 else "rank 0 found no readable checkpoint (see its message)")
        if not step:
            return 0, None
        path = self.folder / torch_step_name(step, sharded=True)
        state = self._sharded(model, optimizer, ema)
        dcp.load(state, checkpoint_id=path)
        # The recipe's current optimizer settings rule from here on (as in load_state).
        settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        for group, current in zip(optimizer.param_groups, settings):
            params = group["params"]
            group.clear()
            group.update(current, params=params)
        if ema is not None:
            set_model_state_dict(ema, state["ema"])
        return step, torch.load(path / "run.pt", weights_only=True)
