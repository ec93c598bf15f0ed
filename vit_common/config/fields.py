"""Checks shared by the config families: unknown field names, positive integers."""
from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigError


def check_fields(cls, values: dict[str, Any]) -> None:
    """Raise naming every key of `values` that is not a field of the config class `cls`."""
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        family = "Swin" if cls.__name__ == "SwinConfig" else "ViT"
        raise ConfigError(f"{family} configs have no field(s) {unknown}")


def positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
