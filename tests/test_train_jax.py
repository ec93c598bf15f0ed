"""train.py with the JAX engine: resume after SIGKILL, SIGTERM, many devices, guards, errors.

The run-level tests start real `python train.py` processes on a tiny model (digits at 8x8).
"""
import json
import shutil
import signal
import subprocess

import numpy as np
import pytest

import train as train_cli
from tests.train_runs import (ROOT, TINY, copy_finished_run, damage, final_weights as _final, interrupt_launcher,
                              poison_training_batches, run_train as _run, saved_steps, train_cmd as _cmd, train_env as _env,
                              train_losses as _train_losses)
from vit_common import CheckpointError

# Every run of this module, its reference run included: TINY wide enough that FSDP really shards the
# MLP kernels (arrays of >= 2^14 elements), so the reference is also the one-device side of the
# eight-device comparison; on 320 training images, 10 steps per epoch, checkpoints every 4 steps
# (and at epoch ends): two epochs save 4, 8, 10, 12, 16, 20 and keep the last three. One recipe,
# so one compilation (the suite's cache) serves every run and the in-process guard tests.
WIDE = '{"embed_dim": 128, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "global_pool": "token"}'
RUN = ["--train-split", "train[:320]", "--checkpoint-every", "4", "--model-args", WIDE]
ARGS = TINY + RUN  # for train.py's main() in this process
STEPS = 10  # per epoch
NEWEST, PREVIOUS = 20, 16  # the reference run's last two checkpoints


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    _run(workdir, *RUN)
    return workdir


def test_uninterrupted_run_leaves_everything_people_expect(reference_run):
    names = {p.name for p in reference_run.iterdir()}
    assert {"config.json", "metrics.jsonl", "summary.json", "final.npz", "training_curves.png", "tensorboard",
            "checkpoints"} <= names
    summary = json.loads((reference_run / "summary.json").read_text())
    assert summary["steps"] == 2 * STEPS and summary["parameters"] > 0 and 0 < summary["test_accuracy"] <= 1
    assert saved_steps(reference_run) == [12, 16, 20]  # --keep-checkpoints 3
    from vit_common import read_checkpoint
    ckpt = read_checkpoint(reference_run / "final.npz")  # the canonical export loads with no flags
    assert ckpt.config.embed_dim == 128 and ckpt.meta["class_names"][:2] == ["0", "1"]


def _assert_same_final(reference_run, workdir):
    want, got = _final(reference_run), _final(workdir)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_ctrl_c_then_sigterm_then_sigkill_each_resume_to_the_same_parameters(reference_run, tmp_path):
    """One run stopped three ways in turn, each stop resumed by the next process: Ctrl-C, then
    SIGTERM (both save the step they land after and exit 0), then SIGKILL (the newest checkpoint
    on disk is all that is left; the steps after it are replayed). The end is bit-identical to the
    uninterrupted run, and its log has no gaps or repeats."""
    # Ctrl-C (SIGINT) right after step 2, before the first checkpoint: that step is saved, exit 0, no
    # traceback (tests/interrupt_at.py gives the child Python's own Ctrl-C handler, whatever the test
    # runner ignores).
    stopped = subprocess.run(_cmd(tmp_path, *RUN, launcher=interrupt_launcher(2, "SIGINT")), cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert "Ctrl-C: saved step 2 " in stopped.stdout and "Traceback" not in stopped.stderr
    assert "Ctrl-C: stopping after this step, once it is saved (Ctrl-C again: stop at once)" in stopped.stderr
    assert saved_steps(tmp_path) == [2] and not (tmp_path / "final.npz").exists()
    # SIGTERM right after step 6, between two checkpoints: that very step is saved, then the run exits 0.
    stopped = subprocess.run(_cmd(tmp_path, *RUN, launcher=interrupt_launcher(6, "SIGTERM")), cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert "resumed from step 2 " in stopped.stdout and "changed recipe" not in stopped.stderr
    assert "SIGTERM: saved step 6 " in stopped.stdout
    assert saved_steps(tmp_path) == [2, 4, 6] and not (tmp_path / "final.npz").exists()
    # SIGKILL right after step 15, mid-epoch (of 10 per epoch), past the epoch end: its checkpoint of step 12 on disk.
    killed = subprocess.run(_cmd(tmp_path, *RUN, launcher=interrupt_launcher(15, "SIGKILL")), cwd=ROOT, env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "resumed from step 6 " in killed.stdout
    # orbax removes the oldest of four steps in the background once the newest has committed: the
    # kill can land before step 6 is gone.
    kept = saved_steps(tmp_path)
    assert kept[-3:] == [8, 10, 12] and set(kept) <= {6, 8, 10, 12} and not (tmp_path / "final.npz").exists()
    resumed = _run(tmp_path, *RUN)
    assert "resumed from step 12 " in resumed.stdout and "changed recipe" not in resumed.stderr
    _assert_same_final(reference_run, tmp_path)
    assert _train_losses(tmp_path) == _train_losses(reference_run)  # the log has no gaps or repeats


def test_eight_devices_match_one_data_parallel_and_fsdp(reference_run, tmp_path):
    one = _train_losses(reference_run)
    assert len(one) == 2 * STEPS
    for sharding in ("data", "fsdp"):
        # The reference's recipe (the same schedule); checkpoints only at epoch ends, they are not the point here.
        _run(tmp_path / sharding, *RUN, "--checkpoint-every", "1000", "--sharding", sharding, devices=8)
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
    config = parse_train_args(ARGS + ["--workdir", str(tmp_path), "--max-bad-steps", "3", "--log-every", str(log_every)])
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
    (plain := tmp_path / "plain").mkdir()  # a folder, but no run (DST outside it: vit-convert never writes into SRC)
    assert convert([str(plain), str(tmp_path / "x.npz")]) == 2
    assert "neither a train.py workdir nor one of its checkpoint steps" in capsys.readouterr().err


def test_deit_hard_distillation_from_a_teacher(reference_run, tmp_path):
    # In this process: the run itself is the point, not its process.
    args = ARGS + ["--workdir", str(tmp_path), "--model", "deit_tiny_distilled_patch16_224", "--teacher",
                   str(reference_run / "final.npz"), "--epochs", "1"]
    assert train_cli.main(args) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == STEPS


def test_truncated_newest_checkpoint_is_named_and_the_run_resumes_bit_identical(reference_run, tmp_path):
    run = copy_finished_run(reference_run, tmp_path / "run")
    newest = run / "checkpoints" / str(NEWEST)
    damage(max((newest / "state").rglob("d/*"), key=lambda p: p.stat().st_size), "truncate")  # array data
    resumed = _run(run, *RUN)
    assert (resumed.stderr.count("is unreadable") == 1
            and f"checkpoint {newest} (step {NEWEST}) is unreadable" in resumed.stderr)
    assert f"resumed from step {PREVIOUS}" in resumed.stdout and (run / "checkpoints" / f"{NEWEST}.unreadable").is_dir()
    _assert_same_final(reference_run, run)


@pytest.fixture(scope="module")
def intact_states(reference_run):
    """The reference run's last two steps as saved, on a 1-device mesh (the restore template)."""
    import jax
    import orbax.checkpoint as ocp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    replicated = NamedSharding(Mesh(np.asarray(jax.devices()[:1]), ("data",)), P())
    read = lambda s: jax.device_put(ocp.StandardCheckpointer().restore(reference_run / "checkpoints" / s / "state"),  # noqa: E731
                                    replicated)
    return read(str(NEWEST)), read(str(PREVIOUS))


# (file in the newest step folder, damage, must fall back): some orbax files are optional or
# unused (the restore then reads the same values), the others must make the resume fall back.
# The weight readers (--init, vit-convert, --teacher) do not read data/ (the loader's position).
FAULTS = [("state/_METADATA", "truncate", True), ("state/_METADATA", "zero", True), ("state/_METADATA", "delete", True),
          ("state/manifest.ocdbt", "truncate", True), ("state/manifest.ocdbt", "zero", True),
          ("state/manifest.ocdbt", "delete", True), ("state/ocdbt.process_0/d/*", "truncate", True),
          ("state/ocdbt.process_0/d/*", "zero", True), ("state/ocdbt.process_0/d/*", "delete", True),
          ("data/metadata", "zero", True), ("state/_sharding", "truncate", True),
          ("_CHECKPOINT_METADATA", "truncate", False), ("_CHECKPOINT_METADATA", "delete", False),
          ("state/array_metadatas/process_0", "zero", True)]


def test_damaged_parts_of_the_newest_checkpoint_fall_back_to_the_previous_one(reference_run, intact_states, tmp_path,
                                                                              capsys):
    import jax
    from vit_common.formats.run_folder import read_training_run
    from vit_jax.train.checkpointing import RunCheckpointer

    newest, previous = intact_states
    for i, (name, how, falls_back) in enumerate(FAULTS):
        run = tmp_path / str(i)
        shutil.copytree(reference_run / "checkpoints", run / "checkpoints")
        shutil.copy(reference_run / "config.json", run)
        target = max((run / "checkpoints" / str(NEWEST)).glob(name), key=lambda p: p.stat().st_size)  # the largest array file
        damage(target, how)
        weights, _, meta = read_training_run(run)  # --init, vit-convert, --teacher
        err = capsys.readouterr().err
        weights_fall_back = falls_back and not name.startswith("data/")
        assert (f"(step {PREVIOUS})" in meta["source"]) == weights_fall_back, (name, how)
        assert (f"(step {NEWEST}) is unreadable" in err) == weights_fall_back, (name, how)
        checkpointer = RunCheckpointer(run, keep=3)
        step, state, data = checkpointer.restore_latest(newest, changed=[])
        checkpointer.close()
        err = capsys.readouterr().err
        assert step == (PREVIOUS if falls_back else NEWEST) and data["step"] == step, (name, how)
        assert (err.count(f"(step {NEWEST}) is unreadable") == 1) == falls_back, (name, how, err)
        want = previous if falls_back else newest
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(want)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{name} {how}")
    # Nothing readable: say what to do.
    for step in (run / "checkpoints").iterdir():
        if step.name.isdigit():
            damage(step / "state" / "_METADATA", "zero")
    with pytest.raises(CheckpointError, match="none of its checkpoints is readable.*move its checkpoints/ folder away"):
        read_training_run(run)
    with pytest.raises(CheckpointError, match="none of its checkpoints is readable"):
        RunCheckpointer(run, keep=3).restore_latest(newest, changed=[])


def test_resume_with_a_recipe_that_changes_the_saved_state(reference_run, tmp_path, capsys):
    run = copy_finished_run(reference_run, tmp_path / "run")
    shutil.rmtree(run / "checkpoints" / str(NEWEST))  # resume at the step before: 4 steps to go
    args = ARGS + ["--workdir", str(run)]
    # Another model depth: refused before any compute, naming the field.
    deeper = ["--model-args", WIDE.replace('"depth": 2', '"depth": 3')]
    assert train_cli.main(args + deeper) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "model_args.depth: 2 -> 3" in err and "Traceback" not in err
    assert not (run / "final.npz").exists()
    # EMA switched on and drop path off: what fits is restored, the rest starts afresh and is said.
    assert train_cli.main(args + ["--ema-decay", "0.99", "--drop-path-rate", "0"]) == 0
    out = capsys.readouterr().out
    assert f"resumed from step {PREVIOUS}" in out and "no EMA weights; they start from the restored weights" in out
    assert "RNG streams (dropout, drop path): 4 in the checkpoint not used by this recipe, dropped" in out
    assert (run / "final.npz").exists()


def test_resume_with_changed_optimizer_settings_follows_the_new_recipe(reference_run, tmp_path, capsys):
    """README: optimizer settings follow the new recipe on resume, and switching --layer-decay on
    keeps the Adam moments in JAX (the scaling holds no state)."""
    run = copy_finished_run(reference_run, tmp_path / "run")
    shutil.rmtree(run / "checkpoints" / str(NEWEST))  # resume at the step before: 4 steps to go
    new = ["--weight-decay", "0.1", "--beta2", "0.99", "--layer-decay", "0.75"]
    assert train_cli.main(ARGS + ["--workdir", str(run), *new]) == 0
    captured = capsys.readouterr()
    assert f"resumed from step {PREVIOUS}" in captured.out and "cannot resume" not in captured.err
    saved = json.loads((run / "config.json").read_text())["train"]
    assert (saved["weight_decay"], saved["beta2"], saved["layer_decay"]) == (0.1, 0.99, 0.75)
    want, got = _final(reference_run), _final(run)
    assert want.keys() == got.keys()  # the same steps with other settings: other weights
    assert any(not np.array_equal(got[k], want[k]) for k in want)


def test_bad_steps_that_end_between_two_log_steps_still_stop_the_run(tmp_path, monkeypatch):
    import vit_jax.train as loop
    from vit_common.train.recipe import parse_train_args

    poison_training_batches(monkeypatch, steps=range(2, 5))  # 3 bad steps, then good ones again
    config = parse_train_args(ARGS + ["--workdir", str(tmp_path), "--max-bad-steps", "3", "--log-every", "10"])
    with pytest.raises(loop.TrainingStopped, match=r"3 steps in a row had non-finite loss or gradients \(seen at step 10\)"):
        loop.train(config, show_progress=False)
