"""The JAX training loop: data, sharded steps, checkpoints, evaluation, what a run leaves behind."""
from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from vit_common import ConfigError, count_params, save_npz
from vit_common.flax_layout import FLAX, flatten_params
from vit_common.run_log import RunLog, write_json
from vit_common.train_config import TrainConfig
from vit_data import AugmentConfig, load_source, make_loader

from ..models import VisionTransformer
from .checkpointing import RunCheckpointer, abstract_like
from .optim import make_optimizer
from .step import Steps, keys_to_data, make_mesh, state_shardings


class TrainingStopped(RuntimeError):
    """The run cannot go on (too many non-finite steps in a row)."""


def _maybe_init_distributed() -> None:
    """Several hosts: jax.distributed reads the coordinator from the environment (or the TPU/SLURM runtime)."""
    import os

    if any(k in os.environ for k in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES")) \
            and os.environ.get("JAX_NUM_PROCESSES", "2") != "1":
        try:
            jax.distributed.initialize()
        except RuntimeError:  # already initialised
            pass


def _teacher(config: TrainConfig, cfg, dtype):
    from ..factory import create_model

    teacher = create_model(checkpoint=config.teacher, dtype=dtype)
    if (teacher.cfg.img_size, teacher.cfg.in_chans, teacher.cfg.num_classes) != (cfg.img_size, cfg.in_chans, cfg.num_classes):
        raise ConfigError(f"teacher {config.teacher} takes {teacher.cfg.img_size}px x {teacher.cfg.in_chans} channels "
                          f"with {teacher.cfg.num_classes} classes; the student {cfg.img_size}px x {cfg.in_chans} "
                          f"with {cfg.num_classes}")
    graphdef, state = nnx.split(teacher)
    return graphdef, nnx.to_pure_dict(state)


def train(config: TrainConfig, progress: bool = True) -> dict:
    """Train (or resume) the run in config.workdir; returns the summary."""
    config.validate()
    _maybe_init_distributed()
    devices = jax.device_count()
    if config.batch_size % (devices * config.grad_accum_steps):
        raise ConfigError(f"batch_size {config.batch_size} is not divisible by {devices} devices x "
                          f"{config.grad_accum_steps} accumulation steps; choose a multiple of "
                          f"{devices * config.grad_accum_steps}")
    train_source = load_source(config.dataset, config.train_split, config.data_dir)
    test_source = load_source(config.dataset, config.test_split, config.data_dir)
    num_classes = config.model_args.get("num_classes", train_source.num_classes)
    if num_classes != train_source.num_classes:
        raise ConfigError(f"model_args num_classes={num_classes} but {config.dataset} has {train_source.num_classes} classes")
    cfg = config.model_config().replace(num_classes=num_classes, in_chans=train_source.in_chans)
    dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32

    # Data: each host reads its own part of every global batch.
    hosts, host = jax.process_count(), jax.process_index()
    augment = AugmentConfig(
        random_resized_crop=config.random_resized_crop, pad_crop=config.pad_crop, hflip=config.hflip,
        randaugment=config.randaugment_ops(), mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha,
        label_smoothing=config.label_smoothing)
    local_batch = config.batch_size // hosts
    train_loader = make_loader(train_source, img_size=cfg.img_size, in_chans=cfg.in_chans, batch_size=local_batch,
                               seed=config.seed, train=True, augment=augment, shard_index=host, shard_count=hosts)
    steps_per_epoch = train_loader.steps_per_epoch
    total_steps = config.epochs * steps_per_epoch

    # Model, optimizer and the train state, sharded over the mesh.
    model = VisionTransformer(cfg, dtype=dtype, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rest_template = nnx.to_pure_dict(rest)
    params = nnx.to_pure_dict(params)
    tx = make_optimizer(config, steps_per_epoch)
    state = dict(step=jnp.int32(0), params=params, rest=keys_to_data(rest_template), opt_state=tx.init(params))
    if config.ema_decay is not None:
        state["ema"] = jax.tree.map(jnp.copy, params)
    mesh = make_mesh()
    shardings = state_shardings(mesh, state, fsdp=config.sharding == "fsdp")
    state = jax.device_put(state, shardings)
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    teacher_graphdef, teacher_state = _teacher(config, cfg, dtype) if config.teacher else (None, {})
    steps = Steps(graphdef, tx, config.grad_accum_steps, config.ema_decay, rest_template, teacher_graphdef)
    train_step, eval_step = steps.compile(shardings, batch_sharding, replicated)
    teacher_state = jax.device_put(teacher_state, replicated)

    # Resume from the latest checkpoint in the workdir, if any.
    workdir = Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    checkpointer = RunCheckpointer(workdir, config.keep_checkpoints)
    start = checkpointer.latest_step() or 0
    if start:
        state, data_state = checkpointer.restore(start, abstract_like(state, shardings))
        train_loader.set_state(data_state)
        print(f"resumed from step {start} ({workdir / 'checkpoints'})")
    if host == 0:
        write_json(workdir / "config.json", dict(train=dataclasses.asdict(config), model=cfg.to_dict()))
    log = RunLog(workdir, resume_step=start) if host == 0 else None

    stop_requested = []
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop_requested.append(True))

    def global_batch(batch):
        """This host's part of a batch -> arrays spanning the mesh (train steps ignore 'mask')."""
        return {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v)) for k, v in batch.items()}

    def evaluate():
        params_for_eval = state["ema"] if config.ema_decay is not None else state["params"]
        loader = make_loader(test_source, img_size=cfg.img_size, in_chans=cfg.in_chans, batch_size=local_batch,
                             seed=0, train=False, shard_index=host, shard_count=hosts)
        totals = dict(loss_sum=0.0, correct=0, count=0)
        for batch in loader:
            out = jax.device_get(eval_step(params_for_eval, state["rest"], global_batch(batch)))
            for k in totals:
                totals[k] += out[k]
        return dict(loss=totals["loss_sum"] / totals["count"], accuracy=totals["correct"] / totals["count"])

    t0 = time.perf_counter()
    best = 0.0
    bar = tqdm(total=total_steps, initial=start, disable=not progress or host != 0, unit="step", dynamic_ncols=True)
    step = last_saved = start
    window = dict(images=0, t=time.perf_counter())  # images/s over the last log interval
    try:
        while step < total_steps and not stop_requested:
            batch = next(train_loader)
            state, metrics = train_step(state, global_batch(batch), teacher_state)
            step += 1
            window["images"] += config.batch_size
            if step % config.log_every == 0 or step == total_steps:
                m = jax.device_get(metrics)
                if int(m["bad_steps"]) >= config.max_bad_steps:
                    raise TrainingStopped(
                        f"{int(m['bad_steps'])} steps in a row had non-finite loss or gradients (step {step}); "
                        "lower --lr, raise --warmup-epochs, set --clip-grad-norm, or try --dtype float32")
                rate = window["images"] / (time.perf_counter() - window["t"])
                values = dict(loss=m["loss"], accuracy=m["correct"] / config.batch_size, grad_norm=m["grad_norm"],
                              images_per_s=rate, bad_steps=m["bad_steps"])
                if log:
                    log.write(step, "train", values)
                bar.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{values['accuracy']:.3f}", img_s=f"{rate:,.0f}")
                window = dict(images=0, t=time.perf_counter())
            bar.update(1)
            epoch_end = step % steps_per_epoch == 0
            if epoch_end or step % config.checkpoint_every == 0:
                checkpointer.save(step, state, train_loader.get_state())
                last_saved = step
            if epoch_end:
                result = evaluate()
                best = max(best, result["accuracy"])
                if log:
                    log.write(step, "test", result)
                if progress and host == 0:
                    tqdm.write(f"epoch {step // steps_per_epoch}/{config.epochs}: test loss {result['loss']:.4f} "
                               f"accuracy {result['accuracy']:.4f}")
        if stop_requested:  # SIGTERM: save where we are (unless just saved) and leave cleanly
            if last_saved != step:
                checkpointer.save(step, state, train_loader.get_state(), force=True)
            checkpointer.close()
            print(f"SIGTERM: saved step {step} to {workdir / 'checkpoints'}; rerun the same command to resume")
            return dict(stopped_at=step)
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, previous_handler)
        if log:
            log.close()
    checkpointer.close()

    final = evaluate()
    wall = time.perf_counter() - t0
    params_out = state["ema"] if config.ema_decay is not None else state["params"]
    summary = dict(
        test_accuracy=final["accuracy"], test_loss=final["loss"], best_test_accuracy=max([best, final["accuracy"]]),
        steps=step, epochs=config.epochs, wall_time_s=wall, parameters=count_params(cfg), framework="jax",
        images_per_s=(step - start) * config.batch_size / wall if step > start else None,
        devices=devices, dtype=config.dtype, model=config.model)
    if host == 0:
        save_npz(workdir / "final.npz", FLAX.import_(flatten_params(jax.device_get(params_out)), cfg), cfg,
                 meta=dict(class_names=train_source.class_names, source=f"train.py {config.dataset}"))
        write_json(workdir / "summary.json", summary)
        log.plot(f"{config.model} on {config.dataset}")
    return summary

