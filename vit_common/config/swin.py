"""SwinConfig: every architectural choice of a Swin Transformer, validated before anything is allocated."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from ..errors import ConfigError
from .base import ConfigBase
from .fields import positive_int

SWIN_GLOBAL_POOLS = ("avg", "")


@dataclasses.dataclass(frozen=True)
class SwinConfig(ConfigBase):
    """Every architectural choice of a Swin Transformer (v1), with timm's keyword names.

    Stage i works at resolution grid_size / 2**i with embed_dim * 2**i channels; stages 1.. start
    with a patch merging (2x2 neighbourhood -> LayerNorm -> Linear(4C, 2C)). Windows are
    window_size x window_size tokens; odd blocks shift them by window_size // 2. Where a stage's
    resolution is not larger than the window, the window shrinks to the resolution and nothing
    shifts (as in timm and Microsoft's code). timm pads resolutions that windows do not divide;
    here that is an error, so every window is full.

    Defaults are timm's SwinTransformer's, including drop_path_rate=0.1. As in timm, drop_rate
    is the dropout before the head and proj_drop_rate the dropout inside the blocks.
    """

    arch: ClassVar[str] = "swin"
    kind: ClassVar[str] = "a Swin Transformer"  # in messages
    # What a preset (--model) takes from the weights it is read with.
    FROM_WEIGHTS: ClassVar[tuple[str, ...]] = ("img_size", "patch_size", "num_classes", "window_size")

    img_size: int = 224
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000  # 0: no head, the model returns pooled features
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    global_pool: str = "avg"  # avg | '' (no pooling: features and logits per position, (B, H, W, .))
    drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    # Any image size at call time (timm's keywords): each block pads its grid to whole windows
    # (after the cyclic shift, masked for the padded grid), patch merging pads odd sides.
    dynamic_img_size: bool = False
    dynamic_img_pad: bool = False  # pad images right / bottom with zeros to whole patches

    def __post_init__(self):
        for name in ("depths", "num_heads"):  # JSON gives lists; keep the config hashable
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    # Derived quantities -------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def depth(self) -> int:
        """Blocks over all stages."""
        return sum(self.depths)

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    def stage_dim(self, i: int) -> int:
        return self.embed_dim * 2**i

    def stage_resolution(self, i: int) -> int:
        return self.grid_size // 2**i

    def stage_window(self, i: int) -> int:
        """The window actually used in stage i: the resolution itself where that is smaller."""
        return min(self.window_size, self.stage_resolution(i))

    def stage_shift(self, i: int) -> int:
        """The cyclic shift of stage i's odd blocks (0 where one window covers the stage)."""
        return 0 if self.stage_resolution(i) <= self.window_size else self.window_size // 2

    def block_shift(self, i: int, j: int) -> int:
        return self.stage_shift(i) if j % 2 else 0

    def mlp_dim(self, i: int) -> int:
        return int(self.stage_dim(i) * self.mlp_ratio)

    @property
    def num_features(self) -> int:
        """Width of the pooled features that feed the head (the last stage's)."""
        return self.stage_dim(self.num_stages - 1)

    def drop_path_rates(self) -> list[list[float]]:
        """Stochastic depth rate of each block, per stage, rising linearly over all blocks."""
        n = self.depth
        flat = [0.0] if n == 1 else [self.drop_path_rate * k / (n - 1) for k in range(n)]
        out, start = [], 0
        for d in self.depths:
            out.append(flat[start:start + d])
            start += d
        return out

    # Validation ---------------------------------------------------------------------------------
    def validate(self) -> None:
        problems = []
        for name in ("img_size", "patch_size", "in_chans", "embed_dim", "window_size"):
            value = getattr(self, name)
            if not positive_int(value):
                problems.append(f"{name} must be a positive integer, got {value!r}")
        for name in ("depths", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value or not all(positive_int(v) for v in value):
                problems.append(f"{name} must be a non-empty sequence of positive integers (one per stage), "
                                f"got {value!r}")
        if problems:
            raise ConfigError("; ".join(problems))
        if len(self.depths) != len(self.num_heads):
            problems.append(f"depths {self.depths} and num_heads {self.num_heads} give different numbers of stages")
        if self.img_size % self.patch_size:
            problems.append(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        if self.num_classes < 0:
            problems.append(f"num_classes must be >= 0, got {self.num_classes}")
        if self.mlp_ratio <= 0 or int(self.embed_dim * self.mlp_ratio) < 1:
            problems.append(f"mlp_ratio {self.mlp_ratio} gives an empty MLP")
        if self.global_pool not in SWIN_GLOBAL_POOLS:
            problems.append(f"global_pool must be 'avg' or '' for Swin, got {self.global_pool!r}")
        for name in ("drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if problems:
            raise ConfigError("; ".join(problems))
        res = self.grid_size
        for i, heads in enumerate(self.num_heads):
            if i > 0:
                if res % 2:
                    problems.append(f"stage {i} halves a {res}x{res} grid by patch merging, which needs an even "
                                    f"resolution (img_size {self.img_size} / patch_size {self.patch_size} / "
                                    f"2**{i - 1} = {res})")
                    break
                res //= 2
            if self.stage_dim(i) % heads:
                problems.append(f"stage {i} width {self.stage_dim(i)} (embed_dim * 2**{i}) is not divisible by "
                                f"num_heads[{i}] = {heads}")
            if res > self.window_size and res % self.window_size:
                problems.append(f"stage {i} resolution {res}x{res} is not divisible by window_size "
                                f"{self.window_size}; choose an img_size that gives a multiple of the window "
                                f"(e.g. {self.patch_size * self.window_size * 2 ** (self.num_stages - 1)}) "
                                f"or another window_size")
                break
        if problems:
            raise ConfigError("; ".join(problems))

    # Serialisation: ConfigBase (to_dict with "arch": "swin" and lists for depths / num_heads,
    # to_json, from_dict, replace).

    def describe(self) -> str:
        """The architecture in one line, for error messages and reports."""
        return (f"embed_dim={self.embed_dim}, depths={self.depths}, num_heads={self.num_heads}, "
                f"window_size={self.window_size}, patch_size={self.patch_size}, img_size={self.img_size}, "
                f"num_classes={self.num_classes}")
