"""Dense features, framework-free: which blocks a caller asks for (timm's and DINOv2's rules)."""
from __future__ import annotations

from typing import Sequence


def take_indices(depth: int, indices: int | Sequence[int] | None) -> list[int]:
    """Block indices, ascending as the blocks run: an int n means the last n blocks (timm's
    forward_intermediates, DINOv2's get_intermediate_layers); a sequence names blocks, negative
    ones counted from the end; None means every block."""
    if indices is None:
        return list(range(depth))
    if isinstance(indices, int):
        if not 0 < indices <= depth:
            raise ValueError(f"asked for the last {indices} blocks of a model with {depth}")
        return list(range(depth - indices, depth))
    taken = []
    for i in indices:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise ValueError(f"block index {i} is out of range for a model with {depth} blocks")
        taken.append(j)
    return taken


OUTPUT_FMTS = ("NCHW", "NHWC", "NLC")


def check_output_fmt(fmt: str) -> None:
    if fmt not in OUTPUT_FMTS:
        raise ValueError(f"output_fmt must be one of {OUTPUT_FMTS}, got {fmt!r}")
