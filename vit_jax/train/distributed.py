"""Joining the processes of a multi-host run (jax.distributed), and leaving one that failed.

A run is multi-process when it is told so (flags, or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES
and JAX_PROCESS_ID, the way torchrun's MASTER_ADDR / WORLD_SIZE / RANK work) or when it runs where
JAX finds the processes itself: a TPU pod that lists its workers, an srun step of several SLURM
tasks, an indexed Kubernetes Job. Anything else is one process: a shell inside `salloc` has
SLURM_JOB_ID but no step, and a notebook pod has KUBERNETES_SERVICE_HOST but no job index.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import jax

from vit_common import ConfigError
from vit_common.train.recipe import TrainConfig

ENV = dict(coordinator_address="JAX_COORDINATOR_ADDRESS", num_processes="JAX_NUM_PROCESSES",
           process_id="JAX_PROCESS_ID")


def explicit_settings(config: TrainConfig, environ: Mapping[str, str]) -> dict:
    """The launch settings given by flag or environment variable (flags win), None where neither."""
    settings = {}
    for field, var in ENV.items():
        value = getattr(config, field)
        if value is None and environ.get(var, "") != "":
            raw = environ[var]
            if field == "coordinator_address":
                value = raw
            else:
                try:
                    value = int(raw)
                except ValueError:
                    raise ConfigError(f"{var}={raw!r} is not an integer") from None
        settings[field] = value
    return settings


def detected_cluster(environ: Mapping[str, str]) -> str | None:
    """The multi-process environment JAX can bootstrap from by itself, if this is one."""
    if "SLURM_STEP_ID" in environ and "SLURM_PROCID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1:
        return "SLURM (srun step)"
    workers = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES") or ""
    if len([w for w in workers.split(",") if w.strip()]) > 1:
        return "TPU pod"
    if "KUBERNETES_SERVICE_HOST" in environ and "JOB_COMPLETION_INDEX" in environ:
        return "Kubernetes indexed Job"
    return None


def initialize_args(config: TrainConfig, environ: Mapping[str, str] = os.environ) -> dict | None:
    """Keyword arguments for jax.distributed.initialize, or None for a single-process run."""
    settings = explicit_settings(config, environ)
    given = {k: v for k, v in settings.items() if v is not None}
    if given.get("num_processes") == 1:
        return None
    timeouts = dict(heartbeat_timeout_seconds=config.heartbeat_timeout)
    if detected_cluster(environ):
        return {**given, **timeouts}  # JAX fills in what is not given
    if not given:
        return None
    missing = [f"--{k.replace('_', '-')} ({ENV[k]})" for k, v in settings.items() if v is None]
    if missing:
        raise ConfigError(f"a multi-process run needs the coordinator address, the number of processes and this "
                          f"process's id; missing: {', '.join(missing)}")
    if not 0 <= given["process_id"] < given["num_processes"]:
        raise ConfigError(f"process id {given['process_id']} is not in [0, {given['num_processes']})")
    return {**given, **timeouts}


def start(config: TrainConfig) -> None:
    """Join the other processes of the run, if it has any (before anything touches a device)."""
    args = initialize_args(config)
    if args is None or jax.distributed.is_initialized():
        return
    # CPU processes need gloo for cross-process collectives (GPU and TPU have their own; the
    # setting only concerns the CPU client), so the whole multi-host path also runs on a laptop.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**args)


def is_multiprocess() -> bool:
    return jax.distributed.is_initialized() and jax.process_count() > 1


def leave_after_failure(code: int) -> None:
    """A failed process of a multi-process run exits at once, saying which one it is. A normal exit
    would wait in JAX's shutdown barrier for peers that may be dead or stuck in a collective with it,
    then abort with a fatal log. The others stop too: their collectives with this process fail, or
    its heartbeats stop."""
    if not is_multiprocess():
        return
    print(f"train.py: process {jax.process_index()} of {jax.process_count()} stopped (exit {code}); if the error "
          "above is a failed collective, another process of this run stopped first: see its output",
          file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
