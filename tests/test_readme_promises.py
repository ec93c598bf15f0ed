"""What the README promises and no other test ran: the demo command, the console scripts as pip
installs them, each benchmark script's dry run, and JAX's persistent compilation cache."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_runs import ROOT, train_env


def test_the_demo_command_runs(capsys):
    from parity_tests.demo import main

    # The README's `python -m parity_tests.demo` as written (its defaults: vit_base_patch16_224),
    # through its main() in this process: a child would only add starting torch and jax again.
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "1. PyTorch vit_base_patch16_224" in out, out[-3000:]
    written = re.search(r"converted to the canonical layout: (\S+) ", out).group(1)
    assert written.endswith("vit_base_patch16_224.npz") and not Path(written).parent.exists()  # 330 MiB not left behind


@pytest.mark.parametrize("script", ["vit-convert", "vit-parity", "vit-predict"])
def test_console_scripts_are_installed_and_run(script):
    path = Path(sys.executable).parent / script  # where pip put the entry point of pyproject.toml
    assert path.exists(), f"{script} is not installed beside {sys.executable}: pip install -e ."
    result = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"usage: {script}"), result.stdout[:500]


def _bench(name):
    sys.path.insert(0, str(ROOT))
    return __import__(f"bench.{name}", fromlist=["main"]).main


def test_train_step_bench_dry_run(capsys):
    results = _bench("train_step")(["--dry-run"])
    assert set(results) == {"jax (jit)", "torch (eager)"} and all(r > 0 for r in results.values())
    assert "images/s" in capsys.readouterr().out


def test_jax_variants_bench_dry_run(capsys):
    _bench("jax_variants")(["--dry-run"])
    out = capsys.readouterr().out
    assert "PyTorch time / JAX time" in out and "  before " in out and "  after " in out


def test_loader_bench_dry_run(capsys):
    rates = _bench("loader")(["--dry-run"])
    assert set(rates) == {(0, 0), (1, 0), (2, 0)} and all(r > 0 for r in rates.values())
    assert "loader: digits" in capsys.readouterr().out


def test_end_to_end_bench_dry_run_and_jax_runs_keep_compiled_steps_in_the_persistent_cache(tmp_path):
    """The end-to-end benchmark's dry run (a JAX and a PyTorch train.py run), its runs on
    train.py's default cache (under XDG_CACHE_HOME, ~/.cache): the JAX run fills it, and a repeated
    run of the same recipe finds its steps there and compiles nothing new."""
    sys.path.insert(0, str(ROOT))
    from bench.end_to_end import DRY_RUN_ARGS

    env = {k: v for k, v in train_env().items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    cache = tmp_path / "xdg" / "twin-vit" / "jax"
    result = subprocess.run([sys.executable, "bench/end_to_end.py", "--dry-run"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| jax |" in result.stdout and "| torch |" in result.stdout and "jax / torch: step" in result.stdout

    entries = [sorted(p.name for p in cache.iterdir())]
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *DRY_RUN_ARGS, "--workdir", str(tmp_path / "again")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    entries.append(sorted(p.name for p in cache.iterdir()))
    assert any("train_fn" in name for name in entries[0]) and any("eval_fn" in name for name in entries[0]), entries[0]
    assert entries[1] == entries[0]  # every step came from the cache
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["steps"] == 2


def test_the_demo_keeps_an_existing_file_unless_told(tmp_path, capsys):
    from parity_tests.demo import main

    kept = tmp_path / "vit_tiny_patch16_224.npz"
    kept.write_bytes(b"precious")
    with pytest.raises(SystemExit) as stop:
        main(["--model", "vit_tiny_patch16_224", "--out", str(tmp_path)])
    assert stop.value.code == 2 and "pass --overwrite to replace it" in capsys.readouterr().err
    assert kept.read_bytes() == b"precious"
