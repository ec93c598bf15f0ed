"""Multi-host JAX on one machine: real `train.py` processes joined over 127.0.0.1 (gloo
collectives on CPU), each with one device, against one process with as many devices."""
import json
import signal
import subprocess

import numpy as np
import pytest

from tests.train_runs import (final_weights, finish_processes, run_processes, run_train, saved_steps,
                              start_processes, train_losses, wait_for_checkpoint)

# Wide enough that FSDP really shards the MLP kernels (arrays of >= 2^14 elements); MixUp and
# CutMix on, so the pairs must span the global batch across the two hosts.
WIDE = ["--epochs", "1", "--mixup-alpha", "0.8", "--cutmix-alpha", "1.0",
        "--model-args", '{"embed_dim": 128, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}']


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
    assert len(rows) == 44 + 1  # one writer: every train step and the epoch's test row once
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
    procs = start_processes(workdir, *WIDE, "--sharding", "fsdp")
    try:
        wait_for_checkpoint(workdir, procs[0], timeout=240)
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
        finish_processes(procs)
    assert saved_steps(workdir) and not (workdir / "final.npz").exists()
    outputs = run_processes(workdir, *WIDE, "--sharding", "fsdp")
    assert all("resumed from step" in out for out in outputs)
    want, got = final_weights(two_process_fsdp), final_weights(workdir)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert train_losses(workdir) == train_losses(two_process_fsdp)  # the log has no gaps or repeats


@pytest.mark.parametrize("dies", [0, 1])  # the coordinator, or a worker
def test_one_process_dying_stops_the_other(dies, tmp_path):
    workdir = tmp_path / "run"
    procs = start_processes(workdir, "--epochs", "4", "--heartbeat-timeout", "5")
    survivor = procs[1 - dies]
    try:
        wait_for_checkpoint(workdir, procs[0], timeout=240)
        procs[dies].send_signal(signal.SIGKILL)
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
