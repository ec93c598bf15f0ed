"""One training step and one evaluation step, mirroring vit_jax/train/step.py."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .fsdp import full
from .optim import clip_by_global_norm_, global_norm, set_learning_rate


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1)


def to_torch(batch: dict, device: torch.device) -> dict:
    """A vit_data batch (NHWC numpy) -> tensors on `device`, images NCHW."""
    out = {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in batch.items()}
    out["image"] = out["image"].permute(0, 3, 1, 2).contiguous()
    out["label"] = out["label"].long()
    return out


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of a step's dropout and drop-path masks: a function of the step, so a resumed run
    draws exactly the masks the uninterrupted one would have, with no RNG state to store."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)


@dataclasses.dataclass
class Steps:
    """train(batch) -> metrics updates the model in place; evaluate(batch) -> summed metrics.
    `model` may be wrapped in DistributedDataParallel (it then averages the gradients) or sharded
    with FSDP2 (its gradients are then sharded DTensors, averaged by reduce-scatter)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Callable[[int], float]
    accum: int
    clip_grad_norm: float | None
    autocast_dtype: torch.dtype | None  # bf16 autocast, or None for float32
    ema: nn.Module | None = None
    ema_decay: float | None = None
    teacher: nn.Module | None = None
    updates: int = 0  # optimizer updates applied (skipped steps do not count): the schedule's clock
    bad_steps: int = 0  # non-finite steps in a row
    bad_run: int = 0  # the longest such run so far: the loop reads it at log steps, so none slips between two

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def loss(self, images, labels, targets):
        with self._autocast(images.device):
            out = self.model(images)
            if isinstance(out, tuple):  # distilled model in training: (class logits, distillation logits)
                cls_logits, dist_logits = out
                if self.teacher is not None:  # DeiT hard distillation: the teacher's argmax is the label
                    with torch.no_grad():
                        hard = F.one_hot(self.teacher(images).argmax(-1), dist_logits.shape[-1]).float()
                    loss = 0.5 * soft_cross_entropy(cls_logits, targets) + 0.5 * soft_cross_entropy(dist_logits, hard)
                else:
                    loss = 0.5 * (soft_cross_entropy(cls_logits, targets) + soft_cross_entropy(dist_logits, targets))
                logits = (cls_logits + dist_logits) / 2
            else:
                logits = out
                loss = soft_cross_entropy(logits, targets)
        correct = (logits.argmax(-1) == labels).sum()
        return loss.mean(), correct

    def train(self, batch: dict) -> dict:
        """Forward and backward over `accum` micro-batches, then one guarded AdamW update."""
        self.model.train()
        micro = [torch.chunk(batch[k], self.accum) for k in ("image", "label", "target")]
        # Sums stay on the device: the loop reads them at log steps only.
        loss_sum = torch.zeros((), device=batch["image"].device)
        correct = torch.zeros((), dtype=torch.long, device=batch["image"].device)
        for i, (images, labels, targets) in enumerate(zip(*micro)):
            last = i == self.accum - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.model, "no_sync") else self.model.no_sync()
            with sync:
                loss, c = self.loss(images, labels, targets)
                (loss / self.accum).backward()
            loss_sum += loss.detach().float()
            correct += c
        params = [p for p in self.model.parameters() if p.grad is not None]
        grads = [p.grad for p in params]
        norm = global_norm(grads)
        if torch.isfinite(full(norm)):  # else the update is skipped and counted, as optax.apply_if_finite
            if self.clip_grad_norm:
                clip_by_global_norm_(grads, norm, self.clip_grad_norm)
            set_learning_rate(self.optimizer, self.schedule(self.updates))
            self.optimizer.step()
            self.updates += 1
            self.bad_steps = 0
        else:
            self.bad_steps += 1
            self.bad_run = max(self.bad_run, self.bad_steps)
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            with torch.no_grad():
                d = self.ema_decay
                for e, p in zip(self.ema.parameters(), self.model.parameters()):
                    e.mul_(d).add_(p.detach(), alpha=1 - d)
        return dict(loss=loss_sum / self.accum, correct=correct, grad_norm=full(norm).detach(), bad_steps=self.bad_steps,
                    bad_run=self.bad_run)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: dict) -> dict:
        model.eval()
        with self._autocast(batch["image"].device):
            logits = model(batch["image"])
        loss = soft_cross_entropy(logits, F.one_hot(batch["label"], logits.shape[-1]).float())
        mask = batch["mask"]
        return dict(loss_sum=torch.where(mask, loss, 0.0).sum().double(),
                    correct=((logits.argmax(-1) == batch["label"]) & mask).sum(),
                    count=mask.sum())
