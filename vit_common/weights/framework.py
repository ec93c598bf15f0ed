"""FrameworkLayout: how a framework stores the canonical arrays under its own parameter names.

The base of both twins' mappings (weights.flax_names, weights.timm_names), walking the link table.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..config import ModelConfig
from ..errors import WeightsMismatchError
from .canonical import Weights, links, listing
from .tables import Link


class FrameworkLayout:
    """How one framework stores a link's canonical arrays under its own parameter names.

    Subclasses say how each kind of link is encoded; `export` and `import_` walk the link table.
    Every operation is a transpose, reshape, split or concatenation, so round trips are exact.
    """

    weight_name = "weight"
    norm_scale_name = "weight"

    def encode(self, link: Link, arrays: list[np.ndarray], part: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, link: Link, value: np.ndarray, part: str) -> list[np.ndarray]:
        raise NotImplementedError

    def _parts(self, link: Link) -> list[tuple[str, str]]:
        """(framework suffix, canonical suffix) pairs of a link."""
        if link.kind == "array":
            return [("", "")]
        if link.kind == "norm":
            return [(self.norm_scale_name, "scale")] + ([("bias", "bias")] if link.bias else [])
        parts = [(self.weight_name, "kernel")]
        if link.bias:
            parts.append(("bias", "bias"))
        return parts

    def export(self, canonical: Mapping[str, np.ndarray], cfg: ModelConfig) -> Weights:
        """Canonical -> this framework's flat names (module path + '.' + parameter)."""
        out: Weights = {}
        for link in links(cfg):
            for fw_part, canon_part in self._parts(link):
                arrays = [np.asarray(canonical[join(p, canon_part)]) for p in link.canonical]
                out[join(link.module, fw_part, ".")] = self.encode(link, arrays, canon_part)
        return out

    def import_(self, params: Mapping[str, np.ndarray], cfg: ModelConfig) -> Weights:
        """This framework's flat names -> canonical."""
        expected = {join(link.module, fw, "."): (link, canon) for link in links(cfg) for fw, canon in self._parts(link)}
        missing = sorted(set(expected) - set(params))
        unexpected = sorted(set(params) - set(expected))
        if missing or unexpected:
            lines = ["parameter names do not fit the model:"]
            if missing:
                lines += ["missing:"] + listing([f"  {k}" for k in missing])
            if unexpected:
                lines += ["unexpected:"] + listing([f"  {k}" for k in unexpected])
            raise WeightsMismatchError("\n".join(lines))
        out: Weights = {}
        bad = []
        for name, (link, canon_part) in expected.items():
            value = np.asarray(params[name])
            shapes = link.canonical_shapes()
            try:
                decoded = self.decode(link, value, canon_part)
            except ValueError:
                decoded = []
            wanted = [shapes[join(p, canon_part)] for p in link.canonical]
            if [a.shape for a in decoded] != wanted:
                bad.append(f"  {name}: found {value.shape}, which does not hold {len(wanted)} x {wanted[0]}")
                continue
            for prefix, array in zip(link.canonical, decoded):
                out[join(prefix, canon_part)] = array
        if bad:
            raise WeightsMismatchError("parameter shapes do not fit the model:\n" + "\n".join(listing(bad)))
        return out


def join(prefix: str, suffix: str, sep: str = "/") -> str:
    return f"{prefix}{sep}{suffix}" if suffix else prefix


def split_fused(value: np.ndarray, n: int, axis: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(a) for a in np.split(value, n, axis=axis)]
