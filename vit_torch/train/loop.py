"""The PyTorch training loop, mirroring vit_jax/train/loop.py: the same recipe, batches,
checkpoints and outputs. Several processes (torchrun) train with DistributedDataParallel."""
from __future__ import annotations

import copy
import os

import torch
import torch.distributed as dist

from vit_common import TIMM, ConfigError
from vit_common.train.lock import hold_workdir
from vit_common.train.stop import StopRequests
from vit_common.train.recipe import TrainConfig
from vit_common.train.run import (Progress, check_workdir, eval_result, finish_run, initial_weights, resolve_run,
                                  save_run_config, startup_lines)

from ..factory import create_model
from ..models import build_model
from ..weights import load_canonical_, state_dict_numpy
from .checkpointing import RunCheckpointer, ShardedCheckpointer, check_shared_workdir, load_state
from .fsdp import local_bytes, optimizer_state_bytes, shard_model_
from .optim import learning_rate_schedule, make_optimizer
from .step import Steps, step_seed, to_torch


def _init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun: a process group (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, device


def _all_reduce(values: dict, world: int, device: torch.device, average: tuple[str, ...] = ()) -> dict:
    """Sum (or average) scalar metrics over the processes."""
    if world == 1:
        return {k: float(v) for k, v in values.items()}
    names = sorted(values)
    packed = torch.tensor([float(values[k]) for k in names], dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    return {k: float(v) / (world if k in average else 1) for k, v in zip(names, packed.tolist())}


def _teacher(config: TrainConfig, cfg, device: torch.device):
    teacher = create_model(checkpoint=config.teacher)
    if (teacher.cfg.img_size, teacher.cfg.in_chans, teacher.cfg.num_classes) != (cfg.img_size, cfg.in_chans, cfg.num_classes):
        raise ConfigError(f"teacher {config.teacher} takes {teacher.cfg.img_size}px x {teacher.cfg.in_chans} channels "
                          f"with {teacher.cfg.num_classes} classes; the student {cfg.img_size}px x {cfg.in_chans} "
                          f"with {cfg.num_classes}")
    return teacher.requires_grad_(False).eval().to(device)


def train(config: TrainConfig, show_progress: bool = True) -> dict:
    """Train (or resume) the run in config.workdir; returns the summary."""
    config.validate()
    rank, world, device = _init_distributed()
    try:
        with hold_workdir(config.workdir, first=rank == 0):  # one run per workdir
            return _train(config, show_progress, rank, world, device)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, show_progress: bool, rank: int, world: int, device: torch.device) -> dict:
    # Data: each process reads its own part of every global batch.
    run = resolve_run(config, shard_index=rank, shard_count=world, replicas=world)
    cfg = run.cfg
    changed = check_workdir(config)
    train_loader = run.train_loader()
    steps_per_epoch = train_loader.steps_per_epoch
    total_steps = config.epochs * steps_per_epoch
    if rank == 0 and show_progress:
        where = f"{world} process{'es' if world > 1 else ''} ({device.type})"
        print("\n".join(startup_lines(run, devices=where, steps_per_epoch=steps_per_epoch)), flush=True)

    # Model (the same initial weights in every process), optimizer, EMA.
    torch.manual_seed(config.seed)
    model = build_model(cfg)
    if config.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if config.init:
        load_canonical_(model, initial_weights(config.init, cfg))
    model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False) if config.ema_decay is not None else None
    # FSDP: every process keeps its shard of the parameters, gradients and AdamW state (one
    # process holds everything anyway, as the JAX twin's FSDP mesh of one device does).
    fsdp = config.sharding == "fsdp" and world > 1
    if fsdp:
        shard_model_(model, device, world)
        if ema is not None:
            shard_model_(ema, device, world)  # sharded like the model, so the update is shard by shard
    optimizer = make_optimizer(model, config)
    trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if world > 1 and not fsdp else model
    steps = Steps(trained, optimizer, learning_rate_schedule(config, steps_per_epoch), config.grad_accum_steps,
                  config.clip_grad_norm, torch.bfloat16 if config.dtype == "bfloat16" else None, ema=ema,
                  ema_decay=config.ema_decay, teacher=_teacher(config, cfg, device) if config.teacher else None)

    # Resume from the newest readable checkpoint in the workdir, if any: rank 0 picks it, every
    # rank reads it (so the workdir must be shared; checked first, a barrier too).
    checkpointer = (ShardedCheckpointer(config.workdir, config.keep_checkpoints, rank, world) if fsdp
                    else RunCheckpointer(config.workdir, config.keep_checkpoints))
    check_shared_workdir(checkpointer.folder.parent, rank, world)
    if fsdp:
        start, state = checkpointer.restore_latest(model, optimizer, ema)
    else:
        start, state = checkpointer.restore_latest(rank, world)
    if start and fsdp:
        steps.updates, steps.bad_steps, steps.bad_run = state["updates"], state["bad_steps"], state["bad_run"]
        train_loader.set_state(state["data"])
        if rank == 0:
            print(f"resumed from step {start} ({checkpointer.folder})")
    elif start:
        notes = load_state(state, start, model=model, optimizer=optimizer, ema=ema, changed=changed,
                           where=config.workdir)
        steps.updates, steps.bad_steps = state["updates"], state["bad_steps"]
        steps.bad_run = state.get("bad_run", steps.bad_steps)  # older checkpoints lack it
        train_loader.set_state(state["data"])
        if rank == 0:
            for note in notes:
                print(f"resuming from step {start}: {note}")
            print(f"resumed from step {start} ({checkpointer.folder})")
    if rank == 0:
        save_run_config(run)

    def save(step: int) -> None:
        if fsdp:  # every rank writes its shards
            counters = dict(updates=steps.updates, bad_steps=steps.bad_steps, bad_run=steps.bad_run)
            checkpointer.save(step, model, optimizer, ema, counters, train_loader.get_state())
        elif rank == 0:
            state = dict(model=model.state_dict(), optimizer=optimizer.state_dict(), updates=steps.updates,
                         bad_steps=steps.bad_steps, bad_run=steps.bad_run,
                         ema=ema.state_dict() if ema is not None else None)
            checkpointer.save(step, state, train_loader.get_state())

    def evaluate() -> dict:
        outs = [steps.evaluate(ema if ema is not None else model, to_torch(batch, device))
                for batch in run.test_loader()]
        # Summed on the device and read once: no wait per batch on a GPU.
        totals = {k: float(sum(out[k].double() for out in outs)) for k in ("loss_sum", "correct", "count")}
        return eval_result(_all_reduce(totals, world, device))

    stop_requested = StopRequests().install()  # SIGTERM or Ctrl-C: save this step, leave cleanly

    def stopping() -> bool:  # every process stops at the same step
        return bool(_all_reduce(dict(stop=float(bool(stop_requested))), world, device)["stop"])

    progress = Progress(config, total_steps, start, writer=rank == 0, show=show_progress)
    clock = progress.clock
    step = last_saved = start
    last_eval = None  # (step, result) of the latest evaluation
    try:
        while step < total_steps and not stopping():
            with clock.phase("data"):
                batch = to_torch(next(train_loader), device)
            log_now = (step + 1) % config.log_every == 0 or step + 1 == total_steps
            with clock.phase("step" if step > start else "compile"):
                torch.manual_seed(step_seed(config.seed, step, rank))
                metrics = steps.train(batch)
                # Bill the step's compute to the step. On the CPU torch runs synchronously; on a GPU
                # only log steps wait (so the next batch's transfer still overlaps the step), and
                # the step rate there is an upper bound: as in the JAX loop.
                if device.type == "cuda" and log_now:
                    torch.cuda.synchronize(device)
            step += 1
            progress.step(step, _all_reduce(metrics, world, device, average=("loss", "grad_norm", "bad_steps", "bad_run"))
                          if log_now else None)
            epoch_end = step % steps_per_epoch == 0
            if epoch_end or step % config.checkpoint_every == 0:
                with clock.phase("checkpoint"):
                    save(step)
                last_saved = step
            if epoch_end:
                with clock.phase("eval"):
                    result = evaluate()
                last_eval = step, result
                progress.evaluated(step, step // steps_per_epoch, result)
        if step < total_steps:  # SIGTERM or Ctrl-C: save where we are (unless just saved) and leave cleanly
            if last_saved != step:
                save(step)
            if rank == 0:
                print(f"{stop_requested.name or 'another process stopped'}: saved step {step} to {checkpointer.folder}; rerun the same command to resume")
            return dict(stopped_at=step)
    finally:
        progress.close()
        stop_requested.restore()

    with clock.phase("eval"):
        # A run ends at an epoch end, whose evaluation saw these very weights: not a second pass.
        final = last_eval[1] if last_eval and last_eval[0] == step else evaluate()
    exported = ema if ema is not None else model
    if fsdp:  # gathered once, onto rank 0 (every rank takes part in the gather)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(exported, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        weights = TIMM.import_({k: v.float().numpy() for k, v in full.items()}, cfg) if rank == 0 else {}
    else:
        weights = TIMM.import_(state_dict_numpy(exported), cfg)
    # What this process holds (its shards under FSDP): the memory the sharding saves.
    held = dict(parameter_bytes_per_process=local_bytes(model.parameters()),
                optimizer_state_bytes_per_process=optimizer_state_bytes(optimizer), sharding=config.sharding)
    return finish_run(run, progress, final=final, weights=weights, steps=step, start=start, devices=world,
                      extra=held)
