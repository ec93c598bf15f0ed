"""Swin Transformer (PyTorch twin of vit_jax/models/swin.py). Images are NCHW; parameter names
are timm's, so a state dict loads strictly into timm's SwinTransformer of the same name.

Tokens stay on their (B, H, W, C) grid throughout, as in timm. A stage starts with a patch
merging (stages 1..), then alternates blocks with regular and shifted windows; the relative
position bias table, its index and the shifted-window mask come from vit_common.config.windows.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vit_common import SwinConfig
from vit_common.config.windows import relative_position_index, shifted_window_mask

from .blocks import run_blocks
from .layers import DropPath, Mlp, check_images, fit_to_patches, layer_norm, timm_linear_init_

# timm's and Microsoft's Swin use nn.LayerNorm's default epsilon, 1e-5 (ViT's is 1e-6).
SWIN_LN_EPS = 1e-5


class SwinOutput(NamedTuple):
    logits: torch.Tensor | None  # (B, K); (B, H, W, K) with global_pool=''
    pooled: torch.Tensor  # features fed to the head: (B, C), or (B, H, W, C) with global_pool=''
    hidden_states: list[torch.Tensor]  # every block's output, (B, H, W, C) at its stage's resolution
    attentions: list[torch.Tensor]  # every block's window attention, (B * windows, heads, w*w, w*w)
    stages: list[torch.Tensor]  # every stage's output, (B, H, W, C)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, w*w, C), windows row-major within each image."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, resolution: int | tuple[int, int]) -> torch.Tensor:
    """(B * windows, w*w, C) -> (B, H, W, C), the inverse of window_partition (resolution: R or (H, W))."""
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


class SwinPatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> LayerNorm'd tokens on a (B, H/p, W/p, C) grid."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, *, dynamic: bool = False,
                 pad: bool = False):
        super().__init__()
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.dynamic, self.pad = dynamic, pad  # timm's dynamic_img_size / dynamic_img_pad
        # PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which timm's Swin keeps here.
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = layer_norm(embed_dim, eps=SWIN_LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.img_size, self.in_chans, self.dynamic or self.pad)
        if self.pad:  # (a conv drops the remainder by itself)
            x = fit_to_patches(x, self.patch_size, True)
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # NHWC from here on


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, plus a learned bias per relative offset."""

    def __init__(self, dim: int, num_heads: int, window: int, qkv_bias: bool, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads, self.window = num_heads, window
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", torch.from_numpy(relative_position_index(window)).long(),
                             persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        for linear in (self.qkv, self.proj):
            timm_linear_init_(linear)

    def relative_position_bias(self) -> torch.Tensor:
        """(heads, w*w, w*w): the table's row for each (query, key) offset."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, return_weights: bool = False):
        """x: (B * windows, w*w, C); mask: (windows, w*w, w*w) or None."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias().unsqueeze(0)  # (1, H, N, N); q, k, v: (B', H, N, D)
        if mask is not None:  # the same mask for every image: windows are image-major
            bias = (bias + mask.unsqueeze(1)).repeat(b // mask.shape[0], 1, 1, 1)
        if not return_weights:
            p = self.attn_drop.p if self.training else 0.0
            out, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=p), None
        else:
            logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + bias
            weights = logits.softmax(dim=-1)
            out = self.attn_drop(weights) @ v
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c))), weights


class SwinBlock(nn.Module):
    """Pre-norm block: x + attn over (shifted) windows of norm1(x), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, resolution: int, window: int, shift: int, mlp_dim: int,
                 qkv_bias: bool, proj_drop: float, attn_drop: float, drop_path: float):
        super().__init__()
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = layer_norm(dim, eps=SWIN_LN_EPS)
        self.attn = WindowAttention(dim, num_heads, window, qkv_bias, attn_drop, proj_drop)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = layer_norm(dim, eps=SWIN_LN_EPS)
        self.mlp = Mlp(dim, mlp_dim, proj_drop, init="timm")
        self.drop_path2 = DropPath(drop_path)
        mask = shifted_window_mask(resolution, window, shift)
        self.register_buffer("attn_mask", torch.tensor(mask) if mask is not None else None, persistent=False)

    def mask_for(self, h: int, w: int) -> torch.Tensor | None:
        """The shifted-window mask of an (h, w) grid of whole windows (the buffer at the model's own)."""
        if (h, w) == (self.resolution, self.resolution) or not self.shift:
            return self.attn_mask
        return torch.tensor(shifted_window_mask((h, w), self.window, self.shift), device=self.attn_mask.device)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        s, win = self.shift, self.window
        h, w = x.shape[1:3]
        y = self.norm1(x)
        if s:  # cyclic shift: windows then straddle the previous block's window borders
            y = torch.roll(y, (-s, -s), dims=(1, 2))
        # Another image size: pad the shifted grid to whole windows, as timm does (dynamic mask).
        y = F.pad(y, (0, 0, 0, -w % win, 0, -h % win)) if h % win or w % win else y
        hp, wp = y.shape[1:3]
        y, weights = self.attn(window_partition(y, win), self.mask_for(hp, wp), return_weights)
        y = window_reverse(y, win, (hp, wp))[:, :h, :w]
        if s:
            y = torch.roll(y, (s, s), dims=(1, 2))
        x = x + self.drop_path1(y)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x, weights


class PatchMerging(nn.Module):
    """2x2 neighbourhoods -> one token: concatenate, LayerNorm(4C), Linear(4C -> out, no bias)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = layer_norm(4 * dim, eps=SWIN_LN_EPS)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        timm_linear_init_(self.reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Microsoft's order, which every released checkpoint's reduction expects:
        # (row, col) offsets (0, 0), (1, 0), (0, 1), (1, 1). Odd sides are padded with zeros (timm).
        if x.shape[1] % 2 or x.shape[2] % 2:
            x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(self, cfg: SwinConfig, i: int):
        super().__init__()
        dim = cfg.stage_dim(i)
        self.downsample = PatchMerging(dim // 2, dim) if i > 0 else nn.Identity()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, cfg.num_heads[i], cfg.stage_resolution(i), cfg.stage_window(i), cfg.block_shift(i, j),
                      cfg.mlp_dim(i), cfg.qkv_bias, cfg.proj_drop_rate, cfg.attn_drop_rate, rate)
            for j, rate in enumerate(cfg.drop_path_rates()[i])
        )
        self.grad_checkpointing = False  # set by SwinTransformer.set_grad_checkpointing

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        """The stage's output, every block's output and (if asked) attention weights."""
        x = self.downsample(x)
        if self.grad_checkpointing and not return_weights:  # training: the output only
            return run_blocks(self.blocks, x, checkpointing=True), [], []
        hidden, maps = [], []
        for block in self.blocks:
            x, weights = block(x, return_weights)
            hidden.append(x)
            maps.append(weights)
        return x, hidden, maps


class ClassifierHead(nn.Module):
    """Global average pooling over the grid (or none), dropout, Linear (timm's head.fc)."""

    def __init__(self, dim: int, num_classes: int, global_pool: str, drop_rate: float):
        super().__init__()
        self.global_pool = global_pool
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(dim, num_classes) if num_classes else nn.Identity()
        if num_classes:
            timm_linear_init_(self.fc)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2)) if self.global_pool == "avg" else x

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.pool(x))


class SwinTransformer(nn.Module):
    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = SwinPatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim,
                                          dynamic=cfg.dynamic_img_size, pad=cfg.dynamic_img_pad)
        self.layers = nn.ModuleList(SwinStage(cfg, i) for i in range(cfg.num_stages))
        self.norm = layer_norm(cfg.num_features, eps=SWIN_LN_EPS)
        self.head = ClassifierHead(cfg.num_features, cfg.num_classes, cfg.global_pool, cfg.drop_rate)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block, as VisionTransformer.set_grad_checkpointing."""
        for stage in self.layers:
            stage.grad_checkpointing = enable

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the (B, H/p, W/p, C) token grid."""
        return self.patch_embed(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for stage in self.layers:
            x, _, _ = stage(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, attention: bool = True) -> SwinOutput:
        """Logits plus every stage's and block's output and (if asked) every block's window attention."""
        x = self.embed(x)
        hidden, maps, stages = [], [], []
        for stage in self.layers:
            x, stage_hidden, stage_maps = stage(x, return_weights=attention)
            hidden += stage_hidden
            stages.append(x)
            if attention:
                maps += stage_maps
        pooled = self.head.pool(self.norm(x))
        logits = self.head.logits(pooled) if self.cfg.num_classes else None
        return SwinOutput(logits, pooled, hidden, maps, stages)
