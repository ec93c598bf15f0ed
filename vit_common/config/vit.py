"""ViTConfig: every architectural choice of a ViT or DeiT, validated before anything is allocated."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from .base import TokenConfig
from .dynamic import POS_EMBED_INTERPS

GLOBAL_POOLS = ("token", "avg", "map")
POS_EMBEDS = ("learn", "sincos2d", "sincos1d")
ACT_LAYERS = ("gelu", "gelu_tanh", "quick_gelu", "silu")
NORM_LAYERS = ("layernorm", "rmsnorm")
MLP_LAYERS = ("mlp", "swiglu_packed", "swiglu")


@dataclasses.dataclass(frozen=True)
class ViTConfig(TokenConfig):
    """Every architectural choice of a ViT / DeiT, with timm's keyword names."""

    arch: ClassVar[str] = "vit"
    kind: ClassVar[str] = "a ViT"  # in messages
    TAGGED: ClassVar[bool] = False  # its dict carries no "arch", as before Swin existed
    FROM_WEIGHTS: ClassVar[tuple[str, ...]] = ("img_size", "patch_size", "num_classes", "no_embed_class")

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000  # 0: no head, the model returns pooled features
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    distilled: bool = False  # DeiT: a distillation token and a second head
    no_embed_class: bool = False  # True: position embedding covers patches only (big_vision)
    global_pool: str = "token"  # token | avg | map
    fc_norm: bool | None = None  # None: timm's rule, LayerNorm after pooling iff global_pool == 'avg'
    pos_embed: str = "learn"  # learn | sincos2d | sincos1d (fixed tables, not parameters)
    representation_size: int | None = None  # pre-logits Dense + tanh, as in the original ViT
    # The families after 2021 (timm's keywords and meanings):
    init_values: float | None = None  # LayerScale: gamma (init_values * ones) on each residual branch (DeiT III, DINOv2)
    reg_tokens: int = 0  # register tokens after the class token (DINOv2 with registers)
    pre_norm: bool = False  # a norm before the blocks, and no patch-embedding bias (CLIP)
    act_layer: str = "gelu"  # gelu (exact erf) | gelu_tanh | quick_gelu (x * sigmoid(1.702 x)) | silu
    norm_layer: str = "layernorm"  # every norm of the model: layernorm | rmsnorm (scale only; AIMv2)
    norm_eps: float = 1e-6  # 1e-6 Google / timm ViT, DeiT, DINOv2; 1e-5 CLIP, AIMv2
    mlp_layer: str = "mlp"  # mlp | swiglu_packed (fc1 halves: act(gate) * x; DINOv2 giant) | swiglu (fc1_g, fc1_x; AIMv2)
    proj_bias: bool = True  # bias of the attention projection and of the block MLPs (False: AIMv2)
    embed_norm_layer: str | None = None  # a norm of the patch embedding (patch_embed.norm; AIMv2: rmsnorm)
    # Regularisers, with timm's names and meanings (all off at inference):
    drop_rate: float = 0.0  # dropout on the pooled features, before the classifier (head only)
    pos_drop_rate: float = 0.0  # dropout on the tokens after the position embedding is added
    proj_drop_rate: float = 0.0  # dropout after the attention projection and after each MLP layer
    attn_drop_rate: float = 0.0  # dropout on the attention probabilities
    drop_path_rate: float = 0.0  # stochastic depth, rising linearly over the blocks
    # Any image size at call time (timm's keywords; vit_common/config/dynamic.py):
    dynamic_img_size: bool = False  # any H x W: the position table resized to the grid at each call
    dynamic_img_pad: bool = False  # pad images right / bottom with zeros to whole patches
    pos_embed_interp: str = "timm"  # how the table is resized: the checkpoint source's rule

    # Derived quantities (the geometry: TokenConfig) ---------------------------------------------
    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + int(self.distilled) + self.reg_tokens

    @property
    def mlp_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def mlp_hidden(self) -> int:
        """Width of the activations between the MLP's input and output layers (half of fc1 when packed)."""
        return self.mlp_dim // 2 if self.mlp_layer == "swiglu_packed" else self.mlp_dim

    @property
    def has_fc_norm(self) -> bool:
        """Whether the LayerNorm after pooling (fc_norm) exists; `norm` exists iff it does not (Eva's name too)."""
        return self.global_pool == "avg" if self.fc_norm is None else bool(self.fc_norm)

    @property
    def num_features(self) -> int:
        """Width of the pooled features that feed the head."""
        return self.representation_size or self.embed_dim

    # Validation (the shared checks: TokenConfig.validate) -------------------------------------------
    def family_problems(self) -> list[str]:
        problems = []
        if self.global_pool not in GLOBAL_POOLS:
            problems.append(f"global_pool must be one of {GLOBAL_POOLS}, got {self.global_pool!r}")
        if self.pos_embed not in POS_EMBEDS:
            problems.append(f"pos_embed must be one of {POS_EMBEDS}, got {self.pos_embed!r}")
        if self.global_pool == "token" and not self.class_token:
            problems.append("global_pool='token' needs class_token=True (or use 'avg' or 'map')")
        if self.distilled and not self.class_token:
            problems.append("distilled=True needs class_token=True")
        if self.distilled and self.global_pool != "token":
            problems.append("distilled models pool the class and distillation tokens: use global_pool='token'")
        if self.distilled and self.representation_size:
            problems.append("distilled models have no representation layer")
        if self.representation_size is not None and self.representation_size <= 0:
            problems.append(f"representation_size must be positive, got {self.representation_size}")
        if self.pos_embed == "sincos2d" and self.embed_dim % 4:
            problems.append(f"sincos2d position embedding needs embed_dim divisible by 4, got {self.embed_dim}")
        if self.pos_embed == "sincos1d" and self.embed_dim % 2:
            problems.append(f"sincos1d position embedding needs an even embed_dim, got {self.embed_dim}")
        for name, value, allowed in (("act_layer", self.act_layer, ACT_LAYERS),
                                     ("norm_layer", self.norm_layer, NORM_LAYERS),
                                     ("mlp_layer", self.mlp_layer, MLP_LAYERS),
                                     ("embed_norm_layer", self.embed_norm_layer, (None, *NORM_LAYERS))):
            if value not in allowed:
                problems.append(f"{name} must be one of {allowed}, got {value!r}")
        if self.mlp_layer == "swiglu_packed" and self.mlp_dim % 2:
            problems.append(f"mlp_layer='swiglu_packed' splits fc1 in halves: mlp_dim {self.mlp_dim} must be even")
        if not isinstance(self.reg_tokens, int) or isinstance(self.reg_tokens, bool) or self.reg_tokens < 0:
            problems.append(f"reg_tokens must be a non-negative integer, got {self.reg_tokens!r}")
        elif self.reg_tokens and self.distilled:
            problems.append("register tokens with a distillation token: no such model (timm has neither)")
        if self.init_values is not None and not self.init_values > 0:
            problems.append(f"init_values (LayerScale) must be positive or None, got {self.init_values}")
        if self.pos_embed_interp not in POS_EMBED_INTERPS:
            problems.append(f"pos_embed_interp must be one of {sorted(POS_EMBED_INTERPS)}, got {self.pos_embed_interp!r}")
        return problems

    # Serialisation: ConfigBase (to_dict, to_json, from_dict, replace). Configs written before
    # pos_drop_rate / proj_drop_rate existed, whose drop_rate drove all three dropouts, load with
    # drop_rate as the head dropout only (timm's meaning): dropout is off at inference, so such a
    # checkpoint computes exactly what it did.

    def describe(self) -> str:
        """The architecture in one line, for error messages and reports."""
        return (f"embed_dim={self.embed_dim}, depth={self.depth}, num_heads={self.num_heads}, "
                f"patch_size={self.patch_size}, img_size={self.img_size}, num_classes={self.num_classes}")
