"""The optimizer, mirroring vit_jax/train/optim.py: AdamW (decoupled decay on kernels only),
warmup + cosine, optional layer-wise learning-rate decay, clipping by global norm, non-finite
steps skipped. (Gradient accumulation happens in the train step.)"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from vit_common.train.layer_decay import layer_ids, layer_scales
from vit_common.train.recipe import TrainConfig

from .fsdp import is_dtensor


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear warmup from 0 to lr, then cosine decay to min_lr, per optimizer update; the same
    numbers as optax.warmup_cosine_decay_schedule in the JAX twin (update 0 runs at lr 0)."""
    total = max(1, config.epochs * steps_per_epoch)
    warmup = max(min(int(config.warmup_epochs * steps_per_epoch), total - 1), 1)
    peak, end = config.lr, config.min_lr

    def schedule(count: int) -> float:
        if count < warmup:
            return peak * count / warmup
        progress = min(count - warmup, total - warmup) / (total - warmup)
        return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * progress))

    return schedule


def decayed_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, not decayed): dense and conv kernels are decayed; biases, norms, tokens and
    position tables are not, as the JAX twin's mask on 'kernel' leaves."""
    kernels = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if id(p) in kernels], [p for p in params if id(p) not in kernels]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with optax's defaults (eps 1e-8 outside the square root); the learning rate is set
    per update by the train step from learning_rate_schedule, times each group's lr_scale. With
    layer decay, one group per (layer, decayed or not), as timm's param_groups_layer_decay."""
    decayed, other = decayed_parameters(model)
    if config.layer_decay is None:
        groups = [dict(params=decayed, weight_decay=config.weight_decay), dict(params=other, weight_decay=0.0)]
    else:
        groups = _layer_decay_groups(model, {id(p) for p in decayed}, config)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, config.beta2), eps=1e-8)


def _layer_decay_groups(model: nn.Module, decayed: set[int], config: TrainConfig) -> list[dict]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ids, _ = layer_ids(n for n, _ in named)
    scales = layer_scales((n for n, _ in named), config.layer_decay)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in named:
        key = (ids[name], id(p) in decayed)
        group = groups.setdefault(key, dict(params=[], weight_decay=config.weight_decay if key[1] else 0.0,
                                            lr_scale=scales[name]))
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's learning rate for this update, times each group's layer-decay factor."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def global_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The norm of all gradients together; under FSDP (sharded DTensors) a replicated DTensor."""
    if grads and is_dtensor(grads[0]):
        return torch.nn.utils.get_total_norm(grads)  # each shard's norm, then a sum over the processes
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else torch.zeros(())


def clip_by_global_norm_(grads: list[torch.Tensor], norm: torch.Tensor, max_norm: float) -> None:
    """optax.clip_by_global_norm: scale every gradient by max_norm / norm when norm >= max_norm."""
    if not norm < max_norm:
        torch._foreach_div_(grads, norm)
        torch._foreach_mul_(grads, max_norm)
