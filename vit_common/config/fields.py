"""Checks shared by the config families: unknown field names, positive integers."""
from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigError

FAMILY_NAMES = {"vit": "ViT", "swin": "Swin", "eva": "Eva"}  # a config class's `arch` -> its name in messages


def check_fields(cls, values: dict[str, Any]) -> None:
    """Raise naming every key of `values` that is not a field of the config class `cls`."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{FAMILY_NAMES[cls.arch]} configs have no field(s) {unknown} (unknown config fields; "
                          f"known fields: {sorted(known)})")


def positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
