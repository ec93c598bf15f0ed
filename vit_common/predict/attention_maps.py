"""Where a ViT looks: attention rollout, last-layer per-head maps, and a PNG showing both.

Numpy and matplotlib only. Attention weights are (B, heads, T, T) per layer, rows = queries,
tokens ordered [prefix tokens (class, distillation, registers), patches in row-major grid order].
Models without a class token that pool with a MAP probe (SigLIP) read the probe's attention
(B, heads, 1, T) instead of the class token's row.

Swin attends inside windows, and its stages see different token grids, so its maps cover the
last stage only (the one that feeds the pooled features): swin_last_stage_attention puts each of
its blocks' window attention back on the stage's grid as a (B, heads, T, T) matrix (zero across
windows, the shift undone), which the functions here then treat like a ViT's without a class
token: rollout over the last stage's blocks, and each head's mean attention over all queries.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from ..atomic import atomic_write


def _grid_shape(grid: int | tuple[int, int]) -> tuple[int, int]:
    return (grid, grid) if isinstance(grid, (int, np.integer)) else (int(grid[0]), int(grid[1]))


def _read_row(maps: np.ndarray, num_prefix_tokens: int, average: bool | None = None) -> np.ndarray:
    """(..., T, T) -> (..., T): the row the prediction reads, the class token's; models that
    average their patch tokens (average=True; None: those without prefix tokens) get the mean
    over the patch rows."""
    if average is None:
        average = not num_prefix_tokens
    return maps[..., num_prefix_tokens:, :].mean(axis=-2) if average else maps[..., 0, :]


def map_query(cfg) -> str:
    """What the maps of a model show attention from: its class token, its MAP probe (SigLIP), or,
    for a model that averages its tokens (global average pooling, Swin), the mean of all tokens."""
    if getattr(cfg, "global_pool", None) == "map":
        return "MAP probe"
    if cfg.arch == "vit" and cfg.class_token and cfg.global_pool == "token":
        return "class token"
    return "mean of all tokens"


def _patches(rows: np.ndarray, num_prefix_tokens: int, grid) -> np.ndarray:
    gh, gw = _grid_shape(grid)
    tokens = rows.shape[-1]
    if tokens != num_prefix_tokens + gh * gw:
        raise ValueError(f"attention over {tokens} tokens does not fit {num_prefix_tokens} prefix tokens "
                         f"+ a {gh}x{gw} patch grid")
    return rows[..., num_prefix_tokens:].reshape(*rows.shape[:-1], gh, gw)


def swin_last_stage_attention(attentions: Sequence[np.ndarray], cfg) -> list[np.ndarray]:
    """Every block's window attention of a Swin model (B * windows, heads, w*w, w*w) -> the last
    stage's blocks as (B, heads, T, T) over its R x R grid (T = R*R), in grid order."""
    from ..config.windows import full_attention

    last = cfg.num_stages - 1
    depth = cfg.depths[last]
    if len(attentions) != cfg.depth:
        raise ValueError(f"expected attention weights of all {cfg.depth} blocks, got {len(attentions)}")
    res, window = cfg.stage_resolution(last), cfg.stage_window(last)
    return [full_attention(a, res, window, cfg.block_shift(last, j))
            for j, a in enumerate(attentions[len(attentions) - depth:])]


def attention_rollout(attentions: Sequence[np.ndarray], num_prefix_tokens: int, grid: int | tuple[int, int],
                      probe: np.ndarray | None = None, average: bool | None = None) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) -> (B, gh, gw).

    Per layer: average the heads, add the identity for the residual path, renormalise the rows;
    then chain the layers (later @ earlier), so entry [i, j] is how much token i at the top draws
    on input token j. Values are the raw share each patch gets (not rescaled). A MAP probe's
    attention (B, heads, 1, T) is the row read: its head average times the chain (the probe is
    no token, so it has no residual path). average=True reads the mean of the patch rows (a model
    that averages its patch tokens); None: when there are no prefix tokens.
    """
    if not attentions:
        raise ValueError("attention rollout needs at least one layer of attention weights")
    rollout = None
    for layer in attentions:
        a = np.asarray(layer, np.float64).mean(axis=1)  # (B, T, T), float64 so deep chains stay exact
        a = a + np.eye(a.shape[-1])
        a = a / a.sum(axis=-1, keepdims=True)
        rollout = a if rollout is None else a @ rollout
    if probe is not None:
        row = np.einsum("bt,bts->bs", np.asarray(probe, np.float64).mean(axis=1)[:, 0], rollout)
    else:
        row = _read_row(rollout, num_prefix_tokens, average)
    return _patches(row, num_prefix_tokens, grid).astype(np.float32)


def last_layer_cls_attention(attentions: Sequence[np.ndarray], num_prefix_tokens: int, grid: int | tuple[int, int],
                             probe: np.ndarray | None = None, average: bool | None = None) -> np.ndarray:
    """Each head's last-layer attention from the class token (mean over rows without one) to
    the patches -> (B, heads, gh, gw); with a MAP probe's attention (B, heads, 1, T), the
    probe's, which reads the last layer's output. `average` as in attention_rollout."""
    if probe is not None:
        return _patches(np.asarray(probe, np.float32)[:, :, 0], num_prefix_tokens, grid)
    if not attentions:
        raise ValueError("per-head maps need at least one layer of attention weights")
    last = np.asarray(attentions[-1], np.float32)
    return _patches(_read_row(last, num_prefix_tokens, average), num_prefix_tokens, grid)


# -------------------------------------------------------------------------------------------------
def _upsample(heat: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (gh, gw) map stretched bilinearly to the image and scaled to [0, 1] for display."""
    from PIL import Image

    big = np.asarray(Image.fromarray(np.ascontiguousarray(heat, np.float32))
                     .resize((width, height), Image.Resampling.BILINEAR))
    lo, hi = float(big.min()), float(big.max())
    return (big - lo) / (hi - lo) if hi > lo else np.zeros_like(big)


def _layout(heads: int) -> tuple[int, int, float, float, float]:
    """Head-panel columns and rows, figure width, heights of the top row and of the head rows
    (inches): up to 6 heads a row, every panel about square, so little white space."""
    cols = min(heads, 6)
    rows = math.ceil(heads / cols)
    width = max(6.5, 1.7 * cols)
    top_height = (width - 0.9) / 2 + 0.6  # two square panels beside a colorbar, plus titles
    return cols, rows, width, top_height, rows * (width / cols + 0.45)


def figure_size(heads: int, dpi: int = 100) -> tuple[int, int]:
    """Pixel size of the PNG save_attention_png writes for a model with `heads` heads."""
    _, _, width, top_height, heads_height = _layout(heads)
    return round(width * dpi), round((top_height + heads_height) * dpi)


def save_attention_png(image_uint8_hwc: np.ndarray, rollout: np.ndarray, per_head: np.ndarray,
                       path: str | os.PathLike, *, title: str | None = None,
                       query: str = "class token") -> None:
    """One PNG: the input, the rollout over it, and a row (or rows, past 6) of per-head maps.

    `image_uint8_hwc` should be the crop the model saw, so the maps line up with it; `rollout`
    is (gh, gw), `per_head` (heads, gh, gw); `query` names the row they read ("class token",
    "mean of all tokens"). Each map is min-max scaled on its own panel.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    image = np.asarray(image_uint8_hwc)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    h, w = image.shape[:2]
    cmap = "gray" if image.ndim == 2 else None
    heads = len(per_head)
    cols, rows, width, top_height, heads_height = _layout(heads)
    fig = Figure(figsize=(width, top_height + heads_height), layout="constrained")
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title, fontsize=12)
    top, bottom = fig.subfigures(2, 1, height_ratios=[top_height, heads_height])

    ax_image, ax_rollout = top.subplots(1, 2)
    ax_image.imshow(image, cmap=cmap)
    ax_image.set_title("input (as the model sees it)", fontsize=10)
    ax_rollout.imshow(image, cmap=cmap)
    overlay = ax_rollout.imshow(_upsample(rollout, h, w), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    ax_rollout.set_title(f"attention rollout from the {query}", fontsize=10)
    top.colorbar(overlay, ax=ax_rollout, shrink=0.8, label="attention (scaled to panel)")

    bottom.suptitle(f"last layer, each head: attention from the {query}", fontsize=10)
    head_axes = np.atleast_1d(bottom.subplots(rows, cols)).reshape(-1)
    for i, ax in enumerate(head_axes):
        ax.set_axis_off()
        if i < heads:
            ax.imshow(image, cmap=cmap)
            ax.imshow(_upsample(per_head[i], h, w), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ax.set_title(f"head {i + 1}", fontsize=9)
    for ax in (ax_image, ax_rollout):
        ax.set_axis_off()

    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
