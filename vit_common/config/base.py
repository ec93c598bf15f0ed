"""What the config families share: serialisation and field checks (ConfigBase: ViT, Eva, Swin),
and the derived quantities and checks of a plain token transformer (TokenConfig: ViT, Eva)."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

from ..errors import ConfigError
from .fields import FAMILY_NAMES, check_fields, positive_int

DROP_RATES = ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate")


class ConfigBase:
    """A frozen dataclass of architectural choices, validated on creation, carried as JSON."""
    arch: ClassVar[str]  # the family: vit / eva / swin
    kind: ClassVar[str]  # the family in messages ("a ViT")
    FROM_WEIGHTS: ClassVar[tuple[str, ...]]  # what a preset (--model) takes from the weights it is read with
    TAGGED: ClassVar[bool] = True  # to_dict() says "arch" (ViT's predates the tag: none, as before Swin existed)
    # Old field names still read from saved configs: old name -> the field it became.
    RENAMED: ClassVar[dict[str, str]] = {}

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        return {"arch": self.arch, **values} if self.TAGGED else values

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        values = dict(values)
        arch = values.pop("arch", cls.arch)
        if arch != cls.arch:
            raise ConfigError(f"a config of arch {arch!r} is not {cls.kind.split()[0]} {FAMILY_NAMES[cls.arch]} config")
        for old, new in cls.RENAMED.items():
            if old in values and new not in values:
                values[new] = values.pop(old)
        check_fields(cls, values)
        return cls(**values)

    def replace(self, **overrides: Any):
        check_fields(type(self), overrides)
        return dataclasses.replace(self, **overrides)


class TokenConfig(ConfigBase):
    """A plain ViT's geometry (one patch grid, prefix tokens, heads) and its shared checks."""

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def num_pos_embed(self) -> int:
        return self.num_patches + (0 if self.no_embed_class else self.num_prefix_tokens)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def drop_path_rates(self) -> list[float]:
        """Stochastic depth rate of each block, rising linearly from 0 to drop_path_rate."""
        if self.depth == 1:
            return [0.0]
        return [self.drop_path_rate * i / (self.depth - 1) for i in range(self.depth)]

    def family_problems(self) -> list[str]:
        """What is wrong with the family's own fields (the shared ones are checked by validate)."""
        return []

    def validate(self) -> None:
        problems = [f"{name} must be a positive integer, got {getattr(self, name)!r}"
                    for name in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads")
                    if not positive_int(getattr(self, name))]
        if problems:
            raise ConfigError("; ".join(problems))
        if self.img_size % self.patch_size:
            problems.append(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.num_classes < 0:
            problems.append(f"num_classes must be >= 0, got {self.num_classes}")
        if self.mlp_ratio <= 0 or int(self.embed_dim * self.mlp_ratio) < 1:
            problems.append(f"mlp_ratio {self.mlp_ratio} gives an empty MLP")
        problems += self.family_problems()
        if not self.norm_eps > 0:
            problems.append(f"norm_eps must be positive, got {self.norm_eps}")
        problems += [f"{name} must be in [0, 1), got {getattr(self, name)}" for name in DROP_RATES
                     if not 0.0 <= getattr(self, name) < 1.0]
        if problems:
            raise ConfigError("; ".join(problems))
