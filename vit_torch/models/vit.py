"""Vision Transformer and DeiT (PyTorch twin of vit_jax/models/vit.py). Images are NCHW."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from vit_common import ViTConfig, fixed_pos_embed


from .dense import DenseFeatures
from .blocks import run_blocks
from .layers import AttentionPoolLatent, Block, PatchEmbed, PreLogits, make_norm, resample_pos_embed


class ViTOutput(NamedTuple):
    logits: torch.Tensor | None  # (B, K); for distilled models the average of both heads
    pooled: torch.Tensor  # features fed to the head: (B, F), or (B, 2, C) class + distillation
    hidden_states: list[torch.Tensor]  # every block's output, (B, T, C)
    attentions: list[torch.Tensor]  # every block's attention weights, (B, heads, T, T)
    pool_attention: torch.Tensor | None = None  # the MAP probe's attention over the tokens, (B, heads, 1, T)


class VisionTransformer(DenseFeatures, nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        self.grad_checkpointing = False  # see set_grad_checkpointing
        c = cfg.embed_dim
        norm = lambda kind=cfg.norm_layer: make_norm(kind, c, cfg.norm_eps)
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, c, bias=not cfg.pre_norm,
                                      norm=norm(cfg.embed_norm_layer) if cfg.embed_norm_layer else None,
                                      dynamic=cfg.dynamic_img_size, pad=cfg.dynamic_img_pad)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c)) if cfg.class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, c)) if cfg.distilled else None
        self.reg_token = nn.Parameter(torch.randn(1, cfg.reg_tokens, c) * 1e-6) if cfg.reg_tokens else None
        if cfg.pos_embed == "learn":
            self.pos_embed = nn.Parameter(torch.randn(1, cfg.num_pos_embed, c) * 0.02)
        else:
            self.register_buffer("pos_embed", torch.from_numpy(fixed_pos_embed(cfg)), persistent=False)
        self.pos_drop = nn.Dropout(cfg.pos_drop_rate)
        self.norm_pre = norm() if cfg.pre_norm else nn.Identity()
        self.blocks = nn.ModuleList(Block(cfg, rate) for rate in cfg.drop_path_rates())
        self.norm = nn.Identity() if cfg.has_fc_norm else norm()
        self.attn_pool = (AttentionPoolLatent(c, cfg.num_heads, cfg.mlp_dim, norm=cfg.norm_layer, eps=cfg.norm_eps,
                                              act=cfg.act_layer) if cfg.global_pool == "map" else None)
        self.fc_norm = norm() if cfg.has_fc_norm else nn.Identity()
        self.pre_logits = PreLogits(c, cfg.representation_size) if cfg.representation_size else nn.Identity()
        self.head_drop = nn.Dropout(cfg.drop_rate)  # timm's drop_rate: the head's only
        self.head = self._zero_linear(cfg.num_features, cfg.num_classes)
        self.head_dist = self._zero_linear(c, cfg.num_classes) if cfg.distilled else None

    @staticmethod
    def _zero_linear(dim: int, num_classes: int) -> nn.Module:
        if not num_classes:
            return nn.Identity()
        head = nn.Linear(dim, num_classes)
        nn.init.zeros_(head.weight)  # a zero head, as in Google's ViT
        nn.init.zeros_(head.bias)
        return head

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block (timm's name): in training, each block keeps only its
        input and runs again in the backward pass (vit_torch/models/blocks.py)."""
        self.grad_checkpointing = enable

    # ---------------------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patches, prefix tokens [class, distillation, registers] and position embedding, then
        norm_pre (CLIP): (tokens (B, T, C), the patch grid (H', W'))."""
        grid = self.patch_embed.grid(*x.shape[-2:])
        x = self.patch_embed(x)
        tokens = (self.cls_token, self.dist_token, self.reg_token)
        prefix = [t.expand(x.shape[0], -1, -1) for t in tokens if t is not None]
        pos = self.pos_embed_at(grid)
        if self.cfg.no_embed_class:  # big_vision: the position embedding covers the patches only
            x = torch.cat(prefix + [x + pos], dim=1)
        else:  # vision_transformer / timm: it covers the prefix tokens too
            x = torch.cat(prefix + [x], dim=1) + pos
        return self.norm_pre(self.pos_drop(x)), grid

    def pos_embed_at(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position table on the patch grid: as stored at the model's own grid, else resized by
        the checkpoint source's rule (cfg.pos_embed_interp), which needs dynamic_img_size."""
        cfg = self.cfg
        if grid != (cfg.grid_size, cfg.grid_size) and not cfg.dynamic_img_size:
            raise ValueError(f"the images give a {grid[0]}x{grid[1]} patch grid, the position table is "
                             f"{cfg.grid_size}x{cfg.grid_size}: create the model with dynamic_img_size=True")
        prefix = 0 if cfg.no_embed_class else cfg.num_prefix_tokens
        return resample_pos_embed(self.pos_embed, prefix, cfg.grid_size, grid, cfg.pos_embed_interp)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised tokens (B, T, C) -> the features fed to the head."""
        return self.pool_with_weights(x)[0]

    def pool_with_weights(self, x: torch.Tensor, return_weights: bool = False):
        """(features fed to the head, the MAP probe's attention if asked and the model has one)."""
        cfg = self.cfg
        weights = None
        if cfg.global_pool == "map":
            x, weights = self.attn_pool(x, return_weights)
        elif cfg.global_pool == "avg":
            x = x[:, cfg.num_prefix_tokens:].mean(dim=1)
        elif cfg.distilled:
            return x[:, :2], None
        else:
            x = x[:, 0]
        return self.pre_logits(self.fc_norm(x)), weights

    def head_logits(self, pooled: torch.Tensor):
        """Logits; distilled models give (class, distillation) logits in training, their mean otherwise."""
        if self.head_dist is None:
            return self.head(self.head_drop(pooled))
        cls_logits = self.head(self.head_drop(pooled[:, 0]))
        dist_logits = self.head_dist(self.head_drop(pooled[:, 1]))
        if self.training:
            return cls_logits, dist_logits
        return (cls_logits + dist_logits) / 2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.embed(x)
        x = run_blocks(self.blocks, x, checkpointing=self.grad_checkpointing)
        return self.norm(x)

    def forward(self, x: torch.Tensor):
        return self.head_logits(self.pool(self.forward_features(x)))

    def forward_intermediates(self, x: torch.Tensor, attention: bool = True, *, indices=None, norm: bool = False,
                              output_fmt: str = "NCHW", return_prefix_tokens: bool = False,
                              intermediates_only: bool = False, stop_early: bool = False):
        """Without `indices`: logits plus every block's hidden state and (if asked) attention weights.

        With `indices` (timm's forward_intermediates; an int n is the last n blocks, a list names
        blocks): those blocks' patch tokens on the grid, NCHW (B, C, H', W') by default (or NHWC,
        or NLC tokens), after the final norm if `norm`, with their prefix tokens as
        (patches, prefix) pairs if `return_prefix_tokens`. Returns the list alone if
        `intermediates_only`, else (the final normed tokens, the list); `stop_early` stops after
        the last block taken (the final tokens are then those of that block).
        """
        if indices is not None:
            return self.dense_intermediates(x, indices, norm, output_fmt, return_prefix_tokens, intermediates_only,
                                             stop_early)
        x, _ = self.embed(x)
        hidden, maps = [], []
        for block in self.blocks:
            x, weights = block(x, return_weights=attention)
            hidden.append(x)
            if attention:
                maps.append(weights)
        pooled, probe = self.pool_with_weights(self.norm(x), attention)
        logits = self.head_logits(pooled) if self.cfg.num_classes else None
        return ViTOutput(logits, pooled, hidden, maps, probe)
