"""How a model runs its stack of encoder blocks (twin of vit_jax/models/blocks.py): one after
another, each under activation checkpointing (torch.utils.checkpoint) if asked. The JAX twin can
also scan stacked blocks; PyTorch has no counterpart to compile, so it does not."""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def _block_output(block, x, *args):
    return block(x, *args)[0]


def run_blocks(blocks, x: torch.Tensor, *args, checkpointing: bool = False) -> torch.Tensor:
    """x through every block (args, e.g. rotary tables, are the same for each); only the output.
    Checkpointed blocks keep their input alone and run again in the backward pass, with the RNG
    state of the first run (so dropout and drop-path draw the same masks)."""
    recompute = checkpointing and torch.is_grad_enabled()
    for block in blocks:
        x = checkpoint(_block_output, block, x, *args, use_reentrant=False) if recompute else _block_output(block, x, *args)
    return x
