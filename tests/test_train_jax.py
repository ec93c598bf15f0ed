"""train.py with the JAX engine: resume after SIGKILL, SIGTERM, many devices, guards, errors.

The run-level tests start real `python train.py` processes on a tiny model (digits at 8x8).
"""
import json
import signal
import subprocess

import numpy as np
import pytest

import train as train_cli
from tests.train_runs import (ROOT, TINY, final_weights as _final, poison_training_batches, run_train as _run,
                        train_cmd as _cmd, train_env as _env, train_losses as _train_losses,
                        wait_for_checkpoint as _wait_for_checkpoint)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    _run(workdir)
    return workdir


def test_uninterrupted_run_leaves_everything_people_expect(reference_run):
    names = {p.name for p in reference_run.iterdir()}
    assert {"config.json", "metrics.jsonl", "summary.json", "final.npz", "training_curves.png", "tensorboard",
            "checkpoints"} <= names
    summary = json.loads((reference_run / "summary.json").read_text())
    assert summary["steps"] == 2 * 44 and summary["parameters"] > 0 and 0 < summary["test_accuracy"] <= 1
    from vit_common import read_checkpoint
    ckpt = read_checkpoint(reference_run / "final.npz")  # the canonical export loads with no flags
    assert ckpt.config.embed_dim == 32 and ckpt.meta["class_names"][:2] == ["0", "1"]


def test_sigkill_mid_epoch_then_resume_gives_the_same_parameters(reference_run, tmp_path):
    proc = subprocess.Popen(_cmd(tmp_path), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_checkpoint(tmp_path, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "final.npz").exists()
    resumed = _run(tmp_path)
    assert "resumed from step" in resumed.stdout and "changed recipe" not in resumed.stderr
    want, got = _final(reference_run), _final(tmp_path)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert _train_losses(tmp_path) == _train_losses(reference_run)  # the log has no gaps or repeats


def test_sigterm_saves_and_exits_cleanly(reference_run, tmp_path):
    proc = subprocess.Popen(_cmd(tmp_path), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for_checkpoint(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM: saved step" in out
    _run(tmp_path)
    want, got = _final(reference_run), _final(tmp_path)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_eight_devices_match_one_data_parallel_and_fsdp(tmp_path):
    # Wide enough that FSDP really shards the MLP kernels (arrays of >= 2^14 elements).
    args = ["--epochs", "1", "--checkpoint-every", "1000",  # checkpoints are not the point here
            "--model-args", '{"embed_dim": 128, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}']
    _run(tmp_path / "one", *args, devices=1)
    one = _train_losses(tmp_path / "one")
    assert len(one) == 44
    for sharding in ("data", "fsdp"):
        _run(tmp_path / sharding, *args, "--sharding", sharding, devices=8)
        assert json.loads((tmp_path / sharding / "summary.json").read_text())["devices"] == 8
        eight = _train_losses(tmp_path / sharding)
        assert eight.keys() == one.keys()
        for step in one:
            # float32: only the order of the cross-device sums differs
            assert abs(eight[step] - one[step]) / max(1.0, abs(one[step])) <= 1e-5, (sharding, step)


@pytest.mark.parametrize("args,message", [
    (["--model", "vit_nope_patch16_224"], "unknown model name"),
    (["--img-size", "10"], "img_size 10 is not divisible by patch_size 4"),
    (["--grad-accum-steps", "3"], "batch_size 32 is not divisible by grad_accum_steps 3"),
    (["--dataset", "idx:/nonexistent/fashion"], "/nonexistent/fashion"),
    (["--dataset", "not_a_dataset_name"], "not_a_dataset_name"),
    (["--teacher", "teacher.npz"], "--teacher needs a distilled model"),
])
def test_bad_configuration_fails_before_any_compute(tmp_path, capsys, args, message):
    assert train_cli.main(TINY + ["--workdir", str(tmp_path / "run"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("log_every", [1, 5])  # the guard is read at log steps; optax must hold until then
def test_non_finite_steps_are_skipped_then_stop_the_run(tmp_path, monkeypatch, log_every):
    import vit_jax.train as loop
    from vit_common.train.recipe import parse_train_args

    poison_training_batches(monkeypatch)
    config = parse_train_args(TINY + ["--workdir", str(tmp_path), "--max-bad-steps", "3", "--log-every", str(log_every)])
    with pytest.raises(loop.TrainingStopped, match=f"{max(3, log_every)} steps in a row had non-finite loss or gradients"):
        loop.train(config, show_progress=False)
    # Counting up to 5 in a row shows optax kept skipping until the loop looked.


def test_vit_convert_reads_training_runs(reference_run, tmp_path, capsys):
    from vit_common import read_checkpoint
    from vit_common.cli.vit_convert import main as convert

    final = _final(reference_run)
    assert convert([str(reference_run), str(tmp_path / "run.safetensors")]) == 0  # a workdir: its latest step
    assert "train.py run (orbax checkpoint of the Flax twin)" in capsys.readouterr().out
    ckpt = read_checkpoint(tmp_path / "run.safetensors")
    assert ckpt.weights.keys() == final.keys()
    for k in final:
        np.testing.assert_array_equal(ckpt.weights[k], final[k], err_msg=k)
    step = max((p for p in (reference_run / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert convert([str(step), str(tmp_path / "step.npz")]) == 0  # one step folder
    assert read_checkpoint(tmp_path / "step.npz").config == ckpt.config
    assert convert([str(tmp_path), str(tmp_path / "x.npz")]) == 2
    assert "neither a train.py workdir nor one of its checkpoint steps" in capsys.readouterr().err


def test_deit_hard_distillation_from_a_teacher(reference_run, tmp_path):
    result = _run(tmp_path, "--model", "deit_tiny_distilled_patch16_224", "--teacher",
                  str(reference_run / "final.npz"), "--epochs", "1")
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 44, result.stdout[-500:]
