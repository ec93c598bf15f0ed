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


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    run_train(workdir, *TORCH)
    return workdir


def test_uninterrupted_run_leaves_everything_people_expect(reference_run):
    names = {p.name for p in reference_run.iterdir()}
    assert {"config.json", "metrics.jsonl", "summary.json", "final.npz", "training_curves.png", "tensorboard",
            "checkpoints"} <= names
    summary = json.loads((reference_run / "summary.json").read_text())
    assert summary["framework"] == "torch" and summary["steps"] == 2 * 44 and 0 < summary["test_accuracy"] <= 1
    from vit_common import read_checkpoint
    ckpt = read_checkpoint(reference_run / "final.npz")
    assert ckpt.config.embed_dim == 32 and ckpt.meta["class_names"][:2] == ["0", "1"]
    assert len(list((reference_run / "checkpoints").glob("step_*.pt"))) == 3  # --keep-checkpoints


def test_sigkill_mid_epoch_then_resume_gives_the_same_parameters(reference_run, tmp_path):
    # Killed right after step 30 (of 44 per epoch), its checkpoint of step 20 on disk.
    killed = subprocess.run(train_cmd(tmp_path, *TORCH, launcher=interrupt_launcher(30, "SIGKILL")), cwd=ROOT,
                            env=train_env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert saved_steps(tmp_path) == [20] and not (tmp_path / "final.npz").exists()
    resumed = run_train(tmp_path, *TORCH)
    assert "resumed from step 20 " in resumed.stdout and "changed recipe" not in resumed.stderr
    want, got = final_weights(reference_run), final_weights(tmp_path)
    assert want.keys() == got.keys()
    for k in want:  # drop path is on: its masks are a function of the step, so they replay exactly
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert train_losses(tmp_path) == train_losses(reference_run)


def test_sigterm_saves_and_exits_cleanly(reference_run, tmp_path):
    # SIGTERM right after step 30, between two checkpoints: that very step is saved, then the run exits 0.
    stopped = subprocess.run(train_cmd(tmp_path, *TORCH, launcher=interrupt_launcher(30, "SIGTERM")), cwd=ROOT,
                             env=train_env(), capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert "SIGTERM: saved step 30 " in stopped.stdout
    assert saved_steps(tmp_path) == [20, 30] and not (tmp_path / "final.npz").exists()
    resumed = run_train(tmp_path, *TORCH)
    assert "resumed from step 30 " in resumed.stdout
    want, got = final_weights(reference_run), final_weights(tmp_path)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)



def test_first_ctrl_c_saves_and_exits_cleanly(tmp_path):
    # Ctrl-C (SIGINT) is handled as SIGTERM is: the step it lands after is saved, exit 0, no traceback
    # (the resume from that save is SIGTERM's, tested above). SIGINT at its default in the child, so
    # Python installs its Ctrl-C handler whatever the test runner ignores.
    stopped = subprocess.run(train_cmd(tmp_path, *TORCH, launcher=interrupt_launcher(30, "SIGINT")), cwd=ROOT, env=train_env(),
                             capture_output=True, text=True, timeout=300,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert "Ctrl-C: saved step 30 " in stopped.stdout and "Traceback" not in stopped.stderr
    assert "Ctrl-C: stopping after this step, once it is saved (Ctrl-C again: stop at once)" in stopped.stderr
    assert saved_steps(tmp_path) == [20, 30] and not (tmp_path / "final.npz").exists()

def test_two_ddp_processes_match_one_process(tmp_path):
    # Drop path off: each process draws its own masks, so with it on the runs agree in law only.
    args = [*TORCH, "--epochs", "1", "--drop-path-rate", "0", "--grad-accum-steps", "2"]
    run_train(tmp_path / "one", *args)
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    run_train(tmp_path / "two", *args, launcher=torchrun)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["devices"] == 2
    one, two = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert len(one) == 44 and two.keys() == one.keys()
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
    result = run_train(tmp_path, *TORCH, "--model", "deit_tiny_distilled_patch16_224", "--teacher",
                       str(reference_run / "final.npz"), "--epochs", "1")
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 44, result.stdout[-500:]


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
    run_train(tmp_path / "jax", "--init", str(reference_run), "--epochs", "1", "--lr", "1e-4")
    run_train(tmp_path / "torch", *TORCH, "--init", str(tmp_path / "jax" / "final.npz"), "--epochs", "1", "--lr", "1e-4")
    first_loss = train_losses(tmp_path / "jax")[1]
    assert first_loss < train_losses(reference_run)[1]  # it starts from the trained weights, not from scratch
    assert json.loads((tmp_path / "torch" / "summary.json").read_text())["test_accuracy"] > 0.5


def test_truncated_newest_checkpoint_is_named_and_the_run_resumes_bit_identical(reference_run, tmp_path):
    run = copy_finished_run(reference_run, tmp_path / "run")
    newest = run / "checkpoints" / "step_000000088.pt"
    damage(newest, "truncate")
    resumed = run_train(run, *TORCH)
    assert resumed.stderr.count("is unreadable") == 1 and f"checkpoint {newest} (step 88) is unreadable" in resumed.stderr
    assert "resumed from step 80" in resumed.stdout and newest.with_name(newest.name + ".unreadable").is_file()
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
    damage(run / "checkpoints" / "step_000000088.pt", how)
    named = how != "delete"  # a deleted file is simply not there
    _, _, meta = read_training_run(run)  # --init, vit-convert, --teacher
    assert "(step 80)" in meta["source"] and ("(step 88) is unreadable" in capsys.readouterr().err) == named
    step, state = RunCheckpointer(run, keep=3).restore_latest(rank=0, world=1)
    assert step == 80 and ("(step 88) is unreadable" in capsys.readouterr().err) == named
    want = torch.load(reference_run / "checkpoints" / "step_000000080.pt", weights_only=True)
    for k, v in want["model"].items():
        assert torch.equal(state["model"][k], v), k
    for path in (run / "checkpoints").glob("step_*.pt"):
        damage(path, "zero")
    with pytest.raises(CheckpointError, match="none of its checkpoints is readable.*move its checkpoints/ folder away"):
        RunCheckpointer(run, keep=3).restore_latest(rank=0, world=1)


def test_resume_with_a_recipe_that_changes_the_saved_state(reference_run, tmp_path, capsys):
    run = copy_finished_run(reference_run, tmp_path / "run")
    (run / "checkpoints" / "step_000000088.pt").unlink()  # resume at 80: 8 steps to go
    args = TINY + [*TORCH, "--workdir", str(run)]
    deeper = ["--model-args", '{"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0}']
    assert train_cli.main(args + deeper) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "model_args.depth: 2 -> 3" in err and not (run / "final.npz").exists()
    assert train_cli.main(args + ["--ema-decay", "0.99"]) == 0
    out = capsys.readouterr().out
    assert "resumed from step 80" in out and "no EMA weights; they start from the restored weights" in out


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
    (run / "checkpoints" / "step_000000088.pt").unlink()
    assert train_cli.main(TINY + [*TORCH, "--workdir", str(run), "--layer-decay", "0.75"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "layer_decay: None -> 0.75" in err


def test_bad_steps_that_end_between_two_log_steps_still_stop_the_run(tmp_path, monkeypatch):
    import vit_torch.train as loop
    from vit_common.train.recipe import parse_train_args

    poison_training_batches(monkeypatch, steps=range(2, 5))  # 3 bad steps, then good ones again
    config = parse_train_args(TINY + [*TORCH, "--workdir", str(tmp_path), "--max-bad-steps", "3", "--log-every", "10"])
    with pytest.raises(loop.TrainingStopped, match=r"3 steps in a row had non-finite loss or gradients \(seen at step 10\)"):
        loop.train(config, show_progress=False)
