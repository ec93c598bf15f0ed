"""Swin's fixed window tables, computed once in numpy so both twins share them.

Tokens of a stage form a (R, R) grid (row-major). A window is a (w, w) tile of it; windows are
numbered row-major over the tiles, and tokens inside a window row-major. Both twins partition,
shift and mask with exactly these conventions (timm's and Microsoft's).
"""
from __future__ import annotations

import functools

import numpy as np

MASK_VALUE = -100.0  # added to the logits of token pairs from different regions (Microsoft's value)


def relative_position_index(window: int) -> np.ndarray:
    """(w*w, w*w) int32: for query token a and key token b of a window, the row of the
    ((2w-1)^2, heads) bias table that holds their offset, (dy + w-1) * (2w-1) + (dx + w-1)."""
    ys, xs = np.divmod(np.arange(window * window), window)
    dy = ys[:, None] - ys[None, :] + window - 1
    dx = xs[:, None] - xs[None, :] + window - 1
    return (dy * (2 * window - 1) + dx).astype(np.int32)


def window_partition(x: np.ndarray, window: int) -> np.ndarray:
    """(B, R, R, C) -> (B * nW, w*w, C), windows row-major within each image."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: np.ndarray, window: int, resolution: int) -> np.ndarray:
    """The inverse of window_partition: (B * nW, w*w, C) -> (B, R, R, C)."""
    n = resolution // window
    c = windows.shape[-1]
    x = windows.reshape(-1, n, n, window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, resolution, resolution, c)


@functools.lru_cache(maxsize=64)
def shifted_window_mask(resolution: int | tuple[int, int], window: int, shift: int) -> np.ndarray | None:
    """(nW, w*w, w*w) float32 additive mask of the shifted windows: 0 where two tokens of a window
    were neighbours before the cyclic shift, MASK_VALUE where the roll brought them together
    from opposite borders. None when nothing shifts.

    After rolling the grid by -shift, each axis splits into three regions: [0, R-w) (never
    shares a window with the others), [R-w, R-shift) and [R-shift, R) (the wrapped-around rows).
    Two tokens may attend to each other iff they lie in the same region on both axes.
    `resolution` may be an (H, W) pair (an image of another size, its grid padded to whole
    windows, as timm's dynamic mask does). The result is read-only (cached per shape).
    """
    if shift == 0:
        return None
    rh, rw = (resolution, resolution) if np.isscalar(resolution) else resolution
    if not (0 < shift < window <= min(rh, rw)) or rh % window or rw % window:
        raise ValueError(f"a shift of {shift} needs 0 < shift < window ({window}) <= resolution ({resolution}) "
                         "and windows that tile the grid")

    def regions(n):
        r = np.arange(n)
        return (r >= n - window).astype(np.int32) + (r >= n - shift)

    labels = (3 * regions(rh)[:, None] + regions(rw)[None, :]).astype(np.float32)  # (H, W)
    labels = window_partition(labels[None, :, :, None], window)[..., 0]  # (nW, w*w)
    mask = np.where(labels[:, :, None] == labels[:, None, :], 0.0, MASK_VALUE).astype(np.float32)
    mask.flags.writeable = False
    return mask


def full_attention(maps: np.ndarray, resolution: int, window: int, shift: int) -> np.ndarray:
    """Window attention (B * nW, heads, w*w, w*w) of one block -> (B, heads, R*R, R*R) over the
    stage's token grid in its own (unshifted) order: zero between tokens of different windows.
    For attention maps and rollout over a stage (numpy, float64)."""
    maps = np.asarray(maps, np.float64)
    n_win = (resolution // window) ** 2
    heads, area = maps.shape[1], window * window
    # Token ids of each window position, in the shifted frame, then mapped back to the grid.
    ids = np.arange(resolution * resolution).reshape(1, resolution, resolution, 1)
    ids = np.roll(ids, (-shift, -shift), axis=(1, 2)) if shift else ids
    ids = window_partition(ids, window)[..., 0]  # (nW, w*w): grid token at each window slot
    batch = maps.shape[0] // n_win
    maps = maps.reshape(batch, n_win, heads, area, area)
    full = np.zeros((batch, heads, resolution * resolution, resolution * resolution))
    for k in range(n_win):
        full[:, :, ids[k][:, None], ids[k][None, :]] = maps[:, k]
    return full
