"""Run `python train.py` in a subprocess and read what the run left: shared by both twins'
training tests (tests/test_train_jax.py, tests/test_train_torch.py)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from vit_common.formats.run_folder import run_checkpoint_steps

ROOT = Path(__file__).resolve().parents[1]
# A tiny model on digits at 8x8: 44 steps per epoch at batch 32. Every recipe field a test's
# learning depends on is pinned here, so tuning the digits preset for its 40 epochs does not change
# what these few-epoch runs learn.
TINY = ["--img-size", "8", "--patch-size", "4", "--batch-size", "32", "--epochs", "2", "--lr", "2e-3",
        "--warmup-epochs", "0.5", "--drop-path-rate", "0.1", "--log-every", "1", "--checkpoint-every", "20",
        "--weight-decay", "0.05", "--label-smoothing", "0.1", "--pad-crop", "0",
        "--model-args", '{"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "global_pool": "token"}']


def train_cmd(workdir, *extra, launcher=(sys.executable,)):
    return [*launcher, str(ROOT / "train.py"), *TINY, "--workdir", str(workdir), *extra]


def train_env(devices=1):
    """The child's environment: the suite's (its compilation cache, thread settings and XLA flags,
    see conftest.py) with the device count set, replacing only a device count already there."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    return env


def interrupt_launcher(step, signal_name, wait=True):
    """A launcher for train_cmd whose run sends itself signal_name ("SIGKILL", "SIGTERM") right after
    training step `step`, its checkpoints so far on disk unless not `wait` (tests/interrupt_at.py)."""
    return (sys.executable, str(ROOT / "tests" / "interrupt_at.py"), str(step), signal_name,
            *(() if wait else ("--no-wait",)))


def run_train(workdir, *extra, devices=1, launcher=(sys.executable,)):
    result = subprocess.run(train_cmd(workdir, *extra, launcher=launcher), cwd=ROOT, env=train_env(devices),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def final_weights(workdir):
    with np.load(Path(workdir) / "final.npz") as f:
        return {k: f[k] for k in f.files if not k.startswith("__")}


def train_losses(workdir):
    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def saved_steps(workdir):
    """Finished checkpoints of either twin: orbax step folders (jax), step_N.pt files (torch)."""
    return sorted(run_checkpoint_steps(Path(workdir) / "checkpoints"))


def poison_training_batches(monkeypatch, steps=None):
    """Make every training batch NaN, or those of `steps` (1-based; evaluation batches stay clean),
    for the guard tests."""
    import vit_data

    real = vit_data.make_loader

    def poisoned(*args, **kwargs):
        loader = real(*args, **kwargs)
        if not kwargs.get("train"):
            return loader

        class Poisoned:
            steps_per_epoch = loader.steps_per_epoch
            step = 0

            def __next__(self):
                batch = dict(next(loader))
                self.step += 1
                if steps is None or self.step in steps:
                    batch["image"] = np.full_like(batch["image"], np.nan)
                return batch

            get_state, set_state = loader.get_state, loader.set_state

        return Poisoned()

    monkeypatch.setattr(vit_data, "make_loader", poisoned)


def reserve_port() -> socket.socket:
    """A free port held until the socket closes. Bound with SO_REUSEPORT and never listening: JAX's
    coordinator (gRPC binds with SO_REUSEPORT too) can still take it, while no other program's bind,
    nor the kernel's pick of a free port for another test, can (a port found free and released
    before the coordinator binds it could be taken in between)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    return s


def start_processes(workdir, *extra, n=2, launchers=None):
    """n `train.py` processes of one multi-host JAX run on 127.0.0.1, one CPU device each (process i
    started by launchers[i] if given, see interrupt_launcher). Their output goes to files beside the
    workdir (a full pipe would stall a process, and its peers with it)."""
    reservation = reserve_port()
    port = reservation.getsockname()[1]
    procs = []
    for i in range(n):
        env = dict(train_env(1), JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(n),
                   JAX_PROCESS_ID=str(i))
        launcher = launchers[i] if launchers else (sys.executable,)
        log = Path(f"{workdir}.process{i}.log")
        with open(log, "w") as out:
            proc = subprocess.Popen(train_cmd(workdir, *extra, launcher=launcher), cwd=ROOT, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        proc.log = log
        procs.append(proc)
    procs[0].reservation = reservation  # released by finish_processes
    return procs


def finish_processes(procs, timeout=300):
    """Wait for all of them (killing any left if one overruns: no test hangs); return their output."""
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        procs[0].reservation.close()
    return [p.log.read_text() for p in procs]


def run_processes(workdir, *extra, n=2):
    procs = start_processes(workdir, *extra, n=n)
    outputs = finish_processes(procs)
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i}: {out[-3000:]}"
    return outputs
def damage(path, how):
    """A checkpoint file cut short (truncate), overwritten with zeros (zero) or gone (delete)."""
    path = Path(path)
    size = path.stat().st_size
    if how == "truncate":
        os.truncate(path, size // 2)
    elif how == "zero":
        path.write_bytes(bytes(size))
    else:
        path.unlink()


def copy_finished_run(src, dst):
    """A finished run's folder without final.npz: rerunning its command redoes the end of the run."""
    import shutil

    shutil.copytree(src, dst)
    (Path(dst) / "final.npz").unlink()
    return Path(dst)
