"""Training-step speed of vit_jax against vit_torch (ViT, DeiT or Swin) on the same config, side by side.

    python bench/train_step.py --suite [--rounds 5] [--isa native|avx2]      # issue 26's three CPU configs
    python bench/train_step.py [--model vit_tiny_patch16_224] [--img-size 224] [--batch 32]
                               [--steps N] [--rounds 5] [--dtype float32|bfloat16] [--model-args JSON]
    python bench/train_step.py --suite --dry-run                              # tiny models, one round (CI)

One step = forward, soft-target cross-entropy, backward, the non-finite guard, clipping by
global norm and the scheduled AdamW update, for the same model, batch and precision in both
frameworks: each twin's own train step, as train.py runs it (jax: vit_jax.train.step, jitted and
donated; torch: vit_torch.train.step, eager, and on a torch.compile'd model with --compile).
All steps are built first, then timed in rounds; each round times every config's twins in turn,
alternating which twin goes first, so load from elsewhere falls on both. Per config it prints
the median over rounds of each twin's per-round median step time and of the per-round ratio
JAX/PyTorch (images/s over images/s, > 1: JAX is faster), with the CPU model, date, load average
and the instruction-set settings. On a GPU it also prints model FLOPs utilisation; on a CPU read
the ratio. --isa avx2 restarts the process with XLA, ATen, oneDNN and MKL capped at AVX2.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere
from vit_common.cpu_malloc import tune_malloc

tune_malloc()  # before jax or torch start their threads (VIT_MALLOC_TUNING=0 to time without)
import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

import vit_torch
from bench.batch import random_batch
from vit_common import count_params, get_config
from vit_common.train.recipe import TrainConfig
from vit_jax.models import attention as cpu_attention, build_model
from vit_jax.train.optim import make_optimizer
from vit_jax.train.step import Steps, initial_state, make_mesh, state_shardings
from vit_torch.train.optim import learning_rate_schedule as torch_schedule, make_optimizer as torch_optimizer
from vit_torch.train.step import Steps as TorchSteps, to_torch


def time_steps(step, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def jax_train_setup(cfg, batch: int, dtype=None, remat: str | None = None, scan_layers: bool = False):
    """(the jitted train step, its sharded state, one sharded batch), built as train.py builds them;
    shared by this script, bench/memory.py and bench/compile_time.py.
    remat: activation checkpointing's policy (full | dots); scan_layers: the blocks scanned."""
    model = build_model(cfg, **({} if dtype is None else dict(dtype=dtype)), rngs=nnx.Rngs(0),
                        **(dict(scan_layers=True) if scan_layers else {}))
    model.train()
    if remat:
        model.set_grad_checkpointing(True, remat)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rest_template, params = nnx.to_pure_dict(rest), nnx.to_pure_dict(params)
    tx = make_optimizer(TrainConfig(clip_grad_norm=1.0), steps_per_epoch=1000)
    state = initial_state(params, rest_template, tx)
    mesh = make_mesh()
    shardings = state_shardings(mesh, state, fsdp=False)
    state = jax.device_put(state, shardings)
    train, _ = Steps(graphdef, tx, 1, None, rest_template).compile(
        shardings, NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))
    data = jax.device_put(random_batch(cfg, batch), NamedSharding(mesh, P("data")))
    return train, state, data


def jax_step(cfg, batch: int, dtype, remat: str | None = None, scan_layers: bool = False):
    """One train step of the JAX twin, as a no-argument callable (see jax_train_setup)."""
    train, state, data = jax_train_setup(cfg, batch, dtype, remat, scan_layers)
    box = [state]

    def step():
        box[0], metrics = train(box[0], data, {})
        jax.block_until_ready(metrics["loss"])

    return step


def torch_step(cfg, batch: int, dtype, compile_model: bool):
    """vit_torch's own train step, built as train.py --framework torch builds it: soft-target
    cross-entropy, backward, the non-finite guard, clipping by global norm, scheduled AdamW."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # the same float32 work as JAX's 'highest'
    model = vit_torch.build_model(cfg).to(device)
    config = TrainConfig(clip_grad_norm=1.0)
    steps = TorchSteps(torch.compile(model) if compile_model else model, torch_optimizer(model, config),
                       torch_schedule(config, steps_per_epoch=1000), 1, config.clip_grad_norm,
                       torch.bfloat16 if dtype == jnp.bfloat16 else None)
    data = to_torch(random_batch(cfg, batch), device)

    def step():
        metrics = steps.train(data)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return metrics

    return step


def model_flops_per_image(cfg) -> int:
    """Forward + backward: ~6 FLOPs per weight per token the weight touches (attention's T^2 terms,
    norms and biases aside). Swin's weights touch fewer tokens stage by stage."""
    if cfg.arch != "swin":
        return 6 * count_params(cfg) * (cfg.num_patches + cfg.num_prefix_tokens)
    macs = cfg.in_chans * cfg.patch_size**2 * cfg.embed_dim * cfg.grid_size**2 + cfg.num_features * cfg.num_classes
    for i, depth in enumerate(cfg.depths):
        dim, tokens = cfg.stage_dim(i), cfg.stage_resolution(i) ** 2
        macs += depth * (4 * dim * dim + 2 * dim * cfg.mlp_dim(i)) * tokens  # qkv + proj, the MLP
        macs += 2 * dim * dim * tokens if i else 0  # patch merging: 4C/2 -> C
    return 6 * macs


# Issue 26's three CPU configs (the README's Benchmarks commands): name -> model, options, batch, steps per round.
SUITE = {
    "ViT-Ti/16 224 px": ("vit_tiny_patch16_224", dict(img_size=224), 16, 3),
    "ViT-Ti 32 px, patch 4": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=4), 64, 5),
    "Fashion-MNIST ViT": ("vit_tiny_patch16_224", dict(img_size=28, embed_dim=64, depth=6, num_heads=4, mlp_ratio=2,
                                                       patch_size=4, num_classes=10, in_chans=1), 128, 5),
}
DRY_RUN = dict(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=10)  # any config, shrunk
# Each capped at AVX2 by its own switch (checked in docs/cpu-performance.md): XLA's code generator;
# ATen's kernels (torch.backends.cpu.get_cpu_capability() says AVX2); oneDNN (ONEDNN_VERBOSE=1 says
# "isa:Intel AVX2"); MKL, which runs PyTorch's float32 matmuls (MKL_VERBOSE=1 says "AVX2").
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
ISA_ENV = ("XLA_FLAGS", *AVX2_ENV)


def restart_with_avx2(argv: list[str]) -> None:
    """Re-run this command with every library capped at AVX2 (the settings must precede their start-up)."""
    env = dict(os.environ, **AVX2_ENV)
    flags = env.get("XLA_FLAGS", "")
    if "--xla_cpu_max_isa" not in flags:
        env["XLA_FLAGS"] = f"{flags} --xla_cpu_max_isa=AVX2".strip()
    env["VIT_BENCH_ISA"] = "avx2"
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], env)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def describe_machine() -> str:
    isa = ", ".join(f"{k}={os.environ[k]!r}" for k in ISA_ENV if k in os.environ) or "none (native)"
    return (f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {jax.devices()[0].platform}; "
            f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
            f"ISA settings: {isa}; torch CPU capability {torch.backends.cpu.get_cpu_capability()}; JAX CPU "
            f"attention {'on' if cpu_attention.CPU_ATTENTION else 'off'} (VIT_JAX_CPU_ATTENTION)\n"
            f"load average at start: {os.getloadavg()[0]:.1f} (1 min)")


def main(argv=None) -> dict:
    """--suite: {config: {twin: JAX/PyTorch-style ratio to torch eager}}; one config: {twin: images/s}."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", action="store_true", help="issue 26's three CPU configs (ignores the model options)")
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--model-args", type=json.loads, default={})
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per twin per round (suite: 3-5)")
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds; medians over them")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--isa", choices=("native", "avx2"), default="native",
                        help="avx2: cap XLA, ATen, oneDNN and MKL at AVX2 (emulates an AVX2-only CPU)")
    parser.add_argument("--dry-run", action="store_true", help="tiny models, one round of one step: checks the bench runs")
    args = parser.parse_args(argv)
    if args.isa == "avx2" and os.environ.get("VIT_BENCH_ISA") != "avx2":
        restart_with_avx2(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.dry_run:
        args.rounds, args.steps = 1, 1
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    if args.suite:
        plan = {name: (model, dict(opts), batch, args.steps or steps) for name, (model, opts, batch, steps) in SUITE.items()}
    else:
        plan = {args.model: (args.model, dict(img_size=args.img_size, **args.model_args), args.batch, args.steps or 10)}
    print(describe_machine())
    print(f"{args.dtype}, {args.rounds} rounds, alternating the twins; medians over rounds"
          + (" (dry run: tiny models)" if args.dry_run else ""))
    runs, configs = {}, {}
    for name, (model, opts, batch, steps) in plan.items():
        if args.dry_run:
            opts, batch = {**opts, **DRY_RUN}, 2
        cfg = configs[name] = get_config(model, **opts)
        twins = {"jax (jit)": jax_step(cfg, batch, dtype), "torch (eager)": torch_step(cfg, batch, dtype, False)}
        if args.compile:
            twins["torch (compile)"] = torch_step(cfg, batch, dtype, True)
        for step in twins.values():
            time_steps(step, 1 if args.dry_run else 3)  # compile and warm up
        runs[name] = (twins, batch, steps)
    times = {name: {twin: [] for twin in twins} for name, (twins, _, _) in runs.items()}
    for r in range(args.rounds):
        for name, (twins, batch, steps) in runs.items():
            order = list(twins) if r % 2 == 0 else list(reversed(twins))
            for twin in order:
                times[name][twin].append(statistics.median(time_steps(twins[twin], steps)))
    results, rates = {}, {}
    for name, (twins, batch, steps) in runs.items():
        cfg, t = configs[name], times[name]
        base = t["torch (eager)"]
        print(f"{name}: {plan[name][0]} img {cfg.img_size}, patch {cfg.patch_size}, depth {cfg.depth}, "
              f"batch {batch}, {count_params(cfg):,} parameters, {steps} steps x {args.rounds} rounds")
        results[name] = {}
        for twin, per_round in t.items():
            ratio = statistics.median(b / s for b, s in zip(base, per_round))
            ms = statistics.median(per_round)
            results[name][twin], rates[twin] = ratio, batch / ms
            flops = model_flops_per_image(cfg) * batch / ms / 1e12
            print(f"  {twin:16s} {batch / ms:10,.1f} images/s  ({ms * 1e3:7.1f} ms/step, {flops:.2f} TFLOP/s model)"
                  f"  {ratio:5.2f}x torch eager  (rounds: {' '.join(f'{b / s:.2f}' for b, s in zip(base, per_round))})")
    print(f"load average at end: {os.getloadavg()[0]:.1f} (1 min)")
    print("JAX/PyTorch-eager (median of per-round ratios): "
          + "; ".join(f"{name} {r['jax (jit)']:.2f}x" for name, r in results.items()))
    return results if args.suite else rates


if __name__ == "__main__":
    main()
