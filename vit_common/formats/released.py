"""What the released-format writers share: plain state-dict files and the checks that a model fits a format."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..atomic import atomic_write
from ..errors import CheckpointError


def save_state_dict(dst: Path, state_dict: Mapping[str, np.ndarray], fmt: str, wrapper: str | None = None) -> None:
    """A state dict as its project saves it: a torch pickle (.pth / .pt, inside {wrapper: ...}
    when the project wraps it) or a .safetensors file; no config rides along, because the
    project's own loader (torch.hub, load_state_dict(strict=True)) would trip over it."""
    dst = Path(dst)
    arrays = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
    if dst.suffix == ".safetensors":
        from safetensors.numpy import save

        blob = save(arrays)
        atomic_write(dst, lambda f: f.write(blob))
    elif dst.suffix in (".pth", ".pt"):
        import torch

        obj: Any = {k: torch.from_numpy(v) for k, v in arrays.items()}
        atomic_write(dst, lambda f: torch.save({wrapper: obj} if wrapper else obj, f))
    else:
        raise CheckpointError(f"--to {fmt} writes .pth, .pt or .safetensors, not {dst.suffix or 'a folder'}")


def require(fmt: str, cfg, checks: Mapping[str, bool]) -> None:
    """Raise naming every property of cfg the format cannot store ({what it needs: whether cfg has it})."""
    missing = [need for need, ok in checks.items() if not ok]
    if missing:
        raise CheckpointError(f"--to {fmt} cannot hold this model ({cfg.describe() if hasattr(cfg, 'describe') else cfg}): "
                              f"the format needs {'; '.join(missing)}")
