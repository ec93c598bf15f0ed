"""Resampling of position embeddings, patch-embedding kernels and Swin's relative position bias
tables, in numpy (float64).

One implementation serves both twins, so a checkpoint adapted for Flax and for PyTorch gets
the same numbers. Every method is a separable 1-D rule written as a (new, old) weight matrix:

- "zoom":     scipy.ndimage.zoom(order=1), what Google's vision_transformer and big_vision do;
              bilinear with the corner samples aligned (torch's align_corners=True).
- "bilinear": torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
              antialias=False), what timm does for position embeddings.
- "bicubic":  torch.nn.functional.interpolate(mode="bicubic", align_corners=False,
              antialias=False): Keys cubic convolution, A = -0.75, taps clamped to the border.

bicubic_matrix() adds what the any-size rules need (see vit_common/config/dynamic.py): torch's
antialiased bicubic and a source step other than old/new (a scale_factor, as DINOv2 passes).
"""
from __future__ import annotations

import numpy as np

METHODS = ("zoom", "bilinear", "bicubic")


def resize_matrix(old: int, new: int, method: str) -> np.ndarray:
    """(new, old) float64 matrix M such that M @ x resamples a length-`old` signal to `new`."""
    if method not in METHODS:
        raise ValueError(f"unknown resampling method {method!r}; choose one of {METHODS}")
    out = np.arange(new, dtype=np.float64)
    if method == "zoom":
        # scipy (grid_mode=False) maps output i to input i * (old-1)/(new-1); a 1-sample output
        # reads input 0. Clipping only absorbs rounding at the last sample.
        scale = (old - 1) / (new - 1) if new > 1 else 0.0
        return _linear(np.clip(out * scale, 0, old - 1), old)
    # torch, align_corners=False: half-pixel centres, scale = old/new.
    src = (out + 0.5) * (old / new) - 0.5
    if method == "bilinear":
        return _linear(np.maximum(src, 0.0), old)  # torch clamps negative sources to 0 for linear only
    return _cubic(src, old)


def bicubic_matrix(old: int, new: int, *, antialias: bool = False, step: float | None = None) -> np.ndarray:
    """(new, old) float64 matrix of torch.nn.functional.interpolate(mode="bicubic",
    align_corners=False, antialias=antialias) along one axis.

    `step` is the source distance between output samples: old / new when torch is given a size,
    1 / scale_factor when it is given a scale factor. Without antialiasing: Keys cubic
    convolution (A = -0.75), taps clamped to the border. With antialiasing (torch's
    _upsample_bicubic2d_aa, PIL's rule): a cubic of A = -0.5 stretched by the step when
    shrinking, taps outside the signal dropped and each row's weights normalised to sum to 1;
    an axis whose size is unchanged is copied, whatever the step.
    """
    step = old / new if step is None else float(step)
    out = np.arange(new, dtype=np.float64)
    if not antialias:
        return _cubic((out + 0.5) * step - 0.5, old)
    if new == old:  # torch's separable antialiased kernel skips an axis whose size is unchanged
        return np.eye(old)
    support = 2.0 * max(step, 1.0)
    stretch = 1.0 / max(step, 1.0)
    centre = step * (out + 0.5)
    first = np.maximum(np.trunc(centre - support + 0.5).astype(np.int64), 0)
    last = np.minimum(np.trunc(centre + support + 0.5).astype(np.int64), old)
    matrix = np.zeros((new, old))
    for i in range(new):
        taps = np.arange(first[i], last[i])
        weights = _keys(np.abs((taps - centre[i] + 0.5) * stretch), -0.5)
        total = weights.sum()
        matrix[i, taps] = weights / total if total != 0 else weights
    return matrix


def _keys(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel at |x| (zero from 2 on)."""
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _linear(src: np.ndarray, old: int) -> np.ndarray:
    """Two taps floor(src), floor(src)+1 (the latter capped at the last sample), as torch does."""
    left = np.floor(src).astype(np.int64)
    frac = src - left
    matrix = np.zeros((len(src), old))
    rows = np.arange(len(src))
    np.add.at(matrix, (rows, left), 1.0 - frac)
    np.add.at(matrix, (rows, np.minimum(left + 1, old - 1)), frac)  # frac is 0 when the cap bites
    return matrix


def _cubic(src: np.ndarray, old: int, a: float = -0.75) -> np.ndarray:
    """Keys cubic convolution as torch computes it: no clamping of `src` (unlike bilinear), four
    taps floor(src)-1 .. floor(src)+2, each tap index clamped into [0, old-1] so that weights of
    out-of-range taps pile onto the edge sample (replicate padding)."""
    left = np.floor(src).astype(np.int64)
    t = src - left
    near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # |x| <= 1
    far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # 1 < |x| < 2
    weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)
    taps = np.clip(left[:, None] + np.arange(-1, 3), 0, old - 1)
    matrix = np.zeros((len(src), old))
    np.add.at(matrix, (np.repeat(np.arange(len(src)), 4), taps.ravel()), weights.ravel())
    return matrix


def _grid_shape(new_grid: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (new_grid, new_grid) if np.isscalar(new_grid) else tuple(new_grid)
    if int(h) != h or int(w) != w or h < 1 or w < 1:
        raise ValueError(f"new_grid must be a positive int or (h, w) pair of them, got {new_grid!r}")
    return int(h), int(w)


def resample_posemb(posemb: np.ndarray, new_grid: int | tuple[int, int], num_prefix_tokens: int = 0,
                    method: str = "zoom") -> np.ndarray:
    """(1, num_prefix_tokens + gh*gw, C) table on a square grid -> (1, num_prefix_tokens + h*w, C).

    The prefix entries (class / distillation tokens) have no place on the grid and are kept as
    they are. Computed in float64, returned in the input dtype. See the module docstring for
    which library each `method` reproduces.
    """
    if method not in METHODS:
        raise ValueError(f"unknown resampling method {method!r}; choose one of {METHODS}")
    posemb = np.asarray(posemb)
    h, w = _grid_shape(new_grid)
    if posemb.ndim != 3 or posemb.shape[0] != 1 or posemb.shape[1] < num_prefix_tokens:
        raise ValueError(f"posemb must be (1, num_prefix_tokens + gh*gw, C) with num_prefix_tokens="
                         f"{num_prefix_tokens}, got shape {posemb.shape}")
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    side = int(round(np.sqrt(len(grid))))
    if side * side != len(grid) or side == 0:
        raise ValueError(f"posemb shape {posemb.shape} minus {num_prefix_tokens} prefix tokens leaves "
                         f"{len(grid)} entries, not a square grid")
    if (h, w) == (side, side):
        return posemb.copy()
    grid = grid.reshape(side, side, -1).astype(np.float64)
    rows, cols = resize_matrix(side, h, method), resize_matrix(side, w, method)
    new = np.einsum("hi,wj,ijc->hwc", rows, cols, grid).reshape(1, h * w, -1)
    return np.concatenate([prefix, new.astype(posemb.dtype)], axis=1)


def resample_patch_embed(kernel: np.ndarray, new_patch_size: int, method: str = "bilinear") -> np.ndarray:
    """FlexiViT's PI-resize of an HWIO (p, p, in, out) kernel to (p', p', in, out).

    With B the (p'^2, p^2) matrix that resizes a flattened p x p patch by `method`, the new kernel
    is pinv(B^T) w, so that <B x, w'> = <x, w> for every patch x when p' >= p (the token an image
    gives is unchanged by upsampling it), and the least-squares best when p' < p.
    FlexiViT resizes with tf.image.resize (bilinear, no antialiasing) = method "bilinear".
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"kernel must be HWIO (p, p, in, out), got shape {kernel.shape}")
    p = kernel.shape[0]
    if new_patch_size == p:
        return kernel.copy()
    if new_patch_size < 1:
        raise ValueError(f"new_patch_size must be positive, got {new_patch_size}")
    # B = M kron M (row-major flattening: vec(M X M^T) = (M kron M) vec(X)), and
    # pinv((M kron M)^T) = pinv(M^T) kron pinv(M^T): one small pinv applied along each axis
    # instead of the SVD of a (p^2, p'^2) matrix.
    back = np.linalg.pinv(resize_matrix(p, new_patch_size, method).T)
    new = np.einsum("hi,wj,ijab->hwab", back, back, kernel.astype(np.float64))
    return new.astype(kernel.dtype)


def resample_relative_position_bias(table: np.ndarray, new_window: int, method: str = "bicubic") -> np.ndarray:
    """A Swin relative position bias table ((2w-1)^2, heads) -> ((2w'-1)^2, heads).

    Each head's table is a (2w-1) x (2w-1) image over (dy, dx) offsets; it is resized to
    (2w'-1) x (2w'-1) with `method`. The default, bicubic with corners not aligned, is
    torch.nn.functional.interpolate(mode="bicubic", align_corners=False), which Microsoft's
    Swin code uses to fine-tune at a larger window and timm uses for its simple resize
    (timm.layers.resize_rel_pos_bias_table_simple). Computed in float64, returned in the
    input dtype.
    """
    table = np.asarray(table)
    if table.ndim != 2:
        raise ValueError(f"a relative position bias table is ((2w-1)^2, heads), got shape {table.shape}")
    side = int(round(np.sqrt(table.shape[0])))
    if side * side != table.shape[0] or side % 2 == 0:
        raise ValueError(f"a table of {table.shape[0]} rows is not (2w-1)^2 for any window w")
    if int(new_window) != new_window or new_window < 1:
        raise ValueError(f"new_window must be a positive integer, got {new_window!r}")
    new_side = 2 * int(new_window) - 1
    if new_side == side:
        return table.copy()
    m = resize_matrix(side, new_side, method)
    grid = table.reshape(side, side, -1).astype(np.float64)
    new = np.einsum("hi,wj,ijc->hwc", m, m, grid).reshape(new_side * new_side, -1)
    return new.astype(table.dtype)
