"""vit-parity: prove a checkpoint (ViT, Swin or Eva) computes the same function in Flax and in PyTorch.

    vit-parity CHECKPOINT [--images DIR] [--batch N] [--dtype float32|bfloat16] [--model NAME]

Loads the checkpoint (any format or pretrained name vit-convert reads) into both twins, feeds both the same
preprocessed images (from DIR, or seeded random pixels in [-1, 1]), and prints every block's
hidden state and attention map, the pooled features and the logits with their max absolute and
relative errors, and the top-1 agreement. Exits 1 above tolerance (float32: 1e-5; bfloat16:
1e-2 and identical top-1), 2 on bad input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import vit_jax
import vit_torch
from vit_common import CheckpointError, ConfigError, WeightsMismatchError, count_params, read_checkpoint
from vit_common.formats.hub import checkpoint_argument
from vit_common.cli.vit_convert import describe
from vit_common.formats import LAYOUT_NAMES
from parity_tests.harness import BF16_TOL, FLOAT32_TOL, full_precision, non_finite, random_images, run_jax, run_torch
from parity_tests.report import format_report

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="vit-parity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=checkpoint_argument,
                        help="a checkpoint file or run folder, or pretrained weights: timm:NAME[.TAG] or hf-hub:ORG/REPO")
    parser.add_argument("--images", type=Path, help="folder of images (default: seeded random pixels)")
    parser.add_argument("--batch", type=int, default=4, help="how many images (default 4)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--model", help="preset, where the checkpoint carries no config and shapes cannot tell")
    parser.add_argument("--num-heads", type=int, help="heads, where the weights cannot say (timm, HF)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def load_images(folder: Path, cfg, meta: dict, batch: int) -> tuple[np.ndarray, str]:
    from vit_common.predict.preprocess import load_image, options_from_meta, preprocess

    if not folder.is_dir():
        raise CheckpointError(f"--images {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:batch]
    if not files:
        raise CheckpointError(f"--images {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    x = preprocess([load_image(p) for p in files], cfg.img_size, in_chans=cfg.in_chans, **options_from_meta(meta))
    return x, f"{len(files)} images from {folder}"


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = {"num_heads": args.num_heads} if args.num_heads else {}
    try:
        ckpt = read_checkpoint(args.checkpoint, args.model, **overrides)
        cfg = ckpt.config
        if args.images is not None:
            images, source = load_images(args.images, cfg, ckpt.meta, args.batch)
        else:
            images, source = random_images(cfg, args.batch, args.seed), f"{args.batch} random images in [-1, 1] (seed {args.seed})"
    except (CheckpointError, ConfigError, WeightsMismatchError, ValueError) as e:
        print(f"vit-parity: error: {e}", file=sys.stderr)
        return 2
    bf16 = args.dtype == "bfloat16"
    model_t = vit_torch.load_canonical_(vit_torch.build_model(cfg), ckpt.weights).eval()
    model_j = vit_jax.load_canonical_(
        vit_jax.build_model(cfg, dtype=jnp.bfloat16 if bf16 else jnp.float32, rngs=nnx.Rngs(0)), ckpt.weights)
    model_j.eval()
    arch = (describe(cfg) if cfg.arch != "vit" else
            f"embed_dim={cfg.embed_dim} depth={cfg.depth} num_heads={cfg.num_heads} img_size={cfg.img_size} "
            f"patch_size={cfg.patch_size} num_classes={cfg.num_classes}")
    print(f"checkpoint {args.checkpoint} ({LAYOUT_NAMES[ckpt.meta['source_layout']]}): {arch}, "
          f"{count_params(cfg):,} parameters")
    print(f"inputs: {source}; {args.dtype} ({'bf16 compute, float32 parameters' if bf16 else 'full precision'})\n")
    with full_precision():
        out_t = run_torch(model_t, images, dtype=torch.bfloat16 if bf16 else None)
        out_j = run_jax(model_j, images)
    # rel_error is inf wherever either side is non-finite, so the table's worst line names the
    # first such tensor; say which twin produced it.
    table, ok = format_report(out_j, out_t, tol=BF16_TOL if bf16 else FLOAT32_TOL)
    print(table)
    for twin, out in (("jax", out_j), ("torch", out_t)):
        if names := non_finite(out):
            print(f"{twin} outputs NaN or inf in: {', '.join(names)} -> FAIL")
            ok = False
    if bf16 and out_t.logits is not None and not np.array_equal(out_t.logits.argmax(-1), out_j.logits.argmax(-1)):
        print("top-1 predictions differ in bfloat16 -> FAIL")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
