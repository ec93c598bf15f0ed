"""Building blocks of the PyTorch twin; parameter names are timm's."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6  # Google's ViT; PyTorch's default (1e-5) is a classic porting bug


def layer_norm(dim: int, eps: float | None = None) -> nn.LayerNorm:
    """LayerNorm with ViT's epsilon (LN_EPS) unless `eps` is given (Swin: 1e-5)."""
    return nn.LayerNorm(dim, eps=LN_EPS if eps is None else eps)


def timm_linear_init_(linear: nn.Linear) -> None:
    """timm's default: weight trunc_normal_(std=0.02) (cut at +-2 absolute: a plain normal), zero bias."""
    nn.init.trunc_normal_(linear.weight, std=0.02)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def xavier_uniform_fused_(weight: torch.Tensor, parts: int) -> None:
    """Xavier-uniform as if each of `parts` stacked (C, C) projections were its own Dense."""
    fan_in = weight.shape[1]
    fan_out = weight.shape[0] // parts
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(weight, -bound, bound)


def lecun_normal_(weight: torch.Tensor) -> None:
    """jax.nn.initializers.lecun_normal: truncated normal, variance 1/fan_in."""
    fan_in = weight[0].numel()
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # std of a unit normal truncated at +-2
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        lecun_normal_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.in_chans, self.img_size, self.img_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected images of shape (batch, {', '.join(map(str, expected))}) (NCHW), got {tuple(x.shape)}"
            )
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, C)


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)  # (B, H, N, D)


def attention(q, k, v, dropout: nn.Dropout, return_weights: bool):
    """Softmax attention over (B, H, N, D); the fused kernel unless the weights are wanted."""
    if not return_weights:
        p = dropout.p if dropout.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p), None
    weights = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    weights = weights.softmax(dim=-1)
    return dropout(weights) @ v, weights


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        xavier_uniform_fused_(self.qkv.weight, 3)
        nn.init.xavier_uniform_(self.proj.weight)
        for lin in (self.qkv, self.proj):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        b, n, c = x.shape
        q, k, v = (_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        x, weights = attention(q, k, v, self.attn_drop, return_weights)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x)), weights


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float, *, init: str = "jax"):
        """init 'jax': Google's ViT (Xavier-uniform kernels, biases N(0, 1e-6));
        'timm': timm's default (kernels N(0, 0.02^2), zero biases), as Swin uses."""
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="none")  # exact erf GELU, as in Google's ViT
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)
        for fc in (self.fc1, self.fc2):
            if init == "jax":
                nn.init.xavier_uniform_(fc.weight)
                nn.init.normal_(fc.bias, std=1e-6)
            else:
                timm_linear_init_(fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's whole residual branch with probability `rate`."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class Block(nn.Module):
    """Pre-norm encoder block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim, num_heads, mlp_dim, qkv_bias, proj_drop, attn_drop, drop_path):
        super().__init__()
        self.norm1 = layer_norm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = layer_norm(dim)
        self.mlp = Mlp(dim, mlp_dim, proj_drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        y, weights = self.attn(self.norm1(x), return_weights)
        x = x + self.drop_path1(y)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x, weights


class AttentionPoolLatent(nn.Module):
    """Multihead attention pooling (big_vision's MAPHead): a learned probe attends to all tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.latent = nn.Parameter(torch.empty(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = layer_norm(dim)
        self.mlp = Mlp(dim, mlp_dim, drop=0.0)
        bound = math.sqrt(6.0 / (1 + dim))  # xavier_uniform of a (1, 1, dim) probe
        nn.init.uniform_(self.latent, -bound, bound)
        nn.init.xavier_uniform_(self.q.weight)
        xavier_uniform_fused_(self.kv.weight, 2)
        nn.init.xavier_uniform_(self.proj.weight)
        for lin in (self.q, self.kv, self.proj):
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q = _heads(self.q(self.latent.expand(b, -1, -1)), self.num_heads)
        k, v = (_heads(t, self.num_heads) for t in self.kv(x).chunk(2, dim=-1))
        x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, 1, c)
        x = self.proj(x)
        x = x + self.mlp(self.norm(x))
        return x[:, 0]


class PreLogits(nn.Module):
    """The original ViT's representation layer: Dense + tanh before the head."""

    def __init__(self, dim: int, representation_size: int):
        super().__init__()
        self.fc = nn.Linear(dim, representation_size)
        lecun_normal_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x))
