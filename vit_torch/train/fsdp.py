"""--sharding fsdp under torchrun: FSDP2 (torch.distributed.fsdp.fully_shard), the PyTorch
counterpart of the JAX twin's FSDP mesh. Each block is one unit (its parameters are gathered for
its forward and backward, then freed), the rest of the model the root unit; parameters, gradients
and AdamW state are DTensors sharded along dim 0 over the processes."""
from __future__ import annotations

import sys

import torch
from torch import nn

from ..models.eva import EvaBlock
from ..models.layers import Block
from ..models.swin import SwinBlock

BLOCKS = (Block, EvaBlock, SwinBlock)


def shard_model_(model: nn.Module, device: torch.device, world: int) -> nn.Module:
    """Shard `model` in place over the `world` processes (every rank calls this, the same model)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world,))
    for module in model.modules():
        if isinstance(module, BLOCKS):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def is_dtensor(t) -> bool:
    """Whether t is a DTensor. Importing torch.distributed.tensor takes 2 s (sympy); a process that
    shards nothing never imports it, and then holds no DTensor."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's part of a (possibly sharded) tensor."""
    return t.to_local() if is_dtensor(t) else t


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole value of a (possibly sharded or partial) tensor; a collective for a DTensor."""
    return t.full_tensor() if is_dtensor(t) else t


def local_bytes(tensors) -> int:
    """Bytes this process holds of these tensors (its shards only)."""
    return sum(local(t).numel() * t.element_size() for t in tensors)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return local_bytes(v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.ndim)
