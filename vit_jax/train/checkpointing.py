"""Orbax checkpoints of the whole run: parameters, optimizer state, step, RNG, the data
iterator's position. Atomic (orbax writes a temporary folder and renames it), last k kept,
asynchronous (training continues while the previous step is written)."""
from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class RunCheckpointer:
    def __init__(self, workdir: str | Path, keep: int):
        self.manager = ocp.CheckpointManager(
            Path(workdir).absolute() / "checkpoints",
            # Old checkpoints are deleted in the background too, so a save never waits on a removal.
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                                 enable_background_delete=True),
            item_names=("state", "data"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict, force: bool = False) -> None:
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        data=ocp.args.JsonSave(data_state)), force=force)

    def restore(self, step: int, abstract_state):
        """(state, data_state) with the shardings of `abstract_state` (jax.ShapeDtypeStructs)."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return restored["state"], restored["data"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
