"""Vision Transformer and DeiT (Flax NNX twin of vit_torch/models/vit.py). Images are NHWC."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from vit_common import ViTConfig, fixed_pos_embed


from .dense import DenseFeatures
from .blocks import run_blocks, run_blocks_with_intermediates, stack_blocks
from .layers import (AttentionPoolLatent, Block, Buffer, PatchEmbed, PreLogits, make_norm,
                     resample_pos_embed, zeros)


class ViTOutput(NamedTuple):
    logits: jax.Array | None  # (B, K); for distilled models the average of both heads
    pooled: jax.Array  # features fed to the head: (B, F), or (B, 2, C) class + distillation
    hidden_states: list[jax.Array]  # every block's output, (B, T, C)
    attentions: list[jax.Array]  # every block's attention weights, (B, heads, T, T)
    pool_attention: jax.Array | None = None  # the MAP probe's attention over the tokens, (B, heads, 1, T)


class VisionTransformer(DenseFeatures, nnx.Module):
    def __init__(self, cfg: ViTConfig, *, dtype=jnp.float32, rngs: nnx.Rngs, scan_layers: bool = False):
        """`dtype` is the compute dtype; parameters stay float32 (bf16 mixed precision).
        scan_layers: the blocks' parameters stacked on a leading depth axis and run with nnx.scan
        (vit_jax/models/blocks.py); the same initial weights and function as the unrolled model."""
        self.cfg = cfg
        self.dtype = dtype
        self.scan_layers = scan_layers
        self.grad_checkpointing = None  # or the remat policy: see set_grad_checkpointing
        c = cfg.embed_dim
        norm = lambda kind=cfg.norm_layer: make_norm(kind, c, cfg.norm_eps, dtype, rngs)
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, c, bias=not cfg.pre_norm,
                                      norm=norm(cfg.embed_norm_layer) if cfg.embed_norm_layer else None,
                                      dynamic=cfg.dynamic_img_size, pad=cfg.dynamic_img_pad, dtype=dtype, rngs=rngs)
        self.cls_token = nnx.Param(jnp.zeros((1, 1, c))) if cfg.class_token else None
        self.dist_token = nnx.Param(jnp.zeros((1, 1, c))) if cfg.distilled else None
        self.reg_token = (nnx.Param(1e-6 * jax.random.normal(rngs.params(), (1, cfg.reg_tokens, c)))
                          if cfg.reg_tokens else None)
        if cfg.pos_embed == "learn":
            self.pos_embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, cfg.num_pos_embed, c)))
        else:
            self.pos_embed = Buffer(jnp.asarray(fixed_pos_embed(cfg)))
        self.pos_drop = nnx.Dropout(cfg.pos_drop_rate, rngs=rngs)
        self.norm_pre = norm() if cfg.pre_norm else None
        rates = cfg.drop_path_rates()
        if scan_layers:
            self.blocks = stack_blocks([Block(cfg, max(rates), dtype=dtype, rngs=rngs) for _ in rates], rates)
        else:
            self.blocks = nnx.List([Block(cfg, rate, dtype=dtype, rngs=rngs) for rate in rates])
        self.norm = None if cfg.has_fc_norm else norm()
        self.attn_pool = (AttentionPoolLatent(c, cfg.num_heads, cfg.mlp_dim, norm=cfg.norm_layer, eps=cfg.norm_eps,
                                              act=cfg.act_layer, dtype=dtype, rngs=rngs)
                          if cfg.global_pool == "map" else None)
        self.fc_norm = norm() if cfg.has_fc_norm else None
        self.pre_logits = (PreLogits(c, cfg.representation_size, dtype=dtype, rngs=rngs)
                           if cfg.representation_size else None)
        self.head_drop = nnx.Dropout(cfg.drop_rate, rngs=rngs)  # timm's drop_rate: the head's only
        self.head = self._zero_linear(cfg.num_features, cfg.num_classes, rngs)
        self.head_dist = self._zero_linear(c, cfg.num_classes, rngs) if cfg.distilled else None

    def _zero_linear(self, dim: int, num_classes: int, rngs: nnx.Rngs):
        if not num_classes:
            return None
        # A zero head, as in Google's ViT.
        return nnx.Linear(dim, num_classes, kernel_init=zeros, bias_init=zeros, dtype=self.dtype, rngs=rngs)

    def set_grad_checkpointing(self, enable: bool = True, policy: str = "full") -> None:
        """Activation checkpointing per block (timm's name): "full" keeps each block's input only,
        "dots" its matmul outputs too (vit_jax/models/blocks.py, REMAT_POLICIES)."""
        self.grad_checkpointing = policy if enable else None

    # ---------------------------------------------------------------------------------------------
    def embed(self, x: jax.Array) -> tuple[jax.Array, tuple[int, int]]:
        """Patches, prefix tokens [class, distillation, registers] and position embedding, then
        norm_pre (CLIP): (tokens (B, T, C), the patch grid (H', W'))."""
        grid = self.patch_embed.grid(*x.shape[1:3])
        # Matmuls run in self.dtype; the residual stream stays float32, as under torch.autocast
        # (measured on DeiT-S: an all-bf16 stream drifts 1.2e-2 from float32, this one 0.8e-2).
        x = self.patch_embed(x.astype(self.dtype)).astype(jnp.float32)
        b = x.shape[0]
        tokens = (self.cls_token, self.dist_token, self.reg_token)
        prefix = [jnp.broadcast_to(t[...], (b, *t.shape[1:])) for t in tokens if t is not None]
        pos = self.pos_embed_at(grid)
        if self.cfg.no_embed_class:  # big_vision: the position embedding covers the patches only
            x = jnp.concatenate(prefix + [x + pos], axis=1)
        else:  # vision_transformer / timm: it covers the prefix tokens too
            x = jnp.concatenate(prefix + [x], axis=1) + pos
        x = self.pos_drop(x)
        return (self.norm_pre(x).astype(jnp.float32) if self.norm_pre is not None else x), grid

    def pos_embed_at(self, grid: tuple[int, int]) -> jax.Array:
        """The position table on the patch grid: as stored at the model's own grid, else resized by
        the checkpoint source's rule (cfg.pos_embed_interp), which needs dynamic_img_size."""
        cfg = self.cfg
        if grid != (cfg.grid_size, cfg.grid_size) and not cfg.dynamic_img_size:
            raise ValueError(f"the images give a {grid[0]}x{grid[1]} patch grid, the position table is "
                             f"{cfg.grid_size}x{cfg.grid_size}: create the model with dynamic_img_size=True")
        prefix = 0 if cfg.no_embed_class else cfg.num_prefix_tokens
        return resample_pos_embed(self.pos_embed[...], prefix, cfg.grid_size, grid, cfg.pos_embed_interp)

    def pool(self, x: jax.Array) -> jax.Array:
        """Normalised tokens (B, T, C) -> the features fed to the head."""
        return self.pool_with_weights(x)[0]

    def pool_with_weights(self, x: jax.Array, return_weights: bool = False):
        """(features fed to the head, the MAP probe's attention if asked and the model has one)."""
        cfg = self.cfg
        weights = None
        if cfg.global_pool == "map":
            x, weights = self.attn_pool(x, return_weights)
        elif cfg.global_pool == "avg":
            x = x[:, cfg.num_prefix_tokens:].mean(axis=1)
        elif cfg.distilled:
            return x[:, :2], None
        else:
            x = x[:, 0]
        if self.fc_norm is not None:
            x = self.fc_norm(x)
        if self.pre_logits is not None:
            x = self.pre_logits(x)
        return x, weights

    def head_logits(self, pooled: jax.Array):
        """Logits; distilled models give (class, distillation) logits in training, their mean otherwise."""
        if self.head is None:
            return pooled
        if self.head_dist is None:
            return self.head(self.head_drop(pooled))
        cls_logits = self.head(self.head_drop(pooled[:, 0]))
        dist_logits = self.head_dist(self.head_drop(pooled[:, 1]))
        if not self.head_drop.deterministic:  # training mode
            return cls_logits, dist_logits
        return (cls_logits + dist_logits) / 2

    def forward_features(self, x: jax.Array) -> jax.Array:
        x, _ = self.embed(x)
        x = run_blocks(self.blocks, x, remat=self.grad_checkpointing, scanned=self.scan_layers)
        return self.norm(x) if self.norm is not None else x

    def __call__(self, x: jax.Array):
        return self.head_logits(self.pool(self.forward_features(x)))

    def forward_intermediates(self, x: jax.Array, attention: bool = True, *, indices=None, norm: bool = False,
                              output_fmt: str = "NHWC", return_prefix_tokens: bool = False,
                              intermediates_only: bool = False, stop_early: bool = False):
        """Without `indices`: logits plus every block's hidden state and (if asked) attention weights.

        With `indices` (timm's forward_intermediates; an int n is the last n blocks, a list names
        blocks): those blocks' patch tokens on the grid, NHWC (B, H', W', C) by default (or NCHW,
        or NLC tokens), after the final norm if `norm`, with their prefix tokens as
        (patches, prefix) pairs if `return_prefix_tokens`. Returns the list alone if
        `intermediates_only`, else (the final normed tokens, the list); `stop_early` stops after
        the last block taken (the final tokens are then those of that block).
        """
        if indices is not None:
            return self.dense_intermediates(x, indices, norm, output_fmt, return_prefix_tokens, intermediates_only,
                                             stop_early)
        x, _ = self.embed(x)
        x, hidden, maps = run_blocks_with_intermediates(self.blocks, x, attention=attention, scanned=self.scan_layers)
        pooled, probe = self.pool_with_weights(self.norm(x) if self.norm is not None else x, attention)
        logits = self.head_logits(pooled) if self.cfg.num_classes else None
        return ViTOutput(logits, pooled, hidden, maps, probe)
