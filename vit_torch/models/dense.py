"""Dense features (vit_common.predict.dense.DenseFeatures) in PyTorch's image layout."""
from __future__ import annotations

from vit_common.predict.dense import DenseFeatures as _DenseFeatures

from .layers import dense_output


class DenseFeatures(_DenseFeatures):
    GRID_FMT = "NCHW"  # get_intermediate_layers(reshape=True) gives (B, C, H', W')
    dense_output = staticmethod(dense_output)
