"""What both twins' training loops share and is framework-free: the data and model config a
recipe resolves to, initial weights from --init, the progress bar and logs, and what a finished
run leaves behind (final.npz, summary.json, the curve PNG)."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, get_config
from ..formats.containers import save_npz
from ..formats.run_folder import run_checkpoint_steps
from ..weights import Weights, count_params
from .clock import RunClock
from .logs import RunLog, write_json
from .recipe import TrainConfig


class TrainingStopped(RuntimeError):
    """The run cannot go on (too many non-finite steps in a row)."""


@dataclasses.dataclass
class RunData:
    """A recipe's data and the model config it trains, for one host (or process) of several."""

    config: TrainConfig
    cfg: Any  # the model config, with the dataset's classes and channels
    train_source: Any
    test_source: Any
    local_batch: int
    shard_index: int
    shard_count: int

    def augment(self):
        from vit_data import AugmentConfig

        c = self.config
        return AugmentConfig(random_resized_crop=c.random_resized_crop, pad_crop=c.pad_crop, hflip=c.hflip,
                             randaugment=c.randaugment_ops(), mixup_alpha=c.mixup_alpha, cutmix_alpha=c.cutmix_alpha,
                             label_smoothing=c.label_smoothing)

    def train_loader(self):
        from vit_data import make_loader

        return make_loader(self.train_source, img_size=self.cfg.img_size, in_chans=self.cfg.in_chans,
                           batch_size=self.local_batch, seed=self.config.seed, train=True, augment=self.augment(),
                           shard_index=self.shard_index, shard_count=self.shard_count)

    def test_loader(self):
        from vit_data import make_loader

        return make_loader(self.test_source, img_size=self.cfg.img_size, in_chans=self.cfg.in_chans,
                           batch_size=self.local_batch, seed=0, train=False, shard_index=self.shard_index,
                           shard_count=self.shard_count)

    def checkpoint_meta(self) -> dict:
        """What final.npz and config.json record beside the weights: the class names and the
        preprocessing test_loader() evaluates with (pixels [-1, 1], as it passes no mean / std), so
        vit-predict prepares images exactly as the run's evaluation did."""
        from vit_data.loader import eval_preprocess

        return dict(class_names=self.train_source.class_names, preprocess=eval_preprocess(self.cfg.in_chans))


def resolve_run(config: TrainConfig, *, shard_index: int, shard_count: int, replicas: int) -> RunData:
    """Check the recipe against the data and the hardware (before any compute) and resolve it.
    shard_count: hosts or processes reading data; replicas: devices the global batch splits over."""
    from vit_data import load_source

    if config.batch_size % (replicas * config.grad_accum_steps):
        raise ConfigError(f"batch_size {config.batch_size} is not divisible by {replicas} devices x "
                          f"{config.grad_accum_steps} accumulation steps; choose a multiple of "
                          f"{replicas * config.grad_accum_steps}")
    train_source = load_source(config.dataset, config.train_split, config.data_dir, config.skip_bad_images)
    test_source = load_source(config.dataset, config.test_split, config.data_dir, config.skip_bad_images)
    num_classes = config.model_args.get("num_classes", train_source.num_classes)  # unpinned: the dataset's
    if num_classes != train_source.num_classes:
        raise ConfigError(f"--model-args num_classes={num_classes} but {config.dataset} has {train_source.num_classes} "
                          f"classes {_names(train_source.class_names)}; leave num_classes out of --model-args (it "
                          "defaults to the dataset's class count) or pin it to that count")
    check_data_fits(config, train_source)
    cfg = config.model_config().replace(num_classes=num_classes, in_chans=train_source.in_chans)
    return RunData(config, cfg, train_source, test_source, config.batch_size // shard_count, shard_index, shard_count)


def check_data_fits(config: TrainConfig, train_source) -> None:
    """One line naming the fix, before any compile, for training data that cannot make a run:
    fewer images than one batch, too few steps for warmup + cosine decay, one class only."""
    n, batch = len(train_source), config.batch_size
    where = f"{config.dataset} ({config.train_split})"
    if n < batch:
        raise ConfigError(f"{where} has {n} images, fewer than one batch of {batch}; lower --batch-size "
                          f"(at most {n}) or add images")
    if config.epochs * (n // batch) < 2:  # warmup and cosine decay need an update each at least
        raise ConfigError(f"{where} gives {n // batch} step(s) per epoch of --batch-size {batch}, {config.epochs} "
                          f"epoch(s): fewer than the 2 steps warmup + cosine decay need; raise --epochs"
                          + (f" or lower --batch-size (at most {n // 2})" if n >= 2 else ""))
    labels = getattr(train_source.records, "labels", None)
    if labels is not None:
        present = np.unique(np.asarray(labels))
        if present.size < 2:
            names = train_source.class_names
            only = names[int(present[0])] if names and present.size else (present.tolist() or "none")
            raise ConfigError(f"{where} holds one class only ({only}); a classifier needs two or more: add images of "
                              "the other classes (for folder: datasets, one folder per class under the split)")


def _names(names: list[str] | None, shown: int = 6) -> str:
    if not names:
        return ""
    return "(" + ", ".join(names[:shown]) + (", ..." if len(names) > shown else "") + ")"


def describe_model(config: TrainConfig, cfg) -> str:
    """The model a run trains: the preset's name and what the recipe changed in it."""
    base = get_config(config.model).to_dict()
    changed = [f"{k}={v}" for k, v in cfg.to_dict().items() if k in base and base[k] != v and not k.endswith("drop_rate")]
    return f"{config.model}" + (f" ({', '.join(changed)})" if changed else "")


def startup_lines(run: RunData, *, devices: str, steps_per_epoch: int) -> list[str]:
    """What a run prints before it compiles: what it found and what it will do, in one block."""
    config, cfg, train, test = run.config, run.cfg, run.train_source, run.test_source
    first = np.asarray(train[0]["image"])
    height, width = first.shape[:2]
    size = f"images {height}x{width}x{first.shape[2] if first.ndim == 3 else 1}"
    if height != width:  # the loader (and vit-predict) keep the central square: say the sides go
        side = min(height, width)
        size += (f", central {side}x{side} square resized to {cfg.img_size}x{cfg.img_size} "
                 f"(--img-size; the sides are cut off)")
    elif height != cfg.img_size:
        size += f", resized to {cfg.img_size}x{cfg.img_size} (--img-size)"
    return [
        f"framework: {config.framework} on {devices}",
        f"data: {config.dataset}: {train.num_classes} classes {_names(train.class_names)}; {config.train_split} "
        f"{len(train):,} images, {config.test_split} {len(test):,}; {size}",
        f"model: {describe_model(config, cfg)}: {count_params(cfg):,} parameters",
        f"schedule: {config.epochs} epoch{'s' if config.epochs > 1 else ''} x {steps_per_epoch:,} steps of {config.batch_size} images = "
        f"{config.epochs * steps_per_epoch:,} steps; lr {config.lr:g} after {min(config.warmup_epochs, config.epochs):g} warmup epochs, "
        f"cosine to {config.min_lr:g}",
        f"workdir: {config.workdir}",
    ]


def initial_weights(path: str, cfg) -> Weights:
    """--init: canonical weights for `cfg` from any checkpoint vit-convert reads. Image size,
    patch size, class count (and Swin's window size) are adapted (a new zero head for a new class count); any other
    difference is an error that lists the mismatched entries."""
    from ..formats import read_checkpoint
    from ..weights import check_weights

    adapt = dict(img_size=cfg.img_size, patch_size=cfg.patch_size, num_classes=cfg.num_classes)
    if cfg.arch == "swin":
        adapt["window_size"] = cfg.window_size
    ckpt = read_checkpoint(path, **adapt)
    check_weights(ckpt.weights, cfg, what=f"--init {path}")
    adapted = "; ".join(ckpt.meta.get("adapted", []))
    print(f"initialised from {path} ({ckpt.meta.get('source', ckpt.meta['source_layout'])})"
          + (f": {adapted}" if adapted else ""))
    return ckpt.weights


def bad_steps_message(bad_steps: int, step: int) -> str:
    return (f"{bad_steps} steps in a row had non-finite loss or gradients (seen at step {step}); lower --lr, raise "
            "--warmup-epochs, set --clip-grad-norm, or try --dtype float32")


class Progress:
    """The progress bar, metrics.jsonl / TensorBoard rows and per-epoch lines of one run (only the
    first host or process writes; the others keep quiet). Its clock splits the run's wall time into
    the step, data, evaluation and checkpoints; the loops time those phases with progress.clock."""

    def __init__(self, config: TrainConfig, total_steps: int, start: int, *, writer: bool, show: bool):
        from tqdm import tqdm

        self.config = config
        self.log = RunLog(config.workdir, resume_step=start) if writer else None
        self.bar = tqdm(total=total_steps, initial=start, disable=not (show and writer), unit="step", dynamic_ncols=True)
        self.show = show and writer
        self.best = 0.0
        self._window_images = 0
        self.clock = RunClock()

    def step(self, step: int, metrics: dict | None) -> None:
        """One step done; `metrics` (loss, correct, grad_norm, bad_steps, bad_run, global) at log steps."""
        self._window_images += self.config.batch_size
        if metrics is not None:
            # bad_run: the longest run of non-finite steps so far, counted at every step.
            if int(metrics["bad_run"]) >= self.config.max_bad_steps:
                raise TrainingStopped(bad_steps_message(int(metrics["bad_run"]), step))
            # images_per_s: the whole run's rate over the window (evaluation and checkpoints
            # included); step_images_per_s: the train step's own rate over the same window.
            wall, phases = self.clock.take_window()
            rate = self._window_images / wall
            step_rate = self._window_images / phases["step"] if phases.get("step") else rate
            values = dict(loss=float(metrics["loss"]), accuracy=float(metrics["correct"]) / self.config.batch_size,
                          grad_norm=float(metrics["grad_norm"]), images_per_s=rate, step_images_per_s=step_rate,
                          bad_steps=float(metrics["bad_steps"]))
            if self.log:
                self.log.write(step, "train", values)
            self.bar.set_postfix(loss=f"{values['loss']:.3f}", acc=f"{values['accuracy']:.3f}", img_s=f"{rate:,.0f}",
                                 step_img_s=f"{step_rate:,.0f}")
            self._window_images = 0
        self.bar.update(1)

    def evaluated(self, step: int, epoch: int, result: dict) -> None:
        self.best = max(self.best, result["accuracy"])
        if self.log:
            self.log.write(step, "test", result)
        if self.show:
            self.bar.write(f"epoch {epoch}/{self.config.epochs}: test loss {result['loss']:.4f} "
                           f"accuracy {result['accuracy']:.4f}")

    def close(self) -> None:
        self.bar.close()
        if self.log:
            self.log.close()


def eval_result(totals: dict) -> dict:
    """Summed loss / correct / count over the test set -> mean loss and accuracy."""
    return dict(loss=float(totals["loss_sum"]) / float(totals["count"]),
                accuracy=float(totals["correct"]) / float(totals["count"]))


def finish_run(run: RunData, progress: Progress, *, final: dict, weights: dict[str, np.ndarray], steps: int,
               start: int, devices: int, extra: dict | None = None) -> dict:
    """Write final.npz (canonical), summary.json and training_curves.png; return the summary.
    images_per_s is the whole run's (this session's images over its wall time, evaluation, checkpoints
    and the first step's compilation included); step_images_per_s the train step's own; time_s says
    where the rest went."""
    config, cfg = run.config, run.cfg
    wall, times, images = progress.clock.elapsed(), progress.clock.breakdown(), (steps - start) * config.batch_size
    summary = dict(
        test_accuracy=final["accuracy"], test_loss=final["loss"], best_test_accuracy=max(progress.best, final["accuracy"]),
        steps=steps, epochs=config.epochs, wall_time_s=wall, parameters=count_params(cfg), framework=config.framework,
        images_per_s=images / wall if images else None,
        # the first step of a session compiles (jit) or warms up, and is billed to "compile"
        step_images_per_s=(images - config.batch_size) / times["step"] if times["step"] else None,
        time_s={k: round(v, 3) for k, v in times.items()},
        devices=devices, dtype=config.dtype, model=config.model, architecture=describe_model(config, cfg),
        **(extra or {}))
    if progress.log:
        workdir = Path(config.workdir)
        save_npz(workdir / "final.npz", weights, cfg,
                 meta=dict(run.checkpoint_meta(), source=f"train.py {config.dataset} ({config.framework})"))
        write_json(workdir / "summary.json", summary)
        progress.log.plot(f"{describe_model(config, cfg)} on {config.dataset} ({config.framework})")
    return summary


# Fields that do not change what a run computes: a resumed run may change them silently.
# How the processes are launched is not part of the recipe either.
BOOKKEEPING_FIELDS = frozenset({"workdir", "log_every", "checkpoint_every", "keep_checkpoints", "max_bad_steps",
                                "coordinator_address", "num_processes", "process_id", "heartbeat_timeout"})


def check_workdir(config: TrainConfig) -> list[str]:
    """A workdir resumes only the framework that started it (their checkpoints differ); to move
    a run across, start a new workdir with --init OLD_WORKDIR. Resuming with a changed recipe is
    allowed (e.g. more --epochs) but said out loud, since it changes the run's trajectory.
    Returns the changes ("field: old -> new"), which name the cause if the saved state no longer fits."""
    path = Path(config.workdir) / "config.json"
    if not path.is_file():
        return []
    saved = json.loads(path.read_text()).get("train", {})
    started = saved.get("framework", "jax")
    if started != config.framework:
        raise ConfigError(f"{config.workdir} holds a --framework {started} run; to continue it in {config.framework}, "
                          f"train in a new --workdir with --init {config.workdir}")
    if not run_checkpoint_steps(Path(config.workdir) / "checkpoints"):
        return []  # nothing to resume: this run starts afresh
    now = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples as lists, as in the saved file
    changed = []
    for k in sorted(set(now) - BOOKKEEPING_FIELDS):
        old, new = saved.get(k), now[k]
        if isinstance(old, dict) and isinstance(new, dict):  # model_args: name the entries
            changed += [f"{k}.{e}: {old.get(e)!r} -> {new.get(e)!r}" for e in sorted({*old, *new}) if old.get(e) != new.get(e)]
        elif k in saved and old != new:
            changed.append(f"{k}: {old!r} -> {new!r}")
    if changed:
        print(f"warning: resuming {config.workdir} with a changed recipe ({'; '.join(changed)}); the schedule and "
              "the rest follow the new values from here on. Use a new --workdir to start afresh.", file=sys.stderr)
    return changed


def save_run_config(run: RunData) -> None:
    """config.json: the recipe, the model, and (under "meta", as read_training_run returns it) the
    class names and evaluation preprocessing final.npz records too."""
    write_json(Path(run.config.workdir) / "config.json",
               dict(train=dataclasses.asdict(run.config), model=run.cfg.to_dict(), meta=run.checkpoint_meta()))
