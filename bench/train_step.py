"""Training-step throughput (images/s) of vit_jax and vit_torch (ViT, DeiT or Swin) on the same config, side by side.

    python bench/train_step.py [--model vit_tiny_patch16_224] [--img-size 224] [--batch 32]
                               [--steps 20] [--dtype float32|bfloat16] [--model-args JSON]

One step = forward, soft-target cross-entropy, backward, the non-finite guard, clipping by
global norm and the scheduled AdamW update, for the same model, batch and precision in both
frameworks: each twin's own train step, as train.py runs it (jax: vit_jax.train.step, jitted and
donated; torch: vit_torch.train.step, eager, and on a torch.compile'd model with --compile). Reports images/s and the JAX/PyTorch ratio; on a GPU also model
FLOPs utilisation. Absolute numbers only mean something on a GPU; on a CPU read the ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from vit_common.cpu_malloc import tune_malloc

tune_malloc()  # before jax or torch start their threads (VIT_MALLOC_TUNING=0 to time without)
import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

import vit_torch
from vit_common import count_params, get_config
from vit_common.train.recipe import TrainConfig
from vit_jax.models import build_model
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


def random_batch(cfg, batch: int) -> dict[str, np.ndarray]:
    """One vit_data-style batch (NHWC pixels in [-1, 1], labels, one-hot targets), fed to both twins."""
    rng = np.random.default_rng(0)
    data = dict(image=rng.uniform(-1, 1, (batch, cfg.img_size, cfg.img_size, cfg.in_chans)).astype(np.float32),
                label=rng.integers(0, cfg.num_classes, batch).astype(np.int32))
    data["target"] = np.eye(cfg.num_classes, dtype=np.float32)[data["label"]]
    return data


def jax_step(cfg, batch: int, dtype):
    model = build_model(cfg, dtype=dtype, rngs=nnx.Rngs(0))
    model.train()
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--model-args", type=json.loads, default={})
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--dry-run", action="store_true", help="a tiny model, batch 2, one step: checks the script")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.img_size, args.batch, args.steps = 16, 2, 1
        args.model_args = dict(patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=10)
    cfg = get_config(args.model, img_size=args.img_size, **args.model_args)
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    runs = {"jax (jit)": jax_step(cfg, args.batch, dtype), "torch (eager)": torch_step(cfg, args.batch, dtype, False)}
    if args.compile:
        runs["torch (compile)"] = torch_step(cfg, args.batch, dtype, True)
    flops = model_flops_per_image(cfg)
    print(f"{args.model} img {cfg.img_size} batch {args.batch} {args.dtype}, {count_params(cfg):,} parameters, "
          f"on {jax.devices()[0].platform}")
    results = {}
    for name, step in runs.items():
        time_steps(step, 1 if args.dry_run else 3)  # compile and warm up
        median = statistics.median(time_steps(step, args.steps))
        results[name] = args.batch / median
        print(f"  {name:16s} {results[name]:10,.1f} images/s  ({median * 1e3:.1f} ms/step, "
              f"{flops * results[name] / 1e12:.2f} TFLOP/s model)")
    base = results["torch (eager)"]
    for name, rate in results.items():
        print(f"  {name:16s} {rate / base:5.2f}x torch eager")
    return results


if __name__ == "__main__":
    main()
