"""The JAX training loop: data, sharded steps, checkpoints, evaluation, what a run leaves behind."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from vit_common import ConfigError
from vit_common.weights import FLAX
from vit_common.train.lock import hold_workdir
from vit_common.train.stop import StopRequests
from vit_common.train.recipe import TrainConfig
from vit_common.train.run import (Progress, check_workdir, eval_result, finish_run, initial_weights, resolve_run,
                                  save_run_config, startup_lines)

from ..models import build_model
from ..weights import flat_params, load_canonical_
from . import distributed
from .checkpointing import RunCheckpointer
from .optim import make_optimizer
from .step import Steps, initial_state, make_mesh, state_shardings


def _enable_compilation_cache() -> None:
    """Keep compiled steps on disk (unless JAX_COMPILATION_CACHE_DIR says where already), so a
    resumed or repeated run does not compile again: on a CPU the train step takes seconds to compile."""
    import os

    if not jax.config.jax_compilation_cache_dir:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "twin-vit" / "jax"
        jax.config.update("jax_compilation_cache_dir", str(cache))


def _teacher(config: TrainConfig, cfg, dtype):
    from ..factory import create_model

    teacher = create_model(checkpoint=config.teacher, dtype=dtype)
    if (teacher.cfg.img_size, teacher.cfg.in_chans, teacher.cfg.num_classes) != (cfg.img_size, cfg.in_chans, cfg.num_classes):
        raise ConfigError(f"teacher {config.teacher} takes {teacher.cfg.img_size}px x {teacher.cfg.in_chans} channels "
                          f"with {teacher.cfg.num_classes} classes; the student {cfg.img_size}px x {cfg.in_chans} "
                          f"with {cfg.num_classes}")
    graphdef, state = nnx.split(teacher)
    return graphdef, nnx.to_pure_dict(state)


def train(config: TrainConfig, show_progress: bool = True) -> dict:
    """Train (or resume) the run in config.workdir; returns the summary."""
    config.validate()
    distributed.start(config)  # several hosts: join them before touching a device
    with hold_workdir(config.workdir, first=jax.process_index() == 0):  # one run per workdir
        return _train(config, show_progress)


def _train(config: TrainConfig, show_progress: bool) -> dict:
    _enable_compilation_cache()
    devices = jax.device_count()
    # Data: each host reads its own part of every global batch.
    host = jax.process_index()
    run = resolve_run(config, shard_index=host, shard_count=jax.process_count(), replicas=devices)
    cfg = run.cfg
    changed = check_workdir(config)
    dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
    train_loader = run.train_loader()
    steps_per_epoch = train_loader.steps_per_epoch
    total_steps = config.epochs * steps_per_epoch
    if host == 0 and show_progress:
        where = (f"{devices} {jax.default_backend()} device{'s' if devices > 1 else ''}"
                 + (f", {jax.process_count()} processes" if jax.process_count() > 1 else ""))
        print("\n".join(startup_lines(run, devices=where, steps_per_epoch=steps_per_epoch)), flush=True)

    # Model, optimizer and the train state, sharded over the mesh.
    model = build_model(cfg, dtype=dtype, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1),
                        **(dict(scan_layers=True) if config.scan_layers else {}))
    if config.grad_checkpointing:
        model.set_grad_checkpointing(True, config.remat_policy)
    if config.init:
        load_canonical_(model, initial_weights(config.init, cfg))
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rest_template = nnx.to_pure_dict(rest)
    params = nnx.to_pure_dict(params)
    tx = make_optimizer(config, steps_per_epoch)
    state = initial_state(params, rest_template, tx, ema=config.ema_decay is not None)
    mesh = make_mesh()
    shardings = state_shardings(mesh, state, fsdp=config.sharding == "fsdp")
    state = jax.device_put(state, shardings)
    replicated = NamedSharding(mesh, P())
    # Arrays span all hosts' devices; read on a host, they are first gathered (FSDP) onto every device.
    gather = jax.jit(lambda tree: tree, out_shardings=replicated)
    batch_sharding = NamedSharding(mesh, P("data"))
    teacher_graphdef, teacher_state = _teacher(config, cfg, dtype) if config.teacher else (None, {})
    steps = Steps(graphdef, tx, config.grad_accum_steps, config.ema_decay, rest_template, teacher_graphdef)
    train_step, eval_step = steps.compile(shardings, batch_sharding, replicated)
    teacher_state = jax.device_put(teacher_state, replicated)

    # Resume from the newest readable checkpoint in the workdir, if any.
    workdir = Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    checkpointer = RunCheckpointer(workdir, config.keep_checkpoints)
    start, state, data_state = checkpointer.restore_latest(state, changed=changed)
    if start:
        train_loader.set_state(data_state)
        print(f"resumed from step {start} ({workdir / 'checkpoints'})")
    if host == 0:
        save_run_config(run)

    stop_requested = StopRequests().install()  # SIGTERM or Ctrl-C: save this step, leave cleanly

    def global_batch(batch):
        """This host's part of a batch -> arrays spanning the mesh (train steps ignore 'mask')."""
        return {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v)) for k, v in batch.items()}

    def evaluate():
        params_for_eval = state["ema"] if config.ema_decay is not None else state["params"]
        # One fetch at the end: no wait per batch, so the next batch is read while one computes.
        outs = jax.device_get([eval_step(params_for_eval, state["rest"], global_batch(batch))
                               for batch in run.test_loader()])
        return eval_result({k: sum(out[k] for out in outs) for k in ("loss_sum", "correct", "count")})

    progress = Progress(config, total_steps, start, writer=host == 0, show=show_progress)
    clock = progress.clock
    on_cpu = jax.default_backend() == "cpu"
    step = last_saved = start
    last_eval = None  # (step, result) of the latest evaluation
    try:
        while step < total_steps and not stop_requested:
            with clock.phase("data"):
                batch = global_batch(next(train_loader))
            step += 1
            log_now = step % config.log_every == 0 or step == total_steps
            with clock.phase("step" if step > start + 1 else "compile"):
                state, metrics = train_step(state, batch, teacher_state)
                # Bill the step's compute to the step. On the CPU, waiting costs nothing; on an
                # accelerator only log steps wait (so the next batch's transfer still overlaps
                # the step), and the step rate there is an upper bound.
                if log_now or on_cpu:
                    metrics = jax.block_until_ready(metrics)
            progress.step(step, jax.device_get(metrics) if log_now else None)
            epoch_end = step % steps_per_epoch == 0
            if epoch_end or step % config.checkpoint_every == 0:
                with clock.phase("checkpoint"):
                    checkpointer.save(step, state, train_loader.get_state())
                last_saved = step
            if epoch_end:
                with clock.phase("eval"):
                    result = evaluate()
                last_eval = step, result
                progress.evaluated(step, step // steps_per_epoch, result)
        if stop_requested:  # SIGTERM or Ctrl-C: save where we are (unless just saved) and leave cleanly
            if last_saved != step:
                checkpointer.save(step, state, train_loader.get_state(), force=True)
            checkpointer.close()
            print(f"{stop_requested.name}: saved step {step} to {workdir / 'checkpoints'}; rerun the same command to resume")
            return dict(stopped_at=step)
    finally:
        progress.close()
        stop_requested.restore()
    with clock.phase("checkpoint"):
        checkpointer.close()  # waits for the last asynchronous save
    with clock.phase("eval"):
        # A run ends at an epoch end, whose evaluation saw these very weights: not a second pass.
        final = last_eval[1] if last_eval and last_eval[0] == step else evaluate()
    params_out = state["ema"] if config.ema_decay is not None else state["params"]
    weights = FLAX.import_(flat_params(jax.device_get(gather(params_out))), cfg)
    return finish_run(run, progress, final=final, weights=weights, steps=step, start=start, devices=devices)
