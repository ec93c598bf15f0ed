"""train.py --framework torch: resume after SIGKILL, SIGTERM, DDP, guards, errors (the mirror of
tests/test_train_jax.py). The run-level tests start real `python train.py` processes on a tiny
model (digits at 8x8)."""
import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import train as train_cli
from tests.train_runs import (ROOT, TINY, copy_finished_run, damage, final_weights, interrupt_launcher,
                              poison_training_batches, run_train, saved_steps, train_cmd, train_env, train_losses)
from vit_common import CheckpointError

TORCH = ("--framework", "torch")
# Every run of this module, its reference run included: on 640 training images, 20 steps per epoch,
# checkpoints every 8 steps (and at epoch ends): two epochs save 8, 16, 20, 24, 32, 40 and keep the
# last three. Enough training for the carried weights to classify most digits (see
# test_runs_move_across_frameworks_with_init).
RUN = [*TORCH, "--train-split", "train[:640]", "--checkpoint-every", "8"]
ARGS = TINY + RUN  # for train.py's main() in this process
STEPS = 20  # per epoch
NEWEST, PREVIOUS = 40, 32  # the reference run's last two checkpoints


def ckpt(step):
    return f"step_{step:09d}.pt"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    run_train(workdir, *RUN)
    return workdir


def test_uninterrupted_run_leaves_everything_people_expect(reference_run):
    names = {p.name for p in reference_run.iterdir()}
    assert {"config.json", "metrics.jsonl", "summary.json", "final.npz", "training_curves.png", "tensorboard",
            "checkpoints"} <= names
    summary = json.loads((reference_run / "summary.json").read_text())
    assert summary["framework"] == "torch" and summary["steps"] == 2 * STEPS and 0 < summary["test_accuracy"] <= 1
    from vit_common import read_checkpoint
    ckpt = read_checkpoint(reference_run / "final.npz")
    assert ckpt.config.embed_dim == 32 and ckpt.meta["class_names"][:2] == ["0", "1"]
    assert len(list((reference_run / "checkpoints").glob("step_*.pt"))) == 3  # --keep-checkpoints
    assert saved_steps(reference_run) == [24, 32, 40]


def test_ctrl_c_then_sigterm_then_sigkill_each_resume_to_the_same_parameters(reference_run, tmp_path):
    """One run stopped three ways in turn, each stop resumed by the next process: Ctrl-C, then
    SIGTERM (both save the step they land after and exit 0), then SIGKILL (the newest checkpoint
    on disk is all that is left; the steps after it are replayed). The end is bit-identical to the
    uninterrupted run, and its log has no gaps or repeats."""
    # Ctrl-C (SIGINT) right after step 3, before the first checkpoint: that step is saved, exit 0, no
    # traceback (tests/interrupt_at.py gives the child Python's own Ctrl-C handler, whatever the test
    # runner ignores).
    stopped = subprocess.run(train_cmd(tmp_path, *RUN, launcher=interrupt_launcher(3, "SIGINT")), cwd=ROOT,
                             env=train_env(), capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert "Ctrl-C: saved step 3 " in stopped.stdout and "Traceback" not in stopped.stderr
    assert "Ctrl-C: stopping after this step, once it is saved (Ctrl-C again: stop at once)" in stopped.stderr
    assert saved_steps(tmp_path) == [3] and not (tmp_path / "final.npz").exists()
    # SIGTERM right after step 12, between two checkpoints: that very step is saved, then the run exits 0.
    stopped = subprocess.run(train_cmd(tmp_path, *RUN, launcher=interrupt_launcher(12, "SIGTERM")), cwd=ROOT,
                             env=train_env(), capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert "resumed from step 3 " in stopped.stdout and "changed recipe" not in stopped.stderr
    assert "SIGTERM: saved step 12 " in stopped.stdout
    assert saved_steps(tmp_path) == [3, 8, 12] and not (tmp_path / "final.npz").exists()
    # SIGKILL right after step 30, mid-epoch (of 20 per epoch), past the epoch end: its checkpoint of step 24 on disk.
    killed = subprocess.run(train_cmd(tmp_path, *RUN, launcher=interrupt_launcher(30, "SIGKILL")), cwd=ROOT,
                            env=train_env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "resumed from step 12 " in killed.stdout
    assert saved_steps(tmp_path) == [16, 20, 24] and not (tmp_path / "final.npz").exists()
    resumed = run_train(tmp_path, *RUN)
    assert "resumed from step 24 " in resumed.stdout and "changed recipe" not in resumed.stderr
    want, got = final_weights(reference_run), final_weights(tmp_path)
    assert want.keys() == got.keys()
    for k in want:  # drop path is on: its masks are a function of the step, so they replay exactly
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert train_losses(tmp_path) == train_losses(reference_run)  # the log has no gaps or repeats


def test_two_ddp_processes_match_one_process(tmp_path):
    # Drop path off: each process draws its own masks, so with it on the runs agree in law only.
    args = [*RUN, "--epochs", "1", "--drop-path-rate", "0", "--grad-accum-steps", "2"]
    assert train_cli.main(TINY + args + ["--workdir", str(tmp_path / "one")]) == 0  # in this process: one process
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    run_train(tmp_path / "two", *args, launcher=torchrun)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["devices"] == 2
    one, two = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert len(one) == STEPS and two.keys() == one.keys()
    for step in one:  # float32: only the order of the cross-process sums differs
        assert abs(two[step] - one[step]) / max(1.0, abs(one[step])) <= 1e-5, step
    # Not the parameters one by one: the attention key bias has an exactly zero gradient, and Adam
    # scales its rounding noise up to full-size steps, so it wanders differently in each run (while
    # the softmax ignores it). What the model computes is compared instead.
    one, two = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert abs(two["test_loss"] - one["test_loss"]) <= 1e-4 * one["test_loss"]


def test_bad_configuration_fails_before_any_compute(reference_run, tmp_path, capsys):
    # A workdir resumes only the framework that started it.
    assert train_cli.main(TINY + ["--workdir", str(reference_run)]) == 2
    assert f"{reference_run} holds a --framework torch run" in capsys.readouterr().err
    assert train_cli.main(TINY + [*TORCH, "--workdir", str(tmp_path / "run"), "--init", str(tmp_path / "nope.npz")]) == 2
    assert "nope.npz" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("log_every", [1, 5])
def test_non_finite_steps_are_skipped_then_stop_the_run(tmp_path, monkeypatch, log_every):
    import vit_torch.train as loop
    from vit_common.train.recipe import parse_train_args

    poison_training_batches(monkeypatch)
    config = parse_train_args(TINY + [*TORCH, "--workdir", str(tmp_path), "--max-bad-steps", "3",
                                      "--log-every", str(log_every)])
    with pytest.raises(loop.TrainingStopped, match=f"{max(3, log_every)} steps in a row had non-finite loss or gradients"):
        loop.train(config, show_progress=False)


def test_deit_hard_distillation_from_a_teacher(reference_run, tmp_path):
    # In this process: the run itself is the point, not its process.
    assert train_cli.main(ARGS + ["--workdir", str(tmp_path), "--model", "deit_tiny_distilled_patch16_224", "--teacher",
                                  str(reference_run / "final.npz"), "--epochs", "1"]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == STEPS


def test_bfloat16_autocast_trains(tmp_path):
    # In this process, with a hook on every module: the Linear layers' outputs show bf16 was used.
    import torch

    linear_out = {True: set(), False: set()}  # training / evaluation mode -> dtypes seen

    def record(module, inputs, output):
        if isinstance(module, torch.nn.Linear):
            linear_out[module.training].add(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        assert train_cli.main(TINY + [*TORCH, "--dtype", "bfloat16", "--epochs", "1", "--workdir", str(tmp_path)]) == 0
    finally:
        hook.remove()
    assert linear_out[True] == {torch.bfloat16}, linear_out  # every training step under autocast
    assert linear_out[False] == {torch.bfloat16}, linear_out  # and the evaluation
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dtype"] == "bfloat16" and np.isfinite(summary["test_loss"])
    assert all(v.dtype == np.float32 for v in final_weights(tmp_path).values())  # float32 parameters


def test_runs_move_across_frameworks_with_init(reference_run, tmp_path, capsys):
    """A torch run folder is read by vit-convert (its latest checkpoint) and starts a JAX run with
    --init; the JAX run's final.npz starts a torch run."""
    from vit_common import read_checkpoint
    from vit_common.cli.vit_convert import main as convert

    assert convert([str(reference_run), str(tmp_path / "run.npz")]) == 0
    assert "train.py run (checkpoint of the PyTorch twin)" in capsys.readouterr().out
    latest = read_checkpoint(tmp_path / "run.npz").weights
    final = final_weights(reference_run)  # the same step (the last) and weights
    for k in final:
        np.testing.assert_array_equal(latest[k], final[k], err_msg=k)
    # Both runs in this process (the weights' way across is the point, not the processes).
    jax_args = TINY + RUN[2:]  # the reference's recipe, with the JAX engine
    assert train_cli.main(jax_args + ["--workdir", str(tmp_path / "jax"), "--init", str(reference_run), "--epochs", "1",
                                      "--lr", "1e-4"]) == 0
    assert train_cli.main(ARGS + ["--workdir", str(tmp_path / "torch"), "--init", str(tmp_path / "jax" / "final.npz"),
                                  "--epochs", "1", "--lr", "1e-4"]) == 0
    first_loss = train_losses(tmp_path / "jax")[1]
    assert first_loss < train_losses(reference_run)[1]  # it starts from the trained weights, not from scratch
    assert json.loads((tmp_path / "torch" / "summary.json").read_text())["test_accuracy"] > 0.5


def test_truncated_newest_checkpoint_is_named_and_the_run_resumes_bit_identical(reference_run, tmp_path):
    run = copy_finished_run(reference_run, tmp_path / "run")
    newest = run / "checkpoints" / ckpt(NEWEST)
    damage(newest, "truncate")
    resumed = run_train(run, *RUN)
    assert (resumed.stderr.count("is unreadable") == 1
            and f"checkpoint {newest} (step {NEWEST}) is unreadable" in resumed.stderr)
    assert f"resumed from step {PREVIOUS}" in resumed.stdout and newest.with_name(newest.name + ".unreadable").is_file()
    want, got = final_weights(reference_run), final_weights(run)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.parametrize("how", ["truncate", "zero", "delete"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(reference_run, tmp_path, capsys, how):
    import torch
    from vit_common.formats.run_folder import read_training_run
    from vit_torch.train.checkpointing import RunCheckpointer

    run = tmp_path / "run"
    shutil.copytree(reference_run / "checkpoints", run / "checkpoints")
    shutil.copy(reference_run / "config.json", run)
    damage(run / "checkpoints" / ckpt(NEWEST), how)
    named = how != "delete"  # a deleted file is simply not there
    _, _, meta = read_training_run(run)  # --init, vit-convert, --teacher
    assert f"(step {PREVIOUS})" in meta["source"] and (f"(step {NEWEST}) is unreadable" in capsys.readouterr().err) == named
    step, state = RunCheckpointer(run, keep=3).restore_latest(rank=0, world=1)
    assert step == PREVIOUS and (f"(step {NEWEST}) is unreadable" in capsys.readouterr().err) == named
    want = torch.load(reference_run / "checkpoints" / ckpt(PREVIOUS), weights_only=True)
    for k, v in want["model"].items():
        assert torch.equal(state["model"][k], v), k
    for path in (run / "checkpoints").glob("step_*.pt"):
        damage(path, "zero")
    with pytest.raises(CheckpointError, match="none of its checkpoints is readable.*move its checkpoints/ folder away"):
        RunCheckpointer(run, keep=3).restore_latest(rank=0, world=1)


def test_resume_with_a_recipe_that_changes_the_saved_state(reference_run, tmp_path, capsys):
    run = copy_finished_run(reference_run, tmp_path / "run")
    (run / "checkpoints" / ckpt(NEWEST)).unlink()  # resume at the step before: 8 steps to go
    args = ARGS + ["--workdir", str(run)]
    deeper = ["--model-args", '{"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0}']
    assert train_cli.main(args + deeper) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "model_args.depth: 2 -> 3" in err and not (run / "final.npz").exists()
    assert train_cli.main(args + ["--ema-decay", "0.99"]) == 0
    out = capsys.readouterr().out
    assert f"resumed from step {PREVIOUS}" in out and "no EMA weights; they start from the restored weights" in out


def test_resume_takes_the_recipes_optimizer_settings_not_the_saved_ones(reference_run, tmp_path, capsys):
    # torch's load_state_dict brings back each saved group's settings; the recipe's rule instead
    # (as in the JAX twin, whose optimizer state holds none). Layer decay switched on is refused:
    # its parameter groups differ.
    import torch

    from vit_common.train.recipe import parse_train_args
    from vit_torch.models import build_model
    from vit_torch.train.checkpointing import load_state
    from vit_torch.train.optim import make_optimizer

    model = build_model(parse_train_args(TINY).model_config())
    old = make_optimizer(model, parse_train_args(TINY + ["--layer-decay", "0.5", "--weight-decay", "0.05"]))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    old.step()
    state = dict(model=model.state_dict(), optimizer=old.state_dict())
    new = make_optimizer(model, parse_train_args(TINY + ["--layer-decay", "0.9", "--weight-decay", "0.1",
                                                         "--beta2", "0.99"]))
    load_state(state, 1, model=model, optimizer=new, ema=None, changed=[], where="test")
    assert sorted({g["lr_scale"] for g in new.param_groups}) == [0.9 ** 3, 0.9 ** 2, 0.9, 1.0]
    assert {g["weight_decay"] for g in new.param_groups} == {0.0, 0.1}
    assert {g["betas"] for g in new.param_groups} == {(0.9, 0.99)}
    assert all(len(new.state[p]) for p in model.parameters())  # and the moments came back
    run = copy_finished_run(reference_run, tmp_path / "run")
    (run / "checkpoints" / ckpt(NEWEST)).unlink()
    assert train_cli.main(ARGS + ["--workdir", str(run), "--layer-decay", "0.75"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "layer_decay: None -> 0.75" in err


def test_bad_steps_that_end_between_two_log_steps_still_stop_the_run(tmp_path, monkeypatch):
    import vit_torch.train as loop
    from vit_common.train.recipe import parse_train_args

    poison_training_batches(monkeypatch, steps=range(2, 5))  # 3 bad steps, then good ones again
    config = parse_train_args(TINY + [*TORCH, "--workdir", str(tmp_path), "--max-bad-steps", "3", "--log-every", "10"])
    with pytest.raises(loop.TrainingStopped, match=r"3 steps in a row had non-finite loss or gradients \(seen at step 10\)"):
        loop.train(config, show_progress=False)
