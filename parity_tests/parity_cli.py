"""vit-parity: prove a checkpoint (ViT, Swin or Eva) computes the same function in Flax and in PyTorch.

    vit-parity CHECKPOINT [--images DIR] [--batch N] [--dtype float32|bfloat16] [--model NAME]
               [--act-layer ACT] [--act-gap ACT]

Loads the checkpoint (any format or pretrained name vit-convert reads) into both twins, feeds both the same
preprocessed images (from DIR, or seeded random pixels in [-1, 1]), and prints every block's
hidden state and attention map, the pooled features and the logits with their max absolute and
relative errors, and the top-1 agreement. Exits 1 above tolerance (float32: 1e-5; bfloat16:
1e-2 and identical top-1), 2 on bad input.

The activation is part of the function: --act-layer runs both twins with another one than the
checkpoint's (a Google .npz without a config or --model runs gelu_tanh, as Google's code does;
timm runs the same weights with exact gelu). --act-gap ACT also runs the PyTorch twin with ACT
and prints how far that lands from the checkpoint's activation (the gap a port that mixes them
carries); it is shown, not judged.
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
from vit_common.config.vit import ACT_LAYERS
from vit_common.formats import LAYOUT_NAMES
from parity_tests.harness import (
    BF16_TOL, FLOAT32_TOL, Outputs, full_precision, non_finite, random_images, rel_error, run_jax, run_torch,
)
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
    parser.add_argument("--act-layer", choices=ACT_LAYERS, help="run both twins with this MLP activation")
    parser.add_argument("--act-gap", choices=ACT_LAYERS, metavar="ACT",
                        help="also show how far the outputs move with this activation instead (one of "
                             f"{', '.join(ACT_LAYERS)})")
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
    overrides = {k: v for k, v in (("num_heads", args.num_heads), ("act_layer", args.act_layer)) if v}
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
    if args.act_gap and cfg.arch != "vit":
        print(f"vit-parity: error: --act-gap applies to ViTs; this {cfg.arch} model's MLP activation is fixed by "
              "its architecture", file=sys.stderr)
        return 2
    print(f"checkpoint {args.checkpoint} ({LAYOUT_NAMES[ckpt.meta['source_layout']]}): {describe(cfg)}, "
          f"{count_params(cfg):,} parameters")
    for note in ckpt.meta.get("notes", []):
        print(f"note: {note}")
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
    if args.act_gap:
        print(act_gap(cfg, ckpt.weights, images, out_t, args.act_gap))
    return 0 if ok else 1


def act_gap(cfg, weights, images: np.ndarray, out: Outputs, other: str) -> str:
    """How far the PyTorch twin's last hidden state, pooled features and logits move when its
    activation is `other` instead of the checkpoint's (float32, the same weights and images)."""
    model = vit_torch.load_canonical_(vit_torch.build_model(cfg.replace(act_layer=other)), weights).eval()
    with full_precision():
        moved = run_torch(model, images)
    rows = [("last hidden", out.hidden_states[-1], moved.hidden_states[-1]), ("pooled", out.pooled, moved.pooled)]
    if out.logits is not None:
        rows.append(("logits", out.logits, moved.logits))
    lines = [f"\nactivation gap: act_layer={cfg.act_layer} (the checkpoint's) vs {other} (torch, float32)",
             f"{'tensor':<22} {'max abs err':>12} {'rel err':>10}", "-" * 46]
    lines += [f"{name:<22} {float(np.abs(a - b).max()):12.2e} {rel_error(b, a):10.2e}" for name, a, b in rows]
    if out.logits is not None:
        agree = float(np.mean(out.logits.argmax(-1) == moved.logits.argmax(-1)))
        lines.append(f"top-1 agreement {cfg.act_layer} vs {other}: {agree:.0%}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
