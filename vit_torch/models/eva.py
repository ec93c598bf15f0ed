"""timm's Eva: EVA-02 and DINOv3 (PyTorch twin of vit_jax/models/eva.py). Images are NCHW;
parameter names are timm's, so a state dict loads strictly into timm's Eva of the same name.

A pre-norm ViT with rotary position embeddings on the patch tokens' queries and keys (tables
from vit_common.config.rope), optional SwiGLU MLPs, inner LayerNorms and LayerScale; see
vit_common.config.eva.EvaConfig for the options and vit_common.weights.module_tables.eva_links for
every parameter.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vit_common import EvaConfig
from vit_common.config.rope import rope_tables

from vit_common.config.dynamic import grid_of

from .dense import DenseFeatures
from .blocks import run_blocks
from .layers import (DropPath, attention, check_images, fit_to_patches, layer_norm,
                     resample_pos_embed, timm_linear_init_)

HEAD_INIT_SCALE = 1e-3  # timm's Eva scales its initial head by this


class EvaOutput(NamedTuple):
    logits: torch.Tensor | None  # (B, K)
    pooled: torch.Tensor  # features fed to the head, (B, C)
    hidden_states: list[torch.Tensor]  # every block's output, (B, T, C)
    attentions: list[torch.Tensor]  # every block's attention weights, (B, heads, T, T)


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): (even, odd) pairs, EVA-02's layout."""
    return torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)


def rotate_halves(x: torch.Tensor) -> torch.Tensor:
    """(a, b) halves -> (-b, a): (first half, second half) pairs, DINOv3's layout."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, prefix: int, half: bool) -> torch.Tensor:
    """Rotate the patch tokens of x (B, H, T, D); the first `prefix` tokens stay as they are."""
    patches = x[:, :, prefix:]
    rotated = patches * cos + (rotate_halves(patches) if half else rotate_pairs(patches)) * sin
    return torch.cat([x[:, :, :prefix], rotated.type_as(x)], dim=2)


def _torch_default_uniform_(conv: nn.Conv2d) -> None:
    """PyTorch's default Conv2d init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which timm's Eva keeps."""
    conv.reset_parameters()


class EvaPatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, *, dynamic: bool = False,
                 pad: bool = False):
        super().__init__()
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.dynamic, self.pad = dynamic, pad  # timm's dynamic_img_size / dynamic_img_pad
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        _torch_default_uniform_(self.proj)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return grid_of(height, width, self.patch_size, self.pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.img_size, self.in_chans, self.dynamic or self.pad)
        if self.pad:  # (a conv drops the remainder by itself)
            x = fit_to_patches(x, self.patch_size, True)
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, C)


class EvaAttention(nn.Module):
    """Self-attention with fused q|k|v and separate q / v biases (k has none), or three projections."""

    def __init__(self, cfg: EvaConfig):
        super().__init__()
        c = cfg.embed_dim
        self.num_heads, self.prefix, self.half = cfg.num_heads, cfg.num_prefix_tokens, cfg.rope_rotate_half
        self.qkv = self.q_proj = self.k_proj = self.v_proj = self.q_bias = self.v_bias = None
        if cfg.qkv_fused:
            self.qkv = nn.Linear(c, 3 * c, bias=False)
            if cfg.qkv_bias:
                self.q_bias = nn.Parameter(torch.zeros(c))
                self.v_bias = nn.Parameter(torch.zeros(c))
        else:
            self.q_proj = nn.Linear(c, c, bias=cfg.qkv_bias)
            self.k_proj = nn.Linear(c, c, bias=False)
            self.v_proj = nn.Linear(c, c, bias=cfg.qkv_bias)
        self.attn_drop = nn.Dropout(cfg.attn_drop_rate)
        self.norm = layer_norm(c, eps=cfg.norm_eps) if cfg.scale_attn_inner else nn.Identity()
        self.proj = nn.Linear(c, c)
        self.proj_drop = nn.Dropout(cfg.proj_drop_rate)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, H, N, D)

    def forward(self, x: torch.Tensor, rope=None, return_weights: bool = False):
        b, n, c = x.shape
        if self.qkv is not None:
            bias = None if self.q_bias is None else torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
            q, k, v = (self._heads(t) for t in F.linear(x, self.qkv.weight, bias).chunk(3, dim=-1))
        else:
            q, k, v = (self._heads(proj(x)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        if rope is not None:
            q, k = (apply_rope(t, *rope, self.prefix, self.half) for t in (q, k))
        x, weights = attention(q, k, v, self.attn_drop, return_weights)
        x = self.norm(x.transpose(1, 2).reshape(b, n, c))
        return self.proj_drop(self.proj(x)), weights


class EvaMlp(nn.Module):
    """GELU MLP (fc1, fc2), packed SwiGLU (fc1 = [gate | value]) or split SwiGLU (fc1_g, fc1_x),
    each with an optional LayerNorm on the hidden layer (scale_mlp)."""

    def __init__(self, cfg: EvaConfig):
        super().__init__()
        c, h = cfg.embed_dim, cfg.mlp_dim
        self.kind = cfg.mlp_kind
        if self.kind == "swiglu":
            self.fc1_g = nn.Linear(c, h)
            self.fc1_x = nn.Linear(c, h)
        else:
            self.fc1 = nn.Linear(c, 2 * h if self.kind == "swiglu_packed" else h)
        self.drop1 = nn.Dropout(cfg.proj_drop_rate)
        self.norm = layer_norm(h, eps=cfg.norm_eps) if cfg.scale_mlp else nn.Identity()
        self.fc2 = nn.Linear(h, c)
        self.drop2 = nn.Dropout(cfg.proj_drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            x = F.silu(self.fc1_g(x)) * self.fc1_x(x)
        elif self.kind == "swiglu_packed":
            gate, value = self.fc1(x).chunk(2, dim=-1)
            x = F.silu(gate) * value
        else:
            x = F.gelu(self.fc1(x))  # exact erf GELU, as timm's nn.GELU
        return self.drop2(self.fc2(self.norm(self.drop1(x))))


class EvaBlock(nn.Module):
    """x + gamma_1 * attn(norm1(x)), then x + gamma_2 * mlp(norm2(x)) (no gammas without LayerScale)."""

    def __init__(self, cfg: EvaConfig, drop_path: float):
        super().__init__()
        c = cfg.embed_dim
        self.norm1 = layer_norm(c, eps=cfg.norm_eps)
        self.attn = EvaAttention(cfg)
        self.gamma_1 = nn.Parameter(torch.full((c,), float(cfg.init_values))) if cfg.init_values is not None else None
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = layer_norm(c, eps=cfg.norm_eps)
        self.mlp = EvaMlp(cfg)
        self.gamma_2 = nn.Parameter(torch.full((c,), float(cfg.init_values))) if cfg.init_values is not None else None
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, rope=None, return_weights: bool = False):
        y, weights = self.attn(self.norm1(x), rope, return_weights)
        if self.gamma_1 is not None:
            y = self.gamma_1 * y
        x = x + self.drop_path1(y)
        y = self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            y = self.gamma_2 * y
        return x + self.drop_path2(y), weights


class Eva(DenseFeatures, nn.Module):
    def __init__(self, cfg: EvaConfig):
        super().__init__()
        self.cfg = cfg
        self.grad_checkpointing = False  # see set_grad_checkpointing
        c = cfg.embed_dim
        self.patch_embed = EvaPatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, c, dynamic=cfg.dynamic_img_size,
                                         pad=cfg.dynamic_img_pad)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c)) if cfg.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.num_reg_tokens, c)) if cfg.num_reg_tokens else None
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_pos_embed, c)) if cfg.use_abs_pos_emb else None
        for p in (self.cls_token, self.reg_token, self.pos_embed):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        self.pos_drop = nn.Dropout(cfg.pos_drop_rate)
        if cfg.use_rot_pos_emb:
            sin, cos = rope_tables(cfg)
            self.register_buffer("rope_sin", torch.tensor(sin), persistent=False)
            self.register_buffer("rope_cos", torch.tensor(cos), persistent=False)
        else:
            self.rope_sin = self.rope_cos = None
        self.blocks = nn.ModuleList(EvaBlock(cfg, rate) for rate in cfg.drop_path_rates())
        self.norm = nn.Identity() if cfg.has_fc_norm else layer_norm(c, eps=cfg.norm_eps)
        self.fc_norm = layer_norm(c, eps=cfg.norm_eps) if cfg.has_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(c, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's: every Linear N(0, 0.02^2) with zero bias, the residual projections divided by
        sqrt(2 * (block + 1)), the head scaled by HEAD_INIT_SCALE."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                timm_linear_init_(m)
        with torch.no_grad():
            for i, block in enumerate(self.blocks):
                block.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
                block.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))
            if isinstance(self.head, nn.Linear):
                self.head.weight.mul_(HEAD_INIT_SCALE)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block, as VisionTransformer.set_grad_checkpointing."""
        self.grad_checkpointing = enable

    # ---------------------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patches, class and register tokens, absolute position embedding: (tokens (B, T, C), the grid)."""
        grid = self.patch_embed.grid(*x.shape[-2:])
        x = self.patch_embed(x)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        pos = self.pos_embed_at(grid)
        if pos is None:
            x = torch.cat(prefix + [x], dim=1)
        elif self.cfg.no_embed_class:
            x = torch.cat(prefix + [x + pos], dim=1)
        else:
            x = torch.cat(prefix + [x], dim=1) + pos
        return self.pos_drop(x), grid

    def pos_embed_at(self, grid: tuple[int, int]) -> torch.Tensor | None:
        """The absolute position table on the grid (resized by cfg.pos_embed_interp off the model's grid)."""
        cfg = self.cfg
        if grid != (cfg.grid_size, cfg.grid_size) and not cfg.dynamic_img_size:
            raise ValueError(f"the images give a {grid[0]}x{grid[1]} patch grid, the model's is "
                             f"{cfg.grid_size}x{cfg.grid_size}: create the model with dynamic_img_size=True")
        if self.pos_embed is None:
            return None
        prefix = 0 if cfg.no_embed_class else cfg.num_prefix_tokens
        return resample_pos_embed(self.pos_embed, prefix, cfg.grid_size, grid, cfg.pos_embed_interp)

    def block_args(self, grid: tuple[int, int]) -> tuple:
        return (self.rope(grid),)

    def rope(self, grid: tuple[int, int] | None = None):
        """(sin, cos) of the grid: the buffers at the model's grid, else tables cached per shape."""
        if self.rope_sin is None:
            return None
        if grid is None or grid == (self.cfg.grid_size, self.cfg.grid_size):
            return self.rope_sin, self.rope_cos
        return tuple(torch.tensor(t, device=self.rope_sin.device) for t in rope_tables(self.cfg, tuple(grid)))

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the final norm (B, T, C) -> the features fed to the head."""
        x = x[:, 0] if self.cfg.global_pool == "token" else x[:, self.cfg.num_prefix_tokens:].mean(dim=1)
        return self.fc_norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, grid = self.embed(x)
        x = run_blocks(self.blocks, x, self.rope(grid), checkpointing=self.grad_checkpointing)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.pool(self.forward_features(x))))

    def forward_intermediates(self, x: torch.Tensor, attention: bool = True, *, indices=None, norm: bool = False,
                              output_fmt: str = "NCHW", return_prefix_tokens: bool = False,
                              intermediates_only: bool = False, stop_early: bool = False):
        """Without `indices`: logits (None without a head), pooled features, every block's output
        and (if asked) attention. With `indices`: dense features, as VisionTransformer's."""
        if indices is not None:
            return self.dense_intermediates(x, indices, norm, output_fmt, return_prefix_tokens, intermediates_only,
                                             stop_early)
        x, grid = self.embed(x)
        rope = self.rope(grid)
        hidden, maps = [], []
        for block in self.blocks:
            x, weights = block(x, rope, return_weights=attention)
            hidden.append(x)
            if attention:
                maps.append(weights)
        pooled = self.pool(self.norm(x))
        logits = self.head(self.head_drop(pooled)) if self.cfg.num_classes else None
        return EvaOutput(logits, pooled, hidden, maps)
