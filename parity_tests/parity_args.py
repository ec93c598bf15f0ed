"""vit-parity: prove a checkpoint (ViT, Swin or Eva) computes the same function in Flax and in PyTorch.

    vit-parity CHECKPOINT [--images DIR] [--batch N] [--dtype float32|bfloat16] [--model NAME]
               [--act-layer ACT] [--act-gap ACT]

Loads the checkpoint (any format or pretrained name vit-convert reads) into both twins, feeds both the same
preprocessed images (from DIR, or seeded random pixels in [-1, 1]), and prints every block's
hidden state and attention map, the pooled features and the logits with their max absolute error
and their relative error, max|a-b| / max(1, max|b|), and the top-1 agreement. The last line says
PASS or FAIL and what to do. Exits 1 on FAIL, 2 on bad input.

float32 judges every tensor: each within 1e-5 (the contract; a larger gap has always been a bug).
bfloat16 judges as the parity suite does: the logits (the pooled features of a model without a
head) within 1e-2 up to 2 blocks, growing as sqrt(depth / 2) beyond (bf16 rounding adds up over
the residual branches: 2.4e-2 at depth 12), and the same top-1 in both twins and in float32
wherever float32 decides top-1 by more than bf16 resolves. Hidden states and attention maps are
shown, not judged: bf16 keeps 8 significant bits, and a sharp attention map moves by more.

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

from vit_common.config.vit import ACT_LAYERS
from vit_common.formats.hub import checkpoint_argument


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
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch {args.batch}: give at least 1 image")
    return args


def main(argv=None) -> int:
    """The console script: the arguments are checked (and --help answered) before jax and torch load."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from parity_tests.parity_cli import run

    return run(args)
