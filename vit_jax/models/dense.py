"""Dense features (vit_common.predict.dense.DenseFeatures) in JAX's image layout."""
from __future__ import annotations

from vit_common.predict.dense import DenseFeatures as _DenseFeatures

from .layers import dense_output


class DenseFeatures(_DenseFeatures):
    GRID_FMT = "NHWC"  # get_intermediate_layers(reshape=True) gives (B, H', W', C)
    dense_output = staticmethod(dense_output)
