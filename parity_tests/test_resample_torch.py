"""vit_common.weights.resample against torch.nn.functional.interpolate in float64."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vit_common.weights.resample import resample_posemb, resample_relative_position_bias

GRIDS = [(14, 24), (24, 14), (7, 12), (12, 7), (4, (12, 16)), (16, (9, 5)), (5, 1), (1, 3)]
TORCH_EQUIVALENT = {  # method -> (torch mode, align_corners)
    "bilinear": ("bilinear", False),
    "bicubic": ("bicubic", False),
    "zoom": ("bilinear", True),  # the contract's claim: scipy zoom(order=1) == align_corners=True
}


@pytest.mark.parametrize("method", TORCH_EQUIVALENT)
@pytest.mark.parametrize("old,new", GRIDS)
def test_matches_torch_interpolate(method, old, new):
    prefix, width = 1, 6
    table = np.random.default_rng(0).standard_normal((1, prefix + old * old, width))
    h, w = (new, new) if isinstance(new, int) else new
    mode, align_corners = TORCH_EQUIVALENT[method]
    grid = torch.from_numpy(table[0, prefix:]).reshape(1, old, old, width).permute(0, 3, 1, 2)  # (1, C, gh, gw)
    expected = F.interpolate(grid, size=(h, w), mode=mode, align_corners=align_corners, antialias=False)
    expected = expected.permute(0, 2, 3, 1).reshape(1, h * w, width).numpy()
    got = resample_posemb(table, new, num_prefix_tokens=prefix, method=method)
    np.testing.assert_allclose(got[:, prefix:], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("old,new", [(7, 12), (12, 7), (4, 8), (7, 3), (2, 7)])
def test_relative_position_bias_matches_torch_bicubic(old, new):
    """Swin's tables resampled as Microsoft's fine-tuning code does: each head's (2w-1)^2 grid of
    offsets through F.interpolate(mode='bicubic', align_corners=False)."""
    heads = 3
    table = np.random.default_rng(0).standard_normal(((2 * old - 1) ** 2, heads))
    grid = torch.from_numpy(table).T.reshape(1, heads, 2 * old - 1, 2 * old - 1)
    expected = F.interpolate(grid, size=(2 * new - 1, 2 * new - 1), mode="bicubic", align_corners=False)
    expected = expected.reshape(heads, -1).T.numpy()
    got = resample_relative_position_bias(table, new)
    assert got.shape == ((2 * new - 1) ** 2, heads)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("old,new", [(37, 16), (37, 12), (37, 18), (14, 10), (7, 12), (7, 7), (16, 40), (5, 1)])
def test_bicubic_matrix_is_torch_interpolate(old, new, antialias):
    """Both any-size steps: a size (timm, transformers, DINOv2 with registers) and a scale factor
    (new + 0.1) / old (DINOv2's hub), each with and without antialiasing, in float64."""
    from vit_common.weights.resample import bicubic_matrix

    signal = torch.from_numpy(np.random.default_rng(old * new).standard_normal((1, 1, old, 3)))
    by_size = F.interpolate(signal, size=(new, 3), mode="bicubic", align_corners=False, antialias=antialias)
    np.testing.assert_allclose(bicubic_matrix(old, new, antialias=antialias) @ signal[0, 0].numpy(),
                               by_size[0, 0].numpy(), rtol=0, atol=1e-12)
    factor = (new + 0.1) / old
    by_factor = F.interpolate(signal, scale_factor=(factor, 1.0), mode="bicubic", align_corners=False,
                              antialias=antialias)
    assert by_factor.shape[2] == new
    np.testing.assert_allclose(bicubic_matrix(old, new, antialias=antialias, step=1 / factor) @ signal[0, 0].numpy(),
                               by_factor[0, 0].numpy(), rtol=0, atol=1e-12)
