"""train.py run folders of either twin: their checkpoint steps, reading the latest, and writing one.

A run folder holds config.json ({"model": ...}) and checkpoints/: orbax step folders N/state
(the JAX twin's) or step_N.pt files (the PyTorch twin's).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Mapping, TypeVar

import numpy as np

from ..config import ModelConfig, config_from_dict
from ..errors import CheckpointError, ConfigError
from ..weights import FLAX, TIMM, Weights, flatten_params, nest_params
from .base import Layout

def _write_run(weights: Weights, config: ModelConfig, meta: dict, dst: Path) -> None:
    save_training_dir(dst, weights, config, meta)


# A run's family is its config's; the names say it too (canonical or timm names).
FLAX_RUN = Layout("flax", "train.py run (orbax checkpoint of the Flax twin)", write=_write_run, to="run",
                  suffixes=("",), preprocess="train.py")
TORCH_RUN = Layout("torch_run", "train.py run (checkpoint of the PyTorch twin)", preprocess="train.py")
LAYOUTS = (FLAX_RUN, TORCH_RUN)

# step_N.pt: one file (one process, or DDP's rank 0); step_N.dcp: a torch.distributed.checkpoint
# folder, each FSDP rank's shard in its own file.
_TORCH_STEP = re.compile(r"^step_(\d+)\.(?:pt|dcp)$")
T = TypeVar("T")


def torch_step_name(step: int, sharded: bool = False) -> str:
    """The PyTorch twin's checkpoint file (or, sharded, folder) for `step` in a run's checkpoints/ folder."""
    return f"step_{step:09d}.{'dcp' if sharded else 'pt'}"


def run_checkpoint_steps(folder: str | os.PathLike) -> dict[int, Path]:
    """Finished checkpoints in a train.py run's checkpoints/ folder, step -> path: orbax step
    folders (the JAX twin's) and step_N.pt files (the PyTorch twin's). Writes in progress
    carry other names (orbax's temporary folders, atomic_write's hidden files)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    steps = {}
    for p in folder.iterdir():
        if p.name.isdigit():
            steps[int(p.name)] = p
        elif m := _TORCH_STEP.match(p.name):
            steps[int(m.group(1))] = p
    return steps


def save_training_dir(path: str | os.PathLike, weights: Mapping[str, np.ndarray], config: ModelConfig,
                      meta: Mapping | None = None) -> None:
    """A folder laid out like a train.py run (config.json, checkpoints/0/state as orbax), so the
    JAX engine and read_checkpoint take it like a real run. Built aside, then renamed."""
    import orbax.checkpoint as ocp  # lazily: it brings jax

    path = Path(path).absolute()
    if path.exists():
        raise CheckpointError(f"{path} exists; choose a new folder")
    nested = nest_params(FLAX.export(weights, config))
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes folders private; give the usual permissions
    try:
        record = {"model": config.to_dict(), **({"meta": dict(meta)} if meta else {})}  # meta: as train.py's
        (tmp / "config.json").write_text(json.dumps(record, indent=2))
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(tmp / "checkpoints" / "0" / "state", {"params": nested})
        checkpointer.wait_until_finished()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def short_reason(e: BaseException) -> str:
    """One line for an exception (orbax and TensorStore errors run to pages)."""
    first = next((line for line in str(e).splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {first[:200]}"


def newest_readable(steps: Mapping[int, Path], read: Callable[[int, Path], T], *, where: str | os.PathLike,
                    on_unreadable: Callable[[int, Path], str] | None = None) -> tuple[int, T]:
    """(step, read(step, path)) for the newest checkpoint that reads. A checkpoint cut short (a
    preemption mid-write where rename is not atomic, a full disk) is named in one warning line
    and the next older one tried; on_unreadable(step, path) may move it aside and say where.
    A ConfigError from `read` (the checkpoint reads but does not fit) is not a damaged file and
    propagates. None readable: a CheckpointError saying what to do."""
    for step in sorted(steps, reverse=True):
        path = steps[step]
        try:
            return step, read(step, path)
        except ConfigError:
            raise
        except Exception as e:  # orbax, TensorStore, torch and json raise many types for a damaged file
            _quiet_abandoned_reads()
            moved = on_unreadable(step, path) if on_unreadable else ""
            print(f"warning: checkpoint {path} (step {step}) is unreadable ({short_reason(e.__cause__ or e)}){moved}; "
                  "trying the previous one", file=sys.stderr)
    raise CheckpointError(f"{where}: none of its checkpoints is readable (steps {sorted(steps)}); to start afresh, "
                          "move its checkpoints/ folder away (or train in a new --workdir); to keep the weights, "
                          "restore a good copy of one step from a backup")


def _quiet_abandoned_reads() -> None:
    """A failed orbax read leaves TensorStore threads calling back into its closed event loop and
    coroutines never awaited; Python would print a traceback for each (thousands of lines that
    bury the one warning). Only those two kinds are dropped; every other error still prints."""
    import inspect

    def closed_loop(exc) -> bool:
        return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"

    excepthook, unraisablehook = sys.excepthook, sys.unraisablehook
    if getattr(excepthook, "quiet_abandoned_reads", False):
        return

    def quiet_excepthook(kind, value, tb):
        if not closed_loop(value):
            excepthook(kind, value, tb)

    def quiet_unraisablehook(unraisable):
        if not (closed_loop(unraisable.exc_value) or inspect.iscoroutine(unraisable.object)):
            unraisablehook(unraisable)

    quiet_excepthook.quiet_abandoned_reads = True
    sys.excepthook, sys.unraisablehook = quiet_excepthook, quiet_unraisablehook


def move_aside(path: Path) -> str:
    """Rename an unreadable checkpoint so that no reader takes it and the resumed run can write its
    step again; kept (not deleted) for a post-mortem. Returns the words for the warning."""
    aside = path.with_name(path.name + ".unreadable")
    if aside.exists():
        shutil.rmtree(aside) if aside.is_dir() else aside.unlink()
    os.replace(path, aside)
    return f", moved aside to {aside.name}"


def read_training_run(path: Path) -> tuple[Weights, ModelConfig, dict]:
    """Parameters (the EMA ones when the run kept them, as its final export does) of the newest
    readable checkpoint of a train.py workdir (an orbax step folder from the JAX twin, a step_N.pt
    file from the PyTorch twin; a damaged newer one is named in a warning and skipped), or of one
    orbax checkpoint step folder in it."""
    if (path / "checkpoints").is_dir():
        steps = run_checkpoint_steps(path / "checkpoints")
        if not steps:
            raise CheckpointError(f"{path}: a training workdir without a finished checkpoint")
        workdir, named = path, False
    elif path.name.isdigit() and (path / "state").is_dir():
        workdir, named = path.parent.parent, True
    else:
        raise CheckpointError(f"{path}: a folder, but neither a train.py workdir nor one of its checkpoint steps")
    config_file = workdir / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{workdir}: no config.json beside the checkpoints")
    config = _run_config(config_file)
    recorded = _recorded_meta(config_file)  # class names and preprocessing, as final.npz records them
    if named:  # one step named: no other to fall back to
        return read_run_step(path, int(path.name), config, recorded)
    _, result = newest_readable(steps, lambda step, p: read_run_step(p, step, config, recorded), where=path)
    return result


def read_run_step(step_path: Path, step: int, config: ModelConfig,
                  recorded: dict | None = None) -> tuple[Weights, ModelConfig, dict]:
    """One checkpoint step of a run; `recorded`: the run's class names and preprocessing."""
    recorded = recorded or {}
    if step_path.suffix in (".pt", ".dcp"):
        weights, config, meta = read_torch_run_step(step_path, step, config)
        return weights, config, {**recorded, **meta}
    import orbax.checkpoint as ocp  # lazily: only training runs need it (and it brings jax)

    _quiet_missing_metadata()
    try:
        state = _restore_on_one_device(ocp.StandardCheckpointer(), step_path.absolute() / "state")
    except Exception as e:  # orbax raises many types for a damaged folder
        raise CheckpointError(f"{step_path}: not a readable orbax checkpoint ({short_reason(e)})") from e
    params = state.get("ema", state["params"])
    return (FLAX.import_(flatten_params(params), config), config,
            {**recorded, "source": f"{step_path} (step {step})", "layout": FLAX_RUN.name})


def _quiet_missing_metadata() -> None:
    """orbax logs (through absl) "Metadata file does not exist" for every step folder written
    without its optional metadata, which ours are; the read is complete, so that line only
    misleads. Dropped from absl's logger; everything else it logs still shows."""
    import logging

    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _MissingMetadataFilter) for f in absl_logger.filters):
        absl_logger.addFilter(_MissingMetadataFilter())


class _MissingMetadataFilter:
    def filter(self, record) -> bool:
        return not str(record.msg).startswith("Metadata file does not exist")


def _recorded_meta(config_file: Path) -> dict:
    """The class_names and preprocess train.py and vit-convert record under config.json's "meta"."""
    meta = json.loads(config_file.read_text()).get("meta")
    return {k: meta[k] for k in ("class_names", "preprocess") if k in meta} if isinstance(meta, dict) else {}


def _run_config(config_file: Path) -> ModelConfig:
    """The model config a run's config.json records; damage names the file, in one line."""
    try:
        model = json.loads(config_file.read_text())["model"]
        return config_from_dict(model)
    except ValueError as e:  # json.JSONDecodeError, ConfigError
        raise CheckpointError(f"{config_file}: damaged ({e})") from e
    except (KeyError, TypeError, AttributeError) as e:  # valid JSON without a {"model": {...}} entry
        raise CheckpointError(f"{config_file}: damaged (no model config: {type(e).__name__}: {e})") from e


def _restore_on_one_device(checkpointer, path: Path):
    """The saved arrays, whole, on this process's first device: a checkpoint written by several
    processes (or over another device mesh) restores here too, given the target's shapes."""
    import jax

    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    metadata = checkpointer.metadata(path)
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                          getattr(metadata, "item_metadata", metadata))
    return checkpointer.restore(path, target)


def read_torch_run_step(step_path: Path, step: int, config: ModelConfig) -> tuple[Weights, ModelConfig, dict]:
    import torch  # lazily: only the PyTorch twin's runs need it

    try:
        if step_path.suffix == ".dcp":  # FSDP's shards, gathered into one state dict in this process
            from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

            with tempfile.TemporaryDirectory() as tmp:
                dcp_to_torch_save(step_path, Path(tmp) / "state.pt")
                state = torch.load(Path(tmp) / "state.pt", map_location="cpu", weights_only=True)
        else:
            state = torch.load(step_path, map_location="cpu", weights_only=True)
        model = state["ema"] if state.get("ema") else state["model"]
    except Exception as e:  # torch raises many types for a damaged file
        raise CheckpointError(f"{step_path}: not a readable train.py checkpoint ({short_reason(e)})") from e
    weights = TIMM.import_({k: v.float().numpy() for k, v in model.items()}, config)
    return weights, config, {"source": f"{step_path} (step {step})", "layout": TORCH_RUN.name}
