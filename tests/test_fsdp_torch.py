"""train.py --framework torch --sharding fsdp under torchrun (FSDP2, gloo on CPU): two processes
train what one process trains, each holding half the parameters and AdamW state, and a run whose
processes are all SIGKILLed resumes bit-exactly from its torch.distributed.checkpoint shards."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import train as train_cli
from tests.train_runs import ROOT, TINY, final_weights, run_train, saved_steps, train_cmd, train_env, train_losses

pytest.importorskip("torch")

# Drop path off: each process draws its own masks, so with it on the runs agree in law only. On 640
# training images: 20 steps per epoch, checkpoints every 8 steps and at epoch ends (8, 16, 20, 24,
# 32, 40; the last three kept).
ARGS = ["--framework", "torch", "--epochs", "2", "--drop-path-rate", "0", "--train-split", "train[:640]",
        "--checkpoint-every", "8"]
STEPS = 2 * 20
FSDP = ["--sharding", "fsdp"]


def torchrun(n=2):
    return (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n))


def descendants(pid):
    """The process ids started by `pid`, and by those, ... (from /proc): torchrun's ranks."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def alive(pid):
    try:
        return "zombie" not in open(f"/proc/{pid}/status").read().lower()
    except OSError:
        return False


def summary(workdir):
    return json.loads((workdir / "summary.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    assert train_cli.main(TINY + ARGS + ["--workdir", str(root / "one")]) == 0  # one process: this one
    run_train(root / "two", *ARGS, *FSDP, launcher=torchrun())
    return root / "one", root / "two"


def test_two_fsdp_processes_train_what_one_process_trains(runs):
    one, two = runs
    assert summary(two)["devices"] == 2 and summary(two)["sharding"] == "fsdp"
    want, got = train_losses(one), train_losses(two)
    assert len(want) == STEPS and got.keys() == want.keys()
    for step in want:  # float32: the cross-process sums (reduce-scatter) round in another order
        assert abs(got[step] - want[step]) <= 1e-4 * abs(want[step]), step
    assert summary(two)["test_accuracy"] == summary(one)["test_accuracy"]
    w_one, w_two = final_weights(one), final_weights(two)  # final.npz: gathered from the shards once
    assert w_one.keys() == w_two.keys()
    for k in w_one:
        if k.endswith("/key/bias"):  # zero true gradient (softmax ignores it): under Adam it follows rounding noise
            continue
        np.testing.assert_allclose(w_two[k], w_one[k], rtol=0, atol=1e-4, equal_nan=False, err_msg=k)


def test_each_fsdp_process_holds_half_the_parameters_and_optimizer_state(runs):
    one, two = (summary(r) for r in runs)
    for key in ("parameter_bytes_per_process", "optimizer_state_bytes_per_process"):
        # dim 0 split in two; a row count that is odd pads rank 0's shard by one row
        assert one[key] / 2 <= two[key] <= 1.02 * one[key] / 2, (key, one[key], two[key])
    assert one["parameter_bytes_per_process"] == 4 * one["parameters"]


def test_fsdp_checkpoints_are_sharded_and_read_by_vit_convert(runs, tmp_path):
    from vit_common import read_checkpoint
    from vit_common.cli.vit_convert import main as convert

    _, two = runs
    newest = two / "checkpoints" / f"step_{STEPS:09d}.dcp"
    assert sorted(p.name for p in newest.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]  # one per rank
    assert convert([str(two), str(tmp_path / "last.npz")]) == 0
    last = read_checkpoint(tmp_path / "last.npz").weights
    for k, v in final_weights(two).items():
        np.testing.assert_array_equal(last[k], v, err_msg=k)


def test_both_fsdp_processes_sigkilled_then_restarted_resume_bit_exactly(runs, tmp_path):
    _, reference = runs
    workdir = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(workdir, *ARGS, *FSDP, launcher=torchrun()), cwd=ROOT, env=train_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not saved_steps(workdir):  # the first finished checkpoint (step 8 of 40)
            assert proc.poll() is None and time.time() < deadline, "no checkpoint before the run ended"
            time.sleep(0.02)
    finally:
        ranks = descendants(proc.pid)
        for pid in [*ranks, proc.pid]:  # both ranks (and torchrun's agent), by their ids, at once
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        while any(alive(pid) for pid in ranks):  # gone before the restart reads their folder
            time.sleep(0.05)
    kept = saved_steps(workdir)
    assert kept and max(kept) < STEPS and not (workdir / "final.npz").exists()
    out = run_train(workdir, *ARGS, *FSDP, launcher=torchrun())
    assert f"resumed from step {max(kept)}" in out.stdout  # the newest checkpoint the killed run finished
    want, got = final_weights(reference), final_weights(workdir)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert train_losses(workdir) == train_losses(reference)  # the log has no gaps or repeats
