"""vit_common.weights.resample against scipy (numpy + scipy only): zoom, prefix tokens, PI-resize."""
import numpy as np
import pytest
import scipy.ndimage

from vit_common.weights.resample import METHODS, resample_patch_embed, resample_posemb, resize_matrix

GRIDS = [(14, 24), (24, 14), (7, 12), (12, 7), (4, (12, 16)), (16, (9, 5)), (5, 1), (1, 3)]


def posemb(prefix, side, width=6, seed=0):
    return np.random.default_rng(seed).standard_normal((1, prefix + side * side, width))


@pytest.mark.parametrize("old,new", GRIDS)
def test_zoom_is_scipy_zoom_order1(old, new):
    table = posemb(0, old)
    h, w = (new, new) if isinstance(new, int) else new
    expected = scipy.ndimage.zoom(table[0].reshape(old, old, -1), (h / old, w / old, 1), order=1)
    assert expected.shape == (h, w, table.shape[-1])  # scipy rounds old * factor back to the target
    got = resample_posemb(table, new, method="zoom")
    np.testing.assert_allclose(got[0].reshape(h, w, -1), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("prefix", [1, 2])
def test_prefix_tokens_kept_bit_exactly(method, prefix):
    table = posemb(prefix, 7).astype(np.float32)
    got = resample_posemb(table, (12, 10), num_prefix_tokens=prefix, method=method)
    assert got.shape == (1, prefix + 120, 6) and got.dtype == np.float32
    assert np.array_equal(got[:, :prefix], table[:, :prefix])
    grid_only = resample_posemb(table[:, prefix:], (12, 10), method=method)
    assert np.array_equal(got[:, prefix:], grid_only)


@pytest.mark.parametrize("method", METHODS)
def test_same_grid_is_an_exact_copy(method):
    table = posemb(1, 9).astype(np.float32)
    got = resample_posemb(table, 9, num_prefix_tokens=1, method=method)
    assert np.array_equal(got, table) and got is not table
    # The matrices are identities too, so a non-square target keeps the unchanged axis exact.
    assert np.array_equal(resize_matrix(9, 9, method), np.eye(9))


@pytest.mark.parametrize("method", METHODS)
def test_rows_sum_to_one(method):
    for old, new in [(14, 24), (24, 14), (3, 1), (1, 4)]:
        np.testing.assert_allclose(resize_matrix(old, new, method).sum(1), 1.0, atol=1e-14)


def test_errors_name_shapes_and_methods():
    with pytest.raises(ValueError, match=r"\(1, 50, 6\).*not a square"):
        resample_posemb(np.zeros((1, 50, 6)), 8)
    with pytest.raises(ValueError, match=r"\(1, 50, 6\)"):
        resample_posemb(np.zeros((1, 50, 6)), 8, num_prefix_tokens=2)
    with pytest.raises(ValueError, match="'zoom', 'bilinear', 'bicubic'"):
        resample_posemb(posemb(0, 4), 8, method="nearest")
    with pytest.raises(ValueError, match="'zoom', 'bilinear', 'bicubic'"):
        resample_patch_embed(np.zeros((4, 4, 3, 5)), 8, method="area")
    with pytest.raises(ValueError, match="new_grid"):
        resample_posemb(posemb(0, 4), (0, 3))
    with pytest.raises(ValueError, match="HWIO"):
        resample_patch_embed(np.zeros((4, 5, 3, 5)), 8)


def test_patch_resize_matrix_is_separable_resize():
    x = np.random.default_rng(1).standard_normal((8, 8))
    m = resize_matrix(8, 16, "bilinear")
    assert np.allclose(np.kron(m, m) @ x.ravel(), (m @ x @ m.T).ravel(), rtol=0, atol=1e-13)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("p,new_p", [(8, 16), (16, 32)])
def test_pi_resize_keeps_every_token(method, p, new_p):
    rng = np.random.default_rng(2)
    kernel = rng.standard_normal((p, p, 3, 5))
    patches = rng.standard_normal((4, p, p, 3))
    new_kernel = resample_patch_embed(kernel, new_p, method=method)
    assert new_kernel.shape == (new_p, new_p, 3, 5) and new_kernel.dtype == kernel.dtype
    m = resize_matrix(p, new_p, method)
    resized = np.einsum("hi,wj,nijc->nhwc", m, m, patches)
    tokens = np.einsum("nhwc,hwco->no", patches, kernel)
    np.testing.assert_allclose(np.einsum("nhwc,hwco->no", resized, new_kernel), tokens, rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_pi_resize_down_and_identity(method):
    kernel = np.random.default_rng(3).standard_normal((16, 16, 3, 5)).astype(np.float32)
    down = resample_patch_embed(kernel, 8, method=method)
    assert down.shape == (8, 8, 3, 5) and down.dtype == np.float32 and np.isfinite(down).all()
    same = resample_patch_embed(kernel, 16, method=method)
    assert np.array_equal(same, kernel) and same is not kernel


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("p,new_p", [(8, 16), (8, 5)])
def test_pi_resize_is_pinv_of_the_patch_resize_matrix(method, p, new_p):
    """The per-axis pinv equals pinv(B^T) w with B the full (p'^2, p^2) patch-resize matrix."""
    kernel = np.random.default_rng(4).standard_normal((p, p, 3, 5))
    m = resize_matrix(p, new_p, method)
    full = np.linalg.pinv(np.kron(m, m).T) @ kernel.reshape(p * p, -1)
    np.testing.assert_allclose(resample_patch_embed(kernel, new_p, method=method).reshape(new_p * new_p, -1), full,
                               rtol=0, atol=1e-10)


def test_relative_position_bias_tables():
    from vit_common.weights.resample import resample_relative_position_bias

    table = np.random.default_rng(5).standard_normal((169, 4)).astype(np.float32)  # window 7
    same = resample_relative_position_bias(table, 7)
    assert np.array_equal(same, table) and same is not table
    big = resample_relative_position_bias(table, 12)
    assert big.shape == (529, 4) and big.dtype == np.float32
    # Rows of every resampling matrix sum to one, so a constant table stays constant.
    flat = resample_relative_position_bias(np.full((169, 2), 0.5), 12)
    np.testing.assert_allclose(flat, 0.5, atol=1e-12)
    with pytest.raises(ValueError, match="not \\(2w-1\\)\\^2"):
        resample_relative_position_bias(np.zeros((16, 2)), 4)
    with pytest.raises(ValueError, match="new_window must be a positive integer"):
        resample_relative_position_bias(table, 0)
