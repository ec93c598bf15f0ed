"""The accelerator check, one command: ViT-S/16 and ViT-B/16 at 224 px in bf16, both twins (JAX jit,
PyTorch eager and torch.compile), then the large-model options: ViT-L/16 with activation
checkpointing (both twins) and ViT-B/16 with scanned blocks (JAX). Train-step images/s, model FLOP/s
and MFU against the chip's dense bf16 peak, peak device memory, the first step's time (JAX: trace
and compile; torch.compile: its compilation) and the input pipeline's rate; prints a markdown table
for docs/benchmarks.md.

    python bench/gpu.py                 # on a GPU or TPU host (about 5 minutes)
    python bench/gpu.py --dry-run       # anywhere: a tiny model, two steps (CI runs this)

MFU = model FLOP/s (6 x parameters x tokens per image, bench/train_step.py) / the peak in PEAK_TFLOPS,
found by device name; an unknown device gets FLOP/s only. Peak memory is the device allocator's
(JAX: peak bytes in use, which only grows, so models run smallest first; torch: max allocated);
on a CPU, the process's peak RSS.
"""
from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave device memory to torch too

import argparse  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

# Dense bf16 TFLOP/s by device name (first match wins, so specific names come first).
PEAK_TFLOPS = (("H100 PCIe", 756), ("H200", 989), ("H100", 989), ("GH200", 989), ("A100", 312), ("L40S", 362),
               ("L4", 121), ("A10", 125), ("TPU v6 lite", 918), ("TPU v5 lite", 197), ("TPU v5p", 459),
               ("TPU v5", 459), ("TPU v4", 275))
MODELS = ("vit_small_patch16_224", "vit_base_patch16_224")
# (model, what it exercises): the large-model options of docs/large-models.md.
LARGE = (("vit_large_patch16_224", "remat"), ("vit_base_patch16_224", "scan"))
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10)


def peak_tflops(device_name: str) -> float | None:
    return next((peak for name, peak in PEAK_TFLOPS if name.lower() in device_name.lower()), None)


def time_rate(step, batch: int, warmup: int, steps: int) -> tuple[float, float]:
    """(median images/s of `steps` calls after `warmup`, seconds of the first call: compilation)."""
    t = time.perf_counter()
    step()
    first = time.perf_counter() - t
    for _ in range(warmup - 1):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times), first


def torch_train_step(cfg, batch: int, compile_backend: str | None, grad_checkpointing: bool = False):
    """vit_torch's own train step (vit_torch.train.step.Steps: bf16 autocast, clipping, AdamW)."""
    import torch

    import vit_torch
    from vit_common.train.recipe import TrainConfig
    from vit_torch.train.optim import learning_rate_schedule, make_optimizer
    from vit_torch.train.step import Steps

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = vit_torch.build_model(cfg).to(device).train()
    model.set_grad_checkpointing(grad_checkpointing)
    config = TrainConfig(clip_grad_norm=1.0)
    optimizer = make_optimizer(model, config)
    forward = torch.compile(model, backend=compile_backend) if compile_backend else model
    steps = Steps(forward, optimizer, learning_rate_schedule(config, 1000), 1, 1.0, torch.bfloat16)
    labels = torch.randint(0, cfg.num_classes, (batch,), device=device)
    data = dict(image=torch.rand(batch, cfg.in_chans, cfg.img_size, cfg.img_size, device=device) * 2 - 1,
                label=labels, target=torch.nn.functional.one_hot(labels, cfg.num_classes).float())

    def step():
        steps.train(data)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def torch_peak_memory(reset: bool = False) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
        return None
    return torch.cuda.max_memory_allocated() / 2**30


def jax_peak_memory() -> float | None:
    import jax

    stats = jax.local_devices()[0].memory_stats()
    return stats["peak_bytes_in_use"] / 2**30 if stats and "peak_bytes_in_use" in stats else None


def host_peak_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux -> GiB


def device_name() -> str:
    import jax

    device = jax.local_devices()[0]
    return device.device_kind if device.platform != "cpu" else "cpu"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny model, 2 steps: checks the script on a CPU")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--no-large", action="store_true", help="skip ViT-L/16 with remat and ViT-B/16 scanned")
    args = parser.parse_args(argv)

    import jax.numpy as jnp

    from bench.loader import loader_images_per_s
    from bench.train_step import jax_step, model_flops_per_image
    from vit_common import count_params, get_config
    from vit_common.train.recipe import parse_train_args

    batch, steps, warmup = (4, 2, 1) if args.dry_run else (args.batch, args.steps, 3)
    name = device_name()
    peak = peak_tflops(name)
    print(f"device: {name}; dense bf16 peak: {f'{peak} TFLOP/s' if peak else 'unknown (FLOP/s only)'}"
          f"{'; DRY RUN (tiny model)' if args.dry_run else ''}", flush=True)
    plan = []  # (model, cfg, twin, build, memory)
    for model in args.models:
        cfg = get_config(model, **(TINY if args.dry_run else {}))
        # A CPU's torch.compile needs a C++ toolchain and minutes: the dry run traces with the eager backend.
        plan += [(model, cfg, "jax (jit)", lambda cfg=cfg: jax_step(cfg, batch, jnp.bfloat16), jax_peak_memory),
                 (model, cfg, "torch (eager)", lambda cfg=cfg: torch_train_step(cfg, batch, None), torch_peak_memory),
                 (model, cfg, "torch.compile",
                  lambda cfg=cfg: torch_train_step(cfg, batch, "eager" if args.dry_run else "inductor"),
                  torch_peak_memory)]
    if not args.no_large:
        for model, option in LARGE:
            cfg = get_config(model, **(TINY if args.dry_run else {}))
            if option == "remat":
                plan += [(model, cfg, "jax (jit), remat", lambda cfg=cfg: jax_step(cfg, batch, jnp.bfloat16, remat="full"),
                          jax_peak_memory),
                         (model, cfg, "torch (eager), remat",
                          lambda cfg=cfg: torch_train_step(cfg, batch, None, grad_checkpointing=True), torch_peak_memory)]
            else:
                plan.append((model, cfg, "jax (jit), scanned",
                             lambda cfg=cfg: jax_step(cfg, batch, jnp.bfloat16, scan_layers=True), jax_peak_memory))
    rows = []
    for model, cfg, twin, build, memory in plan:
        flops = model_flops_per_image(cfg)
        torch_peak_memory(reset=True)
        rate, first = time_rate(build(), batch, warmup, steps)
        tflops = flops * rate / 1e12
        mem = memory()
        rows.append(dict(model=model, params=count_params(cfg), twin=twin, images_per_s=rate, tflops=tflops,
                         mfu=tflops / peak if peak else None, memory_gib=mem if mem is not None else host_peak_rss(),
                         memory_kind="device" if mem is not None else "host RSS", first_step_s=first))
        print(f"  {model} {twin}: {rate:,.1f} images/s, {tflops:.2f} TFLOP/s, first step {first:.1f} s", flush=True)

    loader_args = ["--dataset", "digits", "--img-size", str(32 if args.dry_run else 224), "--batch-size", str(batch),
                   "--random-resized-crop", "true", "--hflip", "true", "--randaugment", "2,9"]
    loader_config = parse_train_args(loader_args)
    workers = 0 if args.dry_run else min(8, os.cpu_count() or 1)  # the dry run spares starting processes
    loader_rate = loader_images_per_s(loader_config, 2 if args.dry_run else 50, num_workers=workers,
                                      num_threads=0 if workers else 1, rounds=1)

    print(f"\n{name}, bf16, batch {batch}, median of {steps} steps"
          f"{' (dry run: tiny model)' if args.dry_run else ''}\n")
    print("| model | twin | images/s | model TFLOP/s | MFU | peak memory GiB | first step s (compile) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        print(f"| {r['model']} ({r['params'] / 1e6:.1f}M) | {r['twin']} | {r['images_per_s']:,.1f} | {r['tflops']:.2f} "
              f"| {mfu} | {r['memory_gib']:.2f} ({r['memory_kind']}) | {r['first_step_s']:.1f} |")
    print(f"\nloader (vit_data, digits at {loader_config.img_size} px, random-resized-crop + flip + RandAugment 2,9, "
          f"{workers or 'no'} grain worker processes): {loader_rate:,.0f} images/s")
    return rows


if __name__ == "__main__":
    main()
