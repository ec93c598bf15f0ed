"""The benchmarks' input batch, in numpy alone: a PyTorch child measuring memory must not import jax
(about 170 MiB of resident memory that would count in its peak)."""
from __future__ import annotations

import numpy as np


def random_batch(cfg, batch: int) -> dict[str, np.ndarray]:
    """One vit_data-style batch (NHWC pixels in [-1, 1], labels, one-hot targets), fed to both twins."""
    rng = np.random.default_rng(0)
    data = dict(image=rng.uniform(-1, 1, (batch, cfg.img_size, cfg.img_size, cfg.in_chans)).astype(np.float32),
                label=rng.integers(0, cfg.num_classes, batch).astype(np.int32))
    data["target"] = np.eye(cfg.num_classes, dtype=np.float32)[data["label"]]
    return data
