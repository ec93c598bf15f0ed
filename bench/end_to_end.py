"""End-to-end `train.py` throughput of both twins on the same recipe: images/s of the train step
and of the whole run (data, evaluation, checkpoints, compilation included), and peak memory.

    python bench/end_to_end.py [--rounds 3] [--frameworks jax torch] -- [train.py arguments]
    python bench/end_to_end.py -- --preset fashion_mnist --epochs 2

Each round runs `train.py` once per twin in a fresh workdir, alternating which twin goes first
(the machine's load drifts), and reads the run's summary.json; peak RSS is the process's
(os.wait4). Medians over rounds, and the ratios of the medians. JAX keeps compiled steps in its
persistent cache, so rounds after the first show what a resumed or repeated run pays.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# --dry-run's recipe: a tiny model, 2 steps.
DRY_RUN_ARGS = ["--preset", "digits", "--epochs", "1", "--train-split", "train[:64]", "--test-split", "test[:32]",
                "--img-size", "8", "--patch-size", "4", "--batch-size", "32",
                "--model-args", '{"embed_dim": 32, "depth": 1, "num_heads": 2}']


def measure(framework: str, train_args: list[str], workdir: Path) -> dict:
    """One run in a child of a fresh helper process, so its peak RSS is its own (wait4)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", framework, str(workdir), "--", *train_args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.splitlines()[-1])


def one(framework: str, workdir: str, train_args: list[str]) -> None:
    """--one: run train.py as a child and print its summary with peak_rss_mib (Linux: KiB)."""
    cmd = [sys.executable, str(ROOT / "train.py"), *train_args, "--framework", framework, "--workdir", workdir]
    with open(os.devnull, "w") as devnull, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=devnull, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            err.seek(0)
            sys.exit(f"{' '.join(cmd)} failed ({status}):\n{err.read()[-3000:]}")
    summary = json.loads((Path(workdir) / "summary.json").read_text())
    summary["peak_rss_mib"] = usage.ru_maxrss / 1024
    print(json.dumps(summary))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ours, train_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frameworks", nargs="+", default=["jax", "torch"], choices=["jax", "torch"])
    parser.add_argument("--one", nargs=2, metavar=("FRAMEWORK", "WORKDIR"), help=argparse.SUPPRESS)
    parser.add_argument("--dry-run", action="store_true", help="one round of a tiny run (2 steps): checks the script")
    args = parser.parse_args(ours)
    if args.one:
        return one(*args.one, train_args)
    if args.dry_run:
        args.rounds = 1
        train_args = [*DRY_RUN_ARGS, *train_args]
    train_args = train_args or ["--preset", "fashion_mnist", "--epochs", "1"]
    results: dict[str, list[dict]] = {f: [] for f in args.frameworks}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        for r in range(args.rounds):
            order = args.frameworks if r % 2 == 0 else args.frameworks[::-1]
            for framework in order:
                s = measure(framework, train_args, Path(tmp) / f"{framework}-{r}")
                results[framework].append(s)
                print(f"round {r + 1} {framework:5s}: step {s['step_images_per_s']:8,.0f} img/s, run "
                      f"{s['images_per_s']:8,.0f} img/s ({s['images_per_s'] / s['step_images_per_s']:.2f}), "
                      f"peak RSS {s['peak_rss_mib']:,.0f} MiB, seconds {s['time_s']}", flush=True)
    print(f"\ntrain.py {' '.join(train_args)}; {args.rounds} rounds, medians; load {os.getloadavg()[0]:.1f}\n")
    print("| twin | step images/s | run images/s | run / step | compile s | peak RSS MiB | test accuracy |")
    print("|---|---|---|---|---|---|---|")
    med = {}
    for framework, runs in results.items():
        m = {k: statistics.median(s[k] for s in runs) for k in ("step_images_per_s", "images_per_s", "peak_rss_mib",
                                                                 "test_accuracy")}
        m["ratio"] = statistics.median(s["images_per_s"] / s["step_images_per_s"] for s in runs)
        m["compile"] = statistics.median(s["time_s"]["compile"] for s in runs)
        med[framework] = m
        print(f"| {framework} | {m['step_images_per_s']:,.0f} | {m['images_per_s']:,.0f} | {m['ratio']:.2f} | "
              f"{m['compile']:.1f} | {m['peak_rss_mib']:,.0f} | {m['test_accuracy']:.2%} |")
    if len(med) == 2:
        j, t = med["jax"], med["torch"]
        print(f"\njax / torch: step {j['step_images_per_s'] / t['step_images_per_s']:.2f}x, run "
              f"{j['images_per_s'] / t['images_per_s']:.2f}x, peak RSS {j['peak_rss_mib'] / t['peak_rss_mib']:.2f}x")


if __name__ == "__main__":
    main()
