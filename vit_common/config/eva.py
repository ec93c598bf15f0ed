"""EvaConfig: timm's Eva class (EVA-02, DINOv3), validated before anything is allocated, and its presets."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from ..errors import ConfigError
from .base import TokenConfig
from .dynamic import POS_EMBED_INTERPS
from .fields import positive_int

EVA_GLOBAL_POOLS = ("avg", "token")
ROPE_TYPES = ("cat", "dinov3")


@dataclasses.dataclass(frozen=True)
class EvaConfig(TokenConfig):
    """Every architectural choice of timm's `Eva`, with timm's keyword names and defaults.

    A pre-norm ViT whose blocks may have: 2-D rotary position embeddings on the patch tokens'
    queries and keys (use_rot_pos_emb; rope_type 'cat' is EVA-02's, 'dinov3' DINOv3's), a SwiGLU
    MLP (swiglu_mlp; packed `fc1` unless scale_mlp or swiglu_align_to ask for split `fc1_g` /
    `fc1_x`), a LayerNorm inside the MLP (scale_mlp) and after attention (scale_attn_inner), fused
    q|k|v with separate q/v biases and no k bias (qkv_fused) or three projections, and LayerScale
    (init_values: `gamma_1` / `gamma_2`). Register tokens (num_reg_tokens) follow the class token.

    norm_eps stands for timm's norm_layer: its LayerNorm's epsilon is 1e-6, DINOv3 passes 1e-5.
    As in timm, use_fc_norm=None means a LayerNorm after pooling iff global_pool == 'avg', and
    the LayerNorm after the blocks (`norm`) exists exactly when that one does not. The grid is
    square; ref_feat_shape (EVA-02's rope rescaling, 'cat' only) is the side of the reference grid.
    """

    arch: ClassVar[str] = "eva"
    kind: ClassVar[str] = "an Eva model"  # in messages
    # What a preset (--model) takes from the weights it is read with. Without an absolute position
    # embedding the image size is free (the rotary tables follow it); a 16x16 grid then stands in
    # until an img_size override replaces it, as timm's 256 px at patch 16.
    FROM_WEIGHTS: ClassVar[tuple[str, ...]] = ("patch_size", "num_classes", "img_size")

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000  # 0: no head, the model returns pooled features
    global_pool: str = "avg"  # avg (over the patch tokens) | token (the class token)
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    qkv_bias: bool = True
    qkv_fused: bool = True
    mlp_ratio: float = 4.0
    swiglu_mlp: bool = False
    swiglu_align_to: int = 0
    scale_mlp: bool = False
    scale_attn_inner: bool = False
    init_values: float | None = None  # LayerScale's initial value; None: no LayerScale
    class_token: bool = True
    num_reg_tokens: int = 0
    no_embed_class: bool = False
    use_abs_pos_emb: bool = True
    use_rot_pos_emb: bool = False
    rope_type: str = "cat"
    rope_temperature: float = 10000.0
    rope_grid_offset: float = 0.0
    rope_rotate_half: bool = False  # rotate (first half, second half) pairs instead of (even, odd) ones
    ref_feat_shape: int | None = None
    use_fc_norm: bool | None = None
    norm_eps: float = 1e-6
    drop_rate: float = 0.0  # dropout before the head
    pos_drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    # Any image size at call time (timm's keywords; vit_common/config/dynamic.py):
    dynamic_img_size: bool = False  # any H x W: the position table resized to the grid at each call
    dynamic_img_pad: bool = False  # pad images right / bottom with zeros to whole patches
    pos_embed_interp: str = "timm"  # how the table is resized: the checkpoint source's rule

    def __post_init__(self):
        if isinstance(self.ref_feat_shape, (list, tuple)):  # timm accepts (h, w); only squares here
            sides = set(self.ref_feat_shape)
            if len(sides) != 1:
                raise ConfigError(f"ref_feat_shape must be square, got {self.ref_feat_shape}")
            object.__setattr__(self, "ref_feat_shape", sides.pop())
        self.validate()

    # Derived quantities (the geometry: TokenConfig) ---------------------------------------------
    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.num_reg_tokens

    @property
    def mlp_kind(self) -> str:
        """'gelu' (fc1, fc2), 'swiglu_packed' (fc1 holds gate | value) or 'swiglu' (fc1_g, fc1_x), as timm picks."""
        if not self.swiglu_mlp:
            return "gelu"
        return "swiglu" if self.scale_mlp or self.swiglu_align_to else "swiglu_packed"

    @property
    def mlp_dim(self) -> int:
        """Width of the MLP's hidden layer (after the gate for SwiGLU)."""
        hidden = int(self.embed_dim * self.mlp_ratio)
        if self.mlp_kind == "swiglu" and self.swiglu_align_to:
            hidden += -hidden % self.swiglu_align_to
        return hidden

    @property
    def has_fc_norm(self) -> bool:
        """Whether the LayerNorm after pooling (fc_norm) exists; `norm` exists iff it does not."""
        return self.global_pool == "avg" if self.use_fc_norm is None else bool(self.use_fc_norm)

    @property
    def num_features(self) -> int:
        return self.embed_dim

    # Validation (the shared checks: TokenConfig.validate) -------------------------------------------
    def family_problems(self) -> list[str]:
        problems = []
        if self.pos_embed_interp not in POS_EMBED_INTERPS:
            problems.append(f"pos_embed_interp must be one of {sorted(POS_EMBED_INTERPS)}, got {self.pos_embed_interp!r}")
        if not isinstance(self.num_reg_tokens, int) or self.num_reg_tokens < 0:
            problems.append(f"num_reg_tokens must be an integer >= 0, got {self.num_reg_tokens!r}")
        if not isinstance(self.swiglu_align_to, int) or self.swiglu_align_to < 0:
            problems.append(f"swiglu_align_to must be an integer >= 0, got {self.swiglu_align_to!r}")
        if self.global_pool not in EVA_GLOBAL_POOLS:
            problems.append(f"global_pool must be one of {EVA_GLOBAL_POOLS} for Eva models, got {self.global_pool!r}")
        elif self.global_pool == "token" and not self.class_token:
            problems.append("global_pool='token' needs class_token=True (or use 'avg')")
        if self.global_pool == "avg" and self.num_patches == 0:
            problems.append("global_pool='avg' needs patch tokens")
        if self.init_values is not None and not isinstance(self.init_values, (int, float)):
            problems.append(f"init_values must be a number or None, got {self.init_values!r}")
        if self.rope_type not in ROPE_TYPES:
            problems.append(f"rope_type must be one of {ROPE_TYPES}, got {self.rope_type!r}")
        if self.use_rot_pos_emb:
            if not self.embed_dim % self.num_heads and self.head_dim % 4:
                problems.append(f"rotary embeddings rotate pairs on two axes: head_dim "
                                f"{self.embed_dim} / {self.num_heads} must be divisible by 4")
            if self.rope_type == "cat" and self.rope_rotate_half:
                problems.append("rope_type='cat' builds tables for (even, odd) pairs: rope_rotate_half must be False")
            if not self.rope_temperature > 0:
                problems.append(f"rope_temperature must be positive, got {self.rope_temperature}")
        if self.ref_feat_shape is not None:
            if not positive_int(self.ref_feat_shape):
                problems.append(f"ref_feat_shape must be a positive integer (the side), got {self.ref_feat_shape!r}")
            elif self.rope_type != "cat":
                problems.append("ref_feat_shape rescales EVA-02's rope (rope_type='cat') only")
        return problems

    # Serialisation: ConfigBase (to_dict with "arch": "eva", to_json, from_dict, replace).

    def describe(self) -> str:
        """The architecture in one line, for error messages and reports."""
        rope = f"rope={self.rope_type}" if self.use_rot_pos_emb else "no rope"
        return (f"eva embed_dim={self.embed_dim}, depth={self.depth}, num_heads={self.num_heads}, "
                f"patch_size={self.patch_size}, img_size={self.img_size}, num_classes={self.num_classes}, "
                f"mlp={self.mlp_kind}, {rope}, reg_tokens={self.num_reg_tokens}")


# Presets: timm's names, sizes, and the img_size / num_classes of each name's default pretrained
# tag (timm's create_model takes both from it: fixed_input_size configs set img_size).
_EVA02 = dict(patch_size=14, mlp_ratio=4 * 2 / 3, swiglu_mlp=True, use_rot_pos_emb=True, ref_feat_shape=16)
_EVA02_SIZES = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12, qkv_fused=False, scale_mlp=True),
    "large": dict(embed_dim=1024, depth=24, num_heads=16, qkv_fused=False, scale_mlp=True),
}
# (size, img_size, num_classes): the 224 px names default to MIM-pretrained features (no head),
# the larger ones to ImageNet-1k fine-tunes.
_EVA02_VARIANTS = [("tiny", 224, 0), ("tiny", 336, 1000), ("small", 224, 0), ("small", 336, 1000),
                   ("base", 224, 0), ("base", 448, 1000), ("large", 224, 0), ("large", 448, 1000)]

_DINOV3 = dict(patch_size=16, img_size=256, num_classes=0, init_values=1e-5, use_rot_pos_emb=True,
               rope_type="dinov3", rope_temperature=100.0, rope_rotate_half=True, use_abs_pos_emb=False,
               num_reg_tokens=4, use_fc_norm=False, norm_eps=1e-5)
_SWIGLU8 = dict(swiglu_mlp=True, swiglu_align_to=8)
_DINOV3_SIZES = {  # size -> (architecture, suffixes released: '' (no qkv bias) and/or '_qkvb')
    "tiny": (dict(embed_dim=192, depth=12, num_heads=3), ("_qkvb",)),
    "small": (dict(embed_dim=384, depth=12, num_heads=6), ("", "_qkvb")),
    "small_plus": (dict(embed_dim=384, depth=12, num_heads=6, **_SWIGLU8), ("", "_qkvb")),
    "base": (dict(embed_dim=768, depth=12, num_heads=12), ("", "_qkvb")),
    "large": (dict(embed_dim=1024, depth=24, num_heads=16), ("", "_qkvb")),
    "huge_plus": (dict(embed_dim=1280, depth=32, num_heads=20, **_SWIGLU8), ("", "_qkvb")),
    "7b": (dict(embed_dim=4096, depth=40, num_heads=32, mlp_ratio=2.0, swiglu_mlp=True, swiglu_align_to=64), ("",)),
}


def _build_presets() -> dict[str, dict[str, Any]]:
    presets: dict[str, dict[str, Any]] = {}
    for size, img, classes in _EVA02_VARIANTS:
        presets[f"eva02_{size}_patch14_{img}"] = dict(_EVA02, **_EVA02_SIZES[size], img_size=img, num_classes=classes)
    for size, (arch, suffixes) in _DINOV3_SIZES.items():
        for suffix in suffixes:
            presets[f"vit_{size}_patch16_dinov3{suffix}"] = dict(_DINOV3, **arch, qkv_bias=suffix == "_qkvb")
    return presets


EVA_PRESETS: dict[str, dict[str, Any]] = _build_presets()


def eva_family(cfg: EvaConfig) -> str:
    """'dinov3' or 'eva02': which released family a config belongs to (for preprocessing defaults)."""
    return "dinov3" if cfg.use_rot_pos_emb and cfg.rope_type == "dinov3" else "eva02"
