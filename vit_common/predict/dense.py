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


class DenseFeatures:
    """Mixin for the twins' models with patch tokens (VisionTransformer, Eva): timm's
    forward_intermediates(indices=...) path and DINOv2's get_intermediate_layers, written once for
    both frameworks. Needs `blocks`, `embed(x) -> (tokens, grid)`, `norm` (None where the model
    norms after pooling) and `cfg`; the twin sets GRID_FMT (its image layout) and `dense_output`
    ((tokens, prefix count, grid, output_fmt) -> (patches, prefix)). A model whose blocks take more
    than the tokens (Eva's rotary tables) says so in `block_args(grid)`."""

    GRID_FMT: str

    def block_args(self, grid: tuple[int, int]) -> tuple:
        return ()

    def final_norm(self, x):
        return self.norm(x) if self.norm is not None else x

    def dense_intermediates(self, x, indices, norm, output_fmt, return_prefix_tokens, intermediates_only, stop_early):
        taken = take_indices(len(self.blocks), indices)
        x, grid = self.embed(x)
        args = self.block_args(grid)
        out = []
        for i, block in enumerate(self.blocks):
            if stop_early and i > max(taken):
                break
            x, _ = block(x, *args)
            if i in taken:
                patches, prefix = self.dense_output(self.final_norm(x) if norm else x, self.cfg.num_prefix_tokens, grid,
                                                    output_fmt)
                out.append((patches, prefix) if return_prefix_tokens else patches)
        return out if intermediates_only else (self.final_norm(x), out)

    def get_intermediate_layers(self, x, n=1, reshape: bool = False, return_class_token: bool = False,
                                norm: bool = True):
        """DINOv2's get_intermediate_layers: a tuple of the chosen blocks' patch tokens (an int n:
        the last n blocks), normed by default, registers dropped; on the grid in the twin's image
        layout if `reshape`, else (B, N, C); each paired with its class token (B, C) if
        `return_class_token`."""
        if not self.cfg.class_token and return_class_token:
            raise ValueError("return_class_token=True needs a model with a class token")
        outs = self.forward_intermediates(x, indices=n, norm=norm, output_fmt=self.GRID_FMT if reshape else "NLC",
                                          return_prefix_tokens=True, intermediates_only=True)
        return tuple((p, prefix[:, 0]) if return_class_token else p for p, prefix in outs)
