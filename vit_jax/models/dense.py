"""Dense features for the models with patch tokens (VisionTransformer, Eva): timm's
forward_intermediates(indices=...) and DINOv2's get_intermediate_layers, written once for both."""
from __future__ import annotations

import jax

from vit_common.predict.dense import take_indices

from .layers import dense_output


class DenseFeatures:
    """Mixin: needs `blocks`, `embed(x) -> (tokens, grid)`, `norm` and `cfg`; a model whose blocks
    take more than the tokens (Eva's rotary tables) says so in `block_args(grid)`."""

    GRID_FMT = "NHWC"  # the twin's image layout: get_intermediate_layers(reshape=True) returns it

    def block_args(self, grid: tuple[int, int]) -> tuple:
        return ()

    def final_norm(self, x: jax.Array) -> jax.Array:
        return self.norm(x) if self.norm is not None else x  # None under fc_norm (the twin's nn.Identity)

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
                patches, prefix = dense_output(self.final_norm(x) if norm else x, self.cfg.num_prefix_tokens, grid,
                                               output_fmt)
                out.append((patches, prefix) if return_prefix_tokens else patches)
        return out if intermediates_only else (self.final_norm(x), out)

    def get_intermediate_layers(self, x: jax.Array, n=1, reshape: bool = False, return_class_token: bool = False,
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
