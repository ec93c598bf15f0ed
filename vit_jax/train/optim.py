"""The optimizer: AdamW (decoupled decay on kernels only), warmup + cosine, optional layer-wise
learning-rate decay, clipping and a guard that skips non-finite steps. (Gradient accumulation
happens inside the train step.)"""
from __future__ import annotations

import jax
import optax

from vit_common.train.layer_decay import layer_scales
from vit_common.train.recipe import TrainConfig


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """Linear warmup from 0 to lr, then cosine decay to min_lr, per optimizer step."""
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(int(config.warmup_epochs * steps_per_epoch), total - 1)
    return optax.warmup_cosine_decay_schedule(0.0, config.lr, max(warmup, 1), total, end_value=config.min_lr)


def decay_mask(params):
    """Weight decay on dense and conv kernels only: not biases, norms, tokens or position tables."""
    def is_kernel(path, _):
        return getattr(path[-1], "key", getattr(path[-1], "name", None)) == "kernel"
    return jax.tree_util.tree_map_with_path(is_kernel, params)


def path_name(path) -> str:
    """A parameter's tree path as its timm-style name: blocks/0/attn/qkv/kernel -> 'blocks.0.attn.qkv.kernel'."""
    return ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def scale_by_layer_decay(rate: float) -> optax.GradientTransformation:
    """Each parameter's update times its layer's factor (vit_common.train.layer_decay). Placed
    after AdamW, it scales the whole step, weight decay included, as a per-layer learning rate
    does in the PyTorch twin's parameter groups. Stateless: the optimizer state is unchanged."""
    def update(updates, state, params=None):
        del params
        scales = layer_scales([path_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(updates)], rate)
        return jax.tree_util.tree_map_with_path(lambda p, u: u * scales[path_name(p)], updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(config, steps_per_epoch)
    parts = [optax.clip_by_global_norm(config.clip_grad_norm)] if config.clip_grad_norm else []
    parts.append(optax.adamw(schedule, b1=0.9, b2=config.beta2, weight_decay=config.weight_decay, mask=decay_mask))
    if config.layer_decay is not None:
        parts.append(scale_by_layer_decay(config.layer_decay))
    tx = optax.chain(*parts)
    # A step whose gradients are not finite is skipped (and counted) instead of poisoning the
    # run. optax must never let one through (it would after max_consecutive_errors); the loop
    # reads the count at each log step and stops the run at max_bad_steps in a row.
    return optax.apply_if_finite(tx, max_consecutive_errors=2**30)
