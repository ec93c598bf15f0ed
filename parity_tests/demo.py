"""Demo: build a model in PyTorch, convert it through the canonical .npz, load it in Flax, and
print how far apart the two frameworks' outputs are, layer by layer.

    python -m parity_tests.demo [--model vit_base_patch16_224] [--batch 2] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from flax import nnx

import vit_jax
import vit_torch
from vit_common import count_params, save_npz
from parity_tests.harness import full_precision, perturb, random_images, run_jax, run_torch
from parity_tests.report import format_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="folder to keep the converted weights in (default: a temporary folder, removed at the end)")
    parser.add_argument("--overwrite", action="store_true", help="replace MODEL.npz if --out already holds one")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch {args.batch}: give at least 1 image")
    if args.out is not None and (args.out / f"{args.model}.npz").exists() and not args.overwrite:
        parser.error(f"{args.out / f'{args.model}.npz'} exists; pass --overwrite to replace it, or another --out")
    if args.out is not None:
        return run(args, args.out)
    with tempfile.TemporaryDirectory(prefix="vit-demo-") as out:  # a ViT-B file is 330 MiB: not left behind
        return run(args, Path(out))


def run(args, out: Path) -> int:
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    model_t = vit_torch.create_model(args.model)
    cfg = model_t.cfg
    # The official init has a zero head (all-zero logits); perturb so every weight carries signal.
    weights = perturb(vit_torch.to_canonical(model_t), args.seed)
    vit_torch.load_canonical_(model_t, weights)
    print(f"1. PyTorch {args.model}: {count_params(cfg):,} parameters ({time.perf_counter() - t0:.1f}s)")

    path = out / f"{args.model}.npz"
    save_npz(path, vit_torch.to_canonical(model_t), cfg)
    print(f"2. converted to the canonical layout: {path} ({path.stat().st_size / 2**20:.0f} MiB)")

    t0 = time.perf_counter()
    model_j = vit_jax.create_model(args.model, checkpoint=path, rngs=nnx.Rngs(args.seed))
    print(f"3. loaded into Flax NNX ({time.perf_counter() - t0:.1f}s)")

    images = random_images(cfg, args.batch, args.seed)
    t0 = time.perf_counter()
    with full_precision():
        out_t, out_j = run_torch(model_t, images), run_jax(model_j, images)
    print(f"4. forward pass in both on {args.batch} images in [-1, 1] ({time.perf_counter() - t0:.1f}s)\n")
    table, ok = format_report(out_j, out_t)
    print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
