"""Building blocks of the PyTorch twin; parameter names are timm's."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vit_common.config.dynamic import grid_of, pos_embed_matrices
from vit_common.predict.dense import check_output_fmt

LN_EPS = 1e-6  # Google's ViT; PyTorch's default (1e-5) is a classic porting bug


def layer_norm(dim: int, eps: float | None = None) -> nn.LayerNorm:
    """LayerNorm with ViT's epsilon (LN_EPS) unless `eps` is given (Swin: 1e-5)."""
    return nn.LayerNorm(dim, eps=LN_EPS if eps is None else eps)


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """A norm of the config's kind: LayerNorm ('weight', 'bias') or RMSNorm ('weight' only, timm's RmsNorm)."""
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    return nn.LayerNorm(dim, eps=eps)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): OpenAI CLIP's approximation of GELU (timm 'quick_gelu')."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_act(name: str) -> nn.Module:
    """timm's act_layer names: 'gelu' is exact (erf), 'gelu_tanh' the tanh approximation."""
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "quick_gelu":
        return QuickGELU()
    if name == "silu":
        return nn.SiLU()
    if name == "gelu":
        return nn.GELU(approximate="none")
    raise ValueError(f"unknown act_layer {name!r}")


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


def fit_to_patches(x: torch.Tensor, patch_size: int, pad: bool) -> torch.Tensor:
    """NCHW images cut to whole patches, or (pad) padded right / bottom with zeros up to them (timm)."""
    h, w = x.shape[-2:]
    gh, gw = grid_of(h, w, patch_size, pad)
    if pad:
        return F.pad(x, (0, gw * patch_size - w, 0, gh * patch_size - h))
    return x[..., :gh * patch_size, :gw * patch_size]


def check_images(x: torch.Tensor, img_size: int, in_chans: int, any_size: bool) -> None:
    """Images must be NCHW of the model's size, or of any size large enough for one patch."""
    if any_size:
        if x.ndim != 4 or x.shape[1] != in_chans:
            raise ValueError(f"expected images of shape (batch, {in_chans}, height, width) (NCHW), got {tuple(x.shape)}")
        return
    expected = (in_chans, img_size, img_size)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"expected images of shape (batch, {', '.join(map(str, expected))}) (NCHW), got {tuple(x.shape)}; "
            "dynamic_img_size=True runs any size"
        )


def resample_pos_embed(pos: torch.Tensor, num_prefix: int, old: int, grid: tuple[int, int], rule: str) -> torch.Tensor:
    """A (1, num_prefix + old*old, C) table on the (h, w) grid under `rule` (vit_common.config.dynamic):
    one fixed float64-exact matrix per axis, applied as two matmuls (differentiable)."""
    if tuple(grid) == (old, old):
        return pos
    rows, cols = (torch.as_tensor(m, dtype=pos.dtype, device=pos.device)
                  for m in pos_embed_matrices(old, tuple(grid), rule))
    c = pos.shape[-1]
    table = torch.einsum("hi,ijc->hjc", rows, pos[0, num_prefix:].reshape(old, old, c))
    table = torch.einsum("wj,hjc->hwc", cols, table)
    return torch.cat([pos[:, :num_prefix], table.reshape(1, -1, c)], dim=1)


def dense_output(tokens: torch.Tensor, num_prefix: int, grid: tuple[int, int], output_fmt: str):
    """(patch tokens on the grid, prefix tokens): NCHW (B, C, H', W'), NHWC or NLC (B, N, C)."""
    check_output_fmt(output_fmt)
    prefix, patches = tokens[:, :num_prefix], tokens[:, num_prefix:]
    if output_fmt != "NLC":
        patches = patches.reshape(patches.shape[0], *grid, patches.shape[-1])
        if output_fmt == "NCHW":
            patches = patches.permute(0, 3, 1, 2)
    return patches, prefix


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, bias: bool = True,
                 norm: nn.Module | None = None, *, dynamic: bool = False, pad: bool = False):
        super().__init__()
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.dynamic, self.pad = dynamic, pad  # timm's dynamic_img_size / dynamic_img_pad
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.norm = norm if norm is not None else nn.Identity()  # AIMv2 normalises the patch tokens
        lecun_normal_(self.proj.weight)
        if bias:
            nn.init.zeros_(self.proj.bias)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return grid_of(height, width, self.patch_size, self.pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.img_size, self.in_chans, self.dynamic or self.pad)
        if self.pad:  # (a conv drops the remainder by itself)
            x = fit_to_patches(x, self.patch_size, True)
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))  # (B, N, C)


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)  # (B, H, N, D)


def attention(q, k, v, dropout: nn.Dropout | None, return_weights: bool):
    """Softmax attention over (B, H, N, D); the fused kernel unless the weights are wanted."""
    if not return_weights:
        p = dropout.p if dropout is not None and dropout.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p), None
    weights = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    weights = weights.softmax(dim=-1)
    return (weights if dropout is None else dropout(weights)) @ v, weights


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float,
                 proj_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
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


def _init_linears_(linears, init: str) -> None:
    """init 'jax': Google's ViT (Xavier-uniform kernels, biases N(0, 1e-6));
    'timm': timm's default (kernels N(0, 0.02^2), zero biases), as Swin uses."""
    for fc in linears:
        if init == "jax":
            nn.init.xavier_uniform_(fc.weight)
            if fc.bias is not None:
                nn.init.normal_(fc.bias, std=1e-6)
        else:
            timm_linear_init_(fc)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float, *, init: str = "jax", act: str = "gelu", bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = make_act(act)  # default: exact erf GELU, as in Google's ViT
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop2 = nn.Dropout(drop)
        _init_linears_((self.fc1, self.fc2), init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class SwiGLUPacked(nn.Module):
    """timm's GluMlp as SwiGLUPacked (DINOv2 giant): fc1 (dim -> hidden) split in halves, act(first) * second."""

    def __init__(self, dim: int, hidden: int, drop: float, *, act: str = "silu", bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = make_act(act)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden // 2, dim, bias=bias)
        self.drop2 = nn.Dropout(drop)
        _init_linears_((self.fc1, self.fc2), "jax")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, x = self.fc1(x).chunk(2, dim=-1)
        return self.drop2(self.fc2(self.drop1(self.act(gate) * x)))


class SwiGLU(nn.Module):
    """timm's SwiGLU (AIMv2): act(fc1_g(x)) * fc1_x(x), then fc2."""

    def __init__(self, dim: int, hidden: int, drop: float, *, act: str = "silu", bias: bool = True):
        super().__init__()
        self.fc1_g = nn.Linear(dim, hidden, bias=bias)
        self.fc1_x = nn.Linear(dim, hidden, bias=bias)
        self.act = make_act(act)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop2 = nn.Dropout(drop)
        _init_linears_((self.fc1_g, self.fc1_x, self.fc2), "jax")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1_g(x)) * self.fc1_x(x))))


MLP_LAYERS = {"mlp": Mlp, "swiglu_packed": SwiGLUPacked, "swiglu": SwiGLU}


class LayerScale(nn.Module):
    """A learned per-channel scale of a residual branch (timm: `gamma`, initialised to init_values)."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


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
    """Pre-norm encoder block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))); ls*: LayerScale or nothing."""

    def __init__(self, cfg, drop_path: float):
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = make_norm(cfg.norm_layer, dim, cfg.norm_eps)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.proj_drop_rate, cfg.proj_bias)
        self.ls1 = LayerScale(dim, cfg.init_values) if cfg.init_values is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = make_norm(cfg.norm_layer, dim, cfg.norm_eps)
        self.mlp = MLP_LAYERS[cfg.mlp_layer](dim, cfg.mlp_dim, cfg.proj_drop_rate, act=cfg.act_layer, bias=cfg.proj_bias)
        self.ls2 = LayerScale(dim, cfg.init_values) if cfg.init_values is not None else nn.Identity()
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        y, weights = self.attn(self.norm1(x), return_weights)
        x = x + self.drop_path1(self.ls1(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, weights


class AttentionPoolLatent(nn.Module):
    """Multihead attention pooling (big_vision's MAPHead): a learned probe attends to all tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, norm: str = "layernorm", eps: float = LN_EPS,
                 act: str = "gelu"):
        super().__init__()
        self.num_heads = num_heads
        self.latent = nn.Parameter(torch.empty(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = make_norm(norm, dim, eps)
        self.mlp = Mlp(dim, mlp_dim, drop=0.0, act=act)
        bound = math.sqrt(6.0 / (1 + dim))  # xavier_uniform of a (1, 1, dim) probe
        nn.init.uniform_(self.latent, -bound, bound)
        nn.init.xavier_uniform_(self.q.weight)
        xavier_uniform_fused_(self.kv.weight, 2)
        nn.init.xavier_uniform_(self.proj.weight)
        for lin in (self.q, self.kv, self.proj):
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        """(pooled features (B, C), the probe's attention (B, heads, 1, T) if asked, else None)."""
        b, n, c = x.shape
        q = _heads(self.q(self.latent.expand(b, -1, -1)), self.num_heads)
        k, v = (_heads(t, self.num_heads) for t in self.kv(x).chunk(2, dim=-1))
        x, weights = attention(q, k, v, None, return_weights)
        x = self.proj(x.transpose(1, 2).reshape(b, 1, c))
        x = x + self.mlp(self.norm(x))
        return x[:, 0], weights


class PreLogits(nn.Module):
    """The original ViT's representation layer: Dense + tanh before the head."""

    def __init__(self, dim: int, representation_size: int):
        super().__init__()
        self.fc = nn.Linear(dim, representation_size)
        lecun_normal_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x))
