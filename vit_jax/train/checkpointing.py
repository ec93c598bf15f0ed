"""Orbax checkpoints of the whole run: parameters, optimizer state, step, RNG, the data
iterator's position. Atomic (orbax writes a temporary folder and renames it), last k kept,
asynchronous (training continues while the previous step is written). A resume takes the
newest readable checkpoint (a damaged one is named, moved aside and skipped) and fits it to the
run's state (vit_common.train.state_fit) before reading any array."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P

from vit_common.errors import CheckpointError
from vit_common.formats.run_folder import move_aside, newest_readable
from vit_common.train.state_fit import fit_state


def _key(path) -> tuple[str, ...]:
    """A tree path as strings: orbax stores optax's named tuples as dicts keyed by field name."""
    return tuple(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


class RunCheckpointer:
    def __init__(self, workdir: str | Path, keep: int):
        self.folder = Path(workdir).absolute() / "checkpoints"
        self.manager = ocp.CheckpointManager(
            self.folder,
            # Old checkpoints are deleted in the background too, so a save never waits on a removal.
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                                 enable_background_delete=True),
            item_handlers=dict(state=ocp.StandardCheckpointHandler(), data=ocp.JsonCheckpointHandler()),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict, force: bool = False) -> None:
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        data=ocp.args.JsonSave(data_state)), force=force)

    def restore_latest(self, state, *, changed: list[str]):
        """(step, state, data_state) from the newest readable checkpoint, fitted to `state` (the
        run's initial train state, whose arrays carry the shardings to restore to); (0, state,
        None) when there is none. `changed`: the recipe's changes, to name when it cannot fit."""
        steps = {s: self.folder / str(s) for s in self.manager.all_steps()}
        if not steps:
            return 0, state, None
        now = {_key(p): x for p, x in jax.tree_util.tree_flatten_with_path(state)[0]}
        replicated = NamedSharding(next(iter(now.values())).sharding.mesh, P())

        def read(step, path):
            meta = self.manager.item_metadata(step)["state"]
            if meta is None:
                raise CheckpointError(f"{path}: no state metadata")
            saved = {_key(p): m for p, m in jax.tree_util.tree_flatten_with_path(meta)[0]}
            fit = fit_state({p: (tuple(m.shape), str(m.dtype)) for p, m in saved.items()},
                            {p: (tuple(x.shape), str(x.dtype)) for p, x in now.items()},
                            where=f"{self.folder.parent} from step {step}", changed=changed)
            # Read every saved leaf (orbax wants the saved tree); the unused ones land replicated.
            target = jax.tree_util.tree_map_with_path(
                lambda p, m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=now[_key(p)].sharding
                                                  if _key(p) in fit.restore else replicated), meta)
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
            return fit, restored

        step, (fit, restored) = newest_readable(steps, read, where=self.folder.parent, on_unreadable=self._move_aside)
        values = {_key(p): x for p, x in jax.tree_util.tree_flatten_with_path(restored["state"])[0]}
        state = jax.tree_util.tree_map_with_path(lambda p, x: values[_key(p)] if _key(p) in fit.restore else x, state)
        if "ema" in fit.fresh:  # EMA switched on: it starts from the restored weights
            state["ema"] = jax.tree.map(jnp.copy, state["params"])
        for note in fit.notes:
            print(f"resuming from step {step}: {note}")
        return step, state, restored["data"]

    def _move_aside(self, step: int, path: Path) -> str:
        moved = ""
        if jax.process_index() == 0:
            moved = move_aside(path)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"checkpoint {step} moved aside")
        self.manager.reload()
        return moved

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
