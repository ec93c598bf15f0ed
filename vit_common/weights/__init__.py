"""Weights in the canonical layout: the link tables, the twins' parameter names, resampling,
adapting to a new image/patch/window size or class count, and architecture inference from shapes.
Numpy only."""
from ..errors import WeightsMismatchError
from .canonical import Weights, canonical_shapes, check_weights, count_params, links
from .flax_names import FLAX, flatten_params, nest_params
from .tables import Link
from .timm_names import TIMM

__all__ = [
    "FLAX", "Link", "TIMM", "Weights", "WeightsMismatchError", "canonical_shapes", "check_weights", "count_params",
    "flatten_params", "links", "nest_params",
]
