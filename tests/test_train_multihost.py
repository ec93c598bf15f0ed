"""Multi-host JAX on one machine: real `train.py` processes joined over 127.0.0.1 (gloo
collectives on CPU), each with one device, against one process with as many devices."""
import json
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.train_runs import (final_weights, finish_processes, interrupt_launcher, run_processes, run_train,
                              saved_steps, start_processes, train_losses)

# Wide enough that FSDP really shards the MLP kernels (arrays of >= 2^14 elements); MixUp and
# CutMix on, so the pairs must span the global batch across the two hosts. One epoch of 320
# training images: 10 steps, checkpoints after steps 4 and 8 and at the end.
WIDE = ["--epochs", "1", "--mixup-alpha", "0.8", "--cutmix-alpha", "1.0", "--train-split", "train[:320]",
        "--checkpoint-every", "4", "--model-args", '{"embed_dim": 128, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}']
STEPS = 10


@pytest.fixture(scope="module")
def two_process_fsdp(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("two_processes") / "fsdp"
    run_processes(workdir, *WIDE, "--sharding", "fsdp")
    return workdir


@pytest.mark.parametrize("sharding", ["data", "fsdp"])
def test_two_processes_equal_one_process_with_two_devices(sharding, two_process_fsdp, tmp_path):
    from vit_common import read_checkpoint
    from vit_common.cli.vit_convert import main as convert

    two = two_process_fsdp if sharding == "fsdp" else tmp_path / "two"
    if sharding != "fsdp":
        run_processes(two, *WIDE, "--sharding", sharding)
    one = tmp_path / "one"
    run_train(one, *WIDE, "--sharding", sharding, devices=2)
    for run in (one, two):
        assert json.loads((run / "summary.json").read_text())["devices"] == 2
    rows = (two / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == STEPS + 1  # one writer: every train step and the epoch's test row once
    want, got = train_losses(one), train_losses(two)
    assert want.keys() == got.keys()
    for step in want:  # float32; at most the order of the cross-device sums differs (NaN fails)
        assert abs(got[step] - want[step]) / max(1.0, abs(want[step])) <= 1e-5, (sharding, step)
    want, got = final_weights(one), final_weights(two)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-5, equal_nan=False, err_msg=k)
    # The checkpoint both processes saved together holds the whole (FSDP-gathered) final state.
    assert convert([str(two), str(tmp_path / "last.npz")]) == 0
    last = read_checkpoint(tmp_path / "last.npz").weights
    for k in got:
        np.testing.assert_array_equal(last[k], got[k], err_msg=k)


def test_both_processes_sigkilled_then_restarted_resume_bit_exactly(two_process_fsdp, tmp_path):
    workdir = tmp_path / "run"
    # Each process kills itself right after step 6 (of 10), their checkpoint of step 4 on disk.
    kill_at_6 = [interrupt_launcher(6, "SIGKILL")] * 2
    procs = start_processes(workdir, *WIDE, "--sharding", "fsdp", launchers=kill_at_6)
    outputs = finish_processes(procs)
    assert [p.returncode for p in procs] == [-signal.SIGKILL] * 2, outputs[0][-3000:]
    assert saved_steps(workdir) == [4] and not (workdir / "final.npz").exists()
    outputs = run_processes(workdir, *WIDE, "--sharding", "fsdp")
    assert all("resumed from step 4 " in out for out in outputs)
    want, got = final_weights(two_process_fsdp), final_weights(workdir)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert train_losses(workdir) == train_losses(two_process_fsdp)  # the log has no gaps or repeats


@pytest.mark.parametrize("dies", [0, 1])  # the coordinator, or a worker
def test_one_process_dying_stops_the_other(dies, tmp_path):
    workdir = tmp_path / "run"
    launchers = [(sys.executable,)] * 2
    # Dies right after step 2 of 10, the other then waits in step 3's collectives (the recipe of the
    # runs above: their compilations serve).
    launchers[dies] = interrupt_launcher(2, "SIGKILL", wait=False)
    procs = start_processes(workdir, *WIDE, "--sharding", "fsdp", "--heartbeat-timeout", "5", launchers=launchers)
    survivor = procs[1 - dies]
    try:
        procs[dies].wait(timeout=600)  # starting two processes takes minutes on a loaded machine
        assert procs[dies].returncode == -signal.SIGKILL, procs[dies].log.read_text()[-3000:]
        try:
            survivor.wait(timeout=60)  # a 5 s heartbeat timeout, with room for a loaded machine
        except subprocess.TimeoutExpired:
            pytest.fail(f"process {1 - dies} still runs 60 s after process {dies} died")
    finally:
        finish_processes(procs)
    out = survivor.log.read_text()
    assert survivor.returncode != 0
    # Either a collective with the dead process failed (our message), or JAX's heartbeat check ended it.
    assert (f"process {1 - dies} of 2 stopped" in out
            or "Terminating process because the JAX distributed service detected fatal errors" in out), out[-3000:]


@pytest.mark.parametrize("environ,flags,expected", [
    ({}, [], None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2"}, [], None),  # inside salloc, no srun step: one process
    ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, [], None),  # a pod, not an indexed Job
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, [], None),  # a single-host TPU VM
    ({"JAX_NUM_PROCESSES": "1"}, [], None),
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, [], {}),  # srun: JAX detects
    ({"TPU_WORKER_HOSTNAMES": "w0,w1"}, [], {}),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}, [],
     dict(coordinator_address="h:1", num_processes=2, process_id=1)),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}, ["--process-id", "0"],
     dict(coordinator_address="h:1", num_processes=2, process_id=0)),  # flags win
    ({}, ["--coordinator-address", "h:2", "--num-processes", "4", "--process-id", "3"],
     dict(coordinator_address="h:2", num_processes=4, process_id=3)),
])
def test_multi_process_settings_come_from_flags_the_environment_or_a_cluster(environ, flags, expected):
    from vit_common.train.recipe import parse_train_args
    from vit_jax.train.distributed import initialize_args

    got = initialize_args(parse_train_args(flags + ["--heartbeat-timeout", "7"]), environ)
    assert got == (None if expected is None else dict(expected, heartbeat_timeout_seconds=7))


@pytest.mark.parametrize("environ,message", [
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"}, "missing: --process-id (JAX_PROCESS_ID)"),
    ({"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' is not an integer"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "not in [0, 2)"),
])
def test_incomplete_multi_process_settings_are_an_error(environ, message):
    from vit_common import ConfigError
    from vit_common.train.recipe import parse_train_args
    from vit_jax.train.distributed import initialize_args

    with pytest.raises(ConfigError, match=re.escape(message)):
        initialize_args(parse_train_args([]), environ)
