"""How train.py accounts for its time (step rate against the whole run's), that evaluation is
compiled once, and that the accelerator check (bench/gpu.py) runs: its dry run on the CPU."""
import logging
import time

import pytest

from tests.train_runs import ROOT, TINY
from vit_common.train.clock import PHASES, RunClock


def test_clock_bills_each_phase_and_the_rest_to_other():
    clock = RunClock()
    with clock.phase("step"):
        time.sleep(0.02)
    with clock.phase("eval"):
        time.sleep(0.01)
    time.sleep(0.01)
    wall, window = clock.take_window()
    times = clock.breakdown()
    assert set(times) == {*PHASES, "other"}
    assert times["step"] >= 0.02 and times["eval"] >= 0.01 and times["other"] >= 0.01
    assert sum(times.values()) == pytest.approx(clock.elapsed(), abs=1e-3)
    assert window == pytest.approx({"step": times["step"], "eval": times["eval"]}) and wall >= 0.04
    assert clock.take_window()[1] == {}  # a new window starts empty


def _count_evaluations(monkeypatch) -> list:
    """Each evaluation reads the test split once through RunData.test_loader: count the passes."""
    from vit_common.train.run import RunData

    passes, test_loader = [], RunData.test_loader
    monkeypatch.setattr(RunData, "test_loader", lambda self: passes.append(1) or test_loader(self))
    return passes


def _test_rows(workdir):
    import json
    from pathlib import Path

    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "test"]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    """One finished JAX run (2 epochs of 4 steps, a padded last test batch), with what it compiled
    and how often it evaluated: the rate, compile-once and rerun tests all read it."""
    import jax

    from vit_common.train.recipe import parse_train_args
    from vit_jax.train import train

    workdir = tmp_path_factory.mktemp("jax_run")
    config = parse_train_args([*TINY, "--train-split", "train[:128]", "--test-split", "test[:40]",  # a padded last batch
                               "--workdir", str(workdir)])
    records, root = _Records(), logging.getLogger()
    with pytest.MonkeyPatch.context() as monkeypatch:
        passes = _count_evaluations(monkeypatch)
        jax.config.update("jax_log_compiles", True)
        root.addHandler(records)
        try:
            summary = train(config, show_progress=False)
        finally:
            root.removeHandler(records)
            jax.config.update("jax_log_compiles", False)
    return dict(workdir=workdir, summary=summary, passes=len(passes), test_rows=_test_rows(workdir),
                compiles=[m[:40] for m in records.messages if m.startswith("Compiling jit(")])


def test_jax_run_reports_step_and_run_rates_and_compiles_evaluation_once(jax_run):
    summary, compiles = jax_run["summary"], jax_run["compiles"]
    # The step for the test set compiles once, whatever the last batch's size.
    assert sum(m.startswith("Compiling jit(eval_fn)") for m in compiles) == 1, compiles
    assert sum(m.startswith("Compiling jit(train_fn)") for m in compiles) == 1, compiles
    assert summary["steps"] == 8
    assert 0 < summary["images_per_s"] < summary["step_images_per_s"]
    assert set(summary["time_s"]) == {*PHASES, "other"} and summary["time_s"]["eval"] > 0
    # 2 epochs evaluate twice: the final result is the last epoch's, not a third pass over the same weights.
    assert jax_run["passes"] == 2
    last = jax_run["test_rows"][-1]
    assert (summary["test_accuracy"], summary["test_loss"]) == (last["accuracy"], last["loss"]) and last["step"] == 8


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_a_finished_run_evaluates_once_more_when_rerun(tmp_path, monkeypatch, framework, request):
    """Rerunning a finished run's command resumes at its last step: no epoch ends there, so the
    final evaluation is a pass of its own, and gives what the run's last epoch gave. JAX reruns
    (a copy of) the module's run; PyTorch, whose runs cost little, a 1-epoch run of its own."""
    import shutil

    from vit_common.train.recipe import parse_train_args

    train = __import__(f"vit_{framework}.train", fromlist=["train"]).train
    if framework == "jax":
        jax_run = request.getfixturevalue("jax_run")
        shutil.copytree(jax_run["workdir"], tmp_path / "run")
        args, first = ["--train-split", "train[:128]"], jax_run["summary"]
        assert jax_run["passes"] == 2  # one per epoch: the last epoch's evaluation is the final one
    else:
        args = ["--train-split", "train[:64]", "--epochs", "1"]
    config = parse_train_args([*TINY, *args, "--test-split", "test[:40]", "--framework", framework,
                               "--workdir", str(tmp_path / "run")])
    passes = _count_evaluations(monkeypatch)
    if framework == "torch":
        first = train(config, show_progress=False)
        assert len(passes) == 1  # the epoch's evaluation is the final one
    before = len(passes)
    again = train(config, show_progress=False)
    assert len(passes) == before + 1  # one pass of its own
    assert again["steps"] == first["steps"] == {"jax": 8, "torch": 2}[framework]
    assert (again["test_accuracy"], again["test_loss"]) == (first["test_accuracy"], first["test_loss"])


def test_gpu_check_dry_run_prints_the_readme_table(capsys):
    import sys

    sys.path.insert(0, str(ROOT))
    from bench.gpu import main, peak_tflops

    rows = main(["--dry-run", "--models", "vit_small_patch16_224"])
    out = capsys.readouterr().out
    assert [(r["model"], r["twin"]) for r in rows] == [
        ("vit_small_patch16_224", "jax (jit)"), ("vit_small_patch16_224", "torch (eager)"),
        ("vit_small_patch16_224", "torch.compile"), ("vit_large_patch16_224", "jax (jit), remat"),
        ("vit_large_patch16_224", "torch (eager), remat"), ("vit_base_patch16_224", "jax (jit), scanned")]
    assert all(r["images_per_s"] > 0 and r["memory_gib"] > 0 and r["first_step_s"] > 0 for r in rows)
    assert "| model | twin | images/s | model TFLOP/s | MFU | peak memory GiB | first step s (compile) |" in out
    assert "loader (vit_data" in out
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989 and peak_tflops("NVIDIA H100 PCIe") == 756
    assert peak_tflops("TPU v5 lite") == 197 and peak_tflops("Some New Chip") is None
