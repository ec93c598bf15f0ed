"""JAX train-step trace and compile time against depth, unrolled blocks vs scanned ones
(--scan-layers): a narrow ViT, so the time is the program's size, not its arithmetic.

    python bench/compile_time.py                          # depths 6 12 24 48
    python bench/compile_time.py --dry-run                # depths 1 2 (checks the script)
    python bench/compile_time.py --remat full             # with activation checkpointing too

The whole train step (vit_jax.train.step: forward, loss, backward, clipping, AdamW) is lowered
(trace) and compiled ahead of time, for a fresh model each time and with the persistent
compilation cache off; the two variants alternate within each depth, and --repeats gives medians.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

NARROW = dict(img_size=32, patch_size=8, embed_dim=64, num_heads=2, num_classes=10)


def trace_and_compile_s(depth: int, scanned: bool, remat: str | None, batch: int = 8) -> tuple[float, float]:
    from bench.train_step import jax_train_setup
    from vit_common import get_config

    cfg = get_config("vit_tiny_patch16_224", depth=depth, **NARROW)
    train, state, data = jax_train_setup(cfg, batch, remat=remat, scan_layers=scanned)
    t0 = time.perf_counter()
    lowered = train.lower(state, data, {})
    t1 = time.perf_counter()
    lowered.compile()
    return t1 - t0, time.perf_counter() - t1


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", help="default 6 12 24 48 (--dry-run: 1 2)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--remat", choices=["full", "dots"], default=None)
    parser.add_argument("--dry-run", action="store_true", help="depths 1 and 2 unless --depths: checks the script")
    args = parser.parse_args(argv)
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    depths = args.depths or ([1, 2] if args.dry_run else [6, 12, 24, 48])
    rows = []
    for depth in depths:
        times = {False: [], True: []}
        for _ in range(args.repeats):
            for scanned in (False, True):  # alternated: the machine's load hits both alike
                times[scanned].append(trace_and_compile_s(depth, scanned, args.remat))
        for scanned in (False, True):
            trace = statistics.median(t for t, _ in times[scanned])
            compile_ = statistics.median(c for _, c in times[scanned])
            rows.append(dict(depth=depth, scanned=scanned, trace_s=trace, compile_s=compile_))
            print(f"  depth {depth} {'scanned' if scanned else 'unrolled'}: trace {trace:.2f} s, compile {compile_:.2f} s",
                  file=sys.stderr, flush=True)
    print(f"\nJAX train step, ViT width {NARROW['embed_dim']}, {NARROW['img_size']} px"
          f"{f', remat {args.remat}' if args.remat else ''}, median of {args.repeats}\n")
    print("| depth | unrolled trace s | unrolled compile s | scanned trace s | scanned compile s |")
    print("|---|---|---|---|---|")
    for depth in depths:
        u, s = (next(r for r in rows if r["depth"] == depth and r["scanned"] == v) for v in (False, True))
        print(f"| {depth} | {u['trace_s']:.2f} | {u['compile_s']:.2f} | {s['trace_s']:.2f} | {s['compile_s']:.2f} |")
    return rows


if __name__ == "__main__":
    main()
