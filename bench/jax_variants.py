"""The JAX twin's CPU speed-ups one by one: ratio PyTorch step time / JAX step time per variant,
all variants in one process, alternating round by round, medians over rounds.

    python bench/jax_variants.py [train_step.py's model options] [--rounds 5] [--steps 3]

Variants: 'before' (none of the speed-ups), 'after' (all of them), and 'after' less each one.
The malloc setting (vit_common/cpu_malloc.py) is process-wide and must precede jax's threads:
compare a run with VIT_MALLOC_TUNING=0 against one without.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

from bench.train_step import jax_step, torch_step  # first: it tunes malloc before jax starts

import jax.numpy as jnp
from flax import nnx
from vit_common import get_config
from vit_jax.models import attention, fast_ops, layers, swin
from vit_jax.train.step import Steps

SPEEDUPS = ("layernorm", "patch_matmul", "no_scan", "softmax_jvp", "cpu_attention")


@contextlib.contextmanager
def traced_as(on: set[str]):
    """Trace the JAX step with only the speed-ups in `on` (the others back to the plain formulation)."""
    saved = (fast_ops.FastLayerNorm.__call__, layers.patch_matmul, swin.patch_matmul,
             Steps.scan_single_batch, Steps.softmax_custom_jvp, attention.CPU_ATTENTION)
    if "layernorm" not in on:
        fast_ops.FastLayerNorm.__call__ = nnx.LayerNorm.__call__
    if "patch_matmul" not in on:
        layers.patch_matmul = swin.patch_matmul = lambda conv, x: conv(x)
    Steps.scan_single_batch = "no_scan" not in on
    Steps.softmax_custom_jvp = "softmax_jvp" in on
    attention.CPU_ATTENTION = "cpu_attention" in on  # opt-in outside this bench (VIT_JAX_CPU_ATTENTION=1)
    try:
        yield
    finally:
        (fast_ops.FastLayerNorm.__call__, layers.patch_matmul, swin.patch_matmul,
         Steps.scan_single_batch, Steps.softmax_custom_jvp, attention.CPU_ATTENTION) = saved


def median_time(step, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--model-args", type=json.loads, default={})
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated variant names to run (default: all)")
    parser.add_argument("--base", default="before", help="the variant the others' JAX times are divided by")
    parser.add_argument("--dry-run", action="store_true", help="a tiny model, before and after, one step: checks the script")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.img_size, args.batch, args.steps, args.rounds, args.only = 16, 2, 1, 1, "before,after"
        args.model_args = dict(patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=10)
    cfg = get_config(args.model, img_size=args.img_size, **args.model_args)
    variants = {"before": set(), "after": set(SPEEDUPS)}  # 'before' also predates the CPU attention
    variants.update({f"after - {s}": set(SPEEDUPS) - {s} for s in SPEEDUPS})
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only.split(",")}
    steps = {}
    for name, on in variants.items():
        with traced_as(on):
            steps[name] = jax_step(cfg, args.batch, jnp.float32)
            steps[name]()  # trace and compile now, under this variant
    torch = torch_step(cfg, args.batch, jnp.float32, False)
    ratios, jax_times = ({name: [] for name in variants} for _ in range(2))
    for _ in range(args.rounds):
        for name, on in variants.items():
            jax_times[name].append(median_time(steps[name], args.steps))
            ratios[name].append(median_time(torch, args.steps) / jax_times[name][-1])
    # PyTorch eager suffers most when other processes share the cores (its OpenMP threads wait on
    # each other), so also report each JAX variant against 'before' (JAX alone, same rounds).
    base = jax_times.get(args.base)
    print(f"{args.model} img {cfg.img_size} batch {args.batch}: PyTorch time / JAX time, "
          f"median of {args.rounds} rounds (min-max){f'; JAX {args.base} / JAX variant' if base else ''}")
    for name, r in ratios.items():
        speedup = f"  {statistics.median(b / t for b, t in zip(base, jax_times[name])):5.2f}x" if base else ""
        print(f"  {name:26s} {statistics.median(r):5.2f}x  ({min(r):.2f}-{max(r):.2f}){speedup}")


if __name__ == "__main__":
    main()
