"""How a model runs its stack of encoder blocks (twin of vit_torch/models/blocks.py): one after
another, each under activation checkpointing (nnx.remat) if asked, or scanned (big_vision's
scan=True): one module whose parameters carry a leading depth axis, applied with nnx.scan, so
trace and compile time no longer grow with depth."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from .layers import DropPath

# What a checkpointed block keeps for the backward pass. "full": only its input (everything
# else is recomputed); "dots": also the outputs of its matmuls without batch dimensions (the
# dense layers), so only the cheap elementwise work and attention are recomputed.
REMAT_POLICIES = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


class DropRate(nnx.Variable):
    """A scanned block's stochastic-depth rate: data (one per layer), not a constant of the graph."""


def _block_output(block, x, *args):
    return block(x, *args)[0]


def block_fn(remat: str | None, scanned: bool = False):
    """f(block, x, *args) -> the block's output, checkpointed under the named policy if asked."""
    if remat is None:
        return _block_output
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat policy must be one of {sorted(REMAT_POLICIES)}, got {remat!r}")
    # Inside a scan the loop already stops XLA from merging recomputation with the forward pass.
    return nnx.remat(_block_output, policy=REMAT_POLICIES[remat], prevent_cse=not scanned)


def run_blocks(blocks, x, *args, remat: str | None = None, scanned: bool = False):
    """x through every block (args, e.g. rotary tables, are the same for each); only the output."""
    step = block_fn(remat, scanned)
    if not scanned:
        for block in blocks:
            x = step(block, x, *args)
        return x

    @nnx.scan(in_axes=(0, nnx.Carry) + (None,) * len(args), out_axes=nnx.Carry)
    def scan(block, x, *args):
        return step(block, x, *args)

    return scan(blocks, x, *args)


def run_blocks_with_intermediates(blocks, x, *args, attention: bool, scanned: bool):
    """(output, every block's output, every block's attention weights if asked) as lists."""
    if not scanned:
        hidden, maps = [], []
        for block in blocks:
            x, weights = block(x, *args, return_weights=attention)
            hidden.append(x)
            if attention:
                maps.append(weights)
        return x, hidden, maps

    @nnx.scan(in_axes=(0, nnx.Carry) + (None,) * len(args), out_axes=(nnx.Carry, 0))
    def scan(block, x, *args):
        x, weights = block(x, *args, return_weights=attention)
        return x, (x, weights if attention else jnp.zeros(()))

    x, (hidden, maps) = scan(blocks, x, *args)
    depth = hidden.shape[0]
    return x, [hidden[i] for i in range(depth)], ([maps[i] for i in range(depth)] if attention else [])


def stack_blocks(blocks: list, drop_path_rates: list[float]):
    """Blocks of one structure -> one block whose every array has a leading axis, block i at index i.
    The blocks are built alike (the same static stochastic-depth rate, so one graph); each layer's
    own rate becomes a DropRate, data scanned with the parameters."""
    if max(drop_path_rates, default=0.0) > 0:
        for block, rate in zip(blocks, drop_path_rates):
            for _, module in nnx.iter_graph(block):
                if isinstance(module, DropPath):
                    module.rate = nnx.data(DropRate(jnp.float32(rate)))  # was a static float
    graphdefs, states = zip(*(nnx.split(block) for block in blocks))
    if any(g != graphdefs[0] for g in graphdefs[1:]):
        raise ValueError("scanned blocks must share one structure")
    return nnx.merge(graphdefs[0], jax.tree.map(lambda *xs: jnp.stack(xs), *states))
