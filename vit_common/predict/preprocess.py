"""Images from disk -> the NHWC float32 pixels a ViT checkpoint expects (numpy + Pillow)."""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# What a checkpoint's meta["preprocess"] may set; anything else there is ignored.
PREPROCESS_KEYS = ("crop_pct", "interpolation", "mean", "std")
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class ImageError(ValueError):
    """An image file that is missing or that Pillow cannot decode."""


def load_image(path: str | os.PathLike) -> Image.Image:
    """The image at `path` as RGB, turned upright as its EXIF orientation says (phone photos)."""
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except FileNotFoundError as e:
        raise ImageError(f"image {path} does not exist") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageError(f"image {path} is not readable ({e})") from e


def options_from_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The preprocessing a checkpoint asks for in meta['preprocess'], as preprocess() keywords."""
    stored = meta.get("preprocess") or {}
    return {k: stored[k] for k in PREPROCESS_KEYS if stored.get(k) is not None}


def resize_and_crop(image: Image.Image, img_size: int, *, crop_pct: float = 0.875,
                    interpolation: str = "bicubic") -> Image.Image:
    """Resize the shorter side to img_size / crop_pct, then cut the central img_size square."""
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose one of {sorted(INTERPOLATIONS)}")
    scale_size = math.floor(img_size / crop_pct)  # timm's rule: 224 / 0.875 = 256
    w, h = image.size
    if w <= h:
        size = (scale_size, max(scale_size, round(h * scale_size / w)))
    else:
        size = (max(scale_size, round(w * scale_size / h)), scale_size)
    image = image.resize(size, INTERPOLATIONS[interpolation])
    left, top = (size[0] - img_size) // 2, (size[1] - img_size) // 2
    return image.crop((left, top, left + img_size, top + img_size))


def to_array(images: Sequence[Image.Image], *, mean: Sequence[float] | float | None = None,
             std: Sequence[float] | float | None = None, in_chans: int = 3) -> np.ndarray:
    """Same-size PIL images -> (B, H, W, C) float32: in [-1, 1] by default (Google's checkpoints),
    (x/255 - mean) / std when mean and std are given (ImageNet-style)."""
    if in_chans not in (1, 3):
        raise ValueError(f"images can feed models with 1 or 3 input channels, not {in_chans}")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither (then pixels are scaled to [-1, 1])")
    mode = "L" if in_chans == 1 else "RGB"
    x = np.stack([np.asarray(im.convert(mode), np.float32).reshape(im.size[1], im.size[0], in_chans)
                  for im in images])
    if mean is None:
        return x / 127.5 - 1.0
    return ((x / 255.0 - _per_channel(mean, in_chans, "mean")) / _per_channel(std, in_chans, "std")).astype(np.float32)


def _per_channel(values, in_chans: int, name: str) -> np.ndarray:
    v = np.asarray(values, np.float32).reshape(-1)
    if v.size not in (1, in_chans):
        raise ValueError(f"{name} has {v.size} values but the model takes {in_chans} channel(s)")
    return np.broadcast_to(v, (in_chans,))


def preprocess(images: Image.Image | Sequence[Image.Image], img_size: int, *, crop_pct: float = 0.875,
               interpolation: str = "bicubic", mean: Sequence[float] | float | None = None,
               std: Sequence[float] | float | None = None, in_chans: int = 3) -> np.ndarray:
    """PIL images of any size -> (B, img_size, img_size, in_chans) float32, NHWC."""
    if isinstance(images, Image.Image):
        images = [images]
    crops = [resize_and_crop(im, img_size, crop_pct=crop_pct, interpolation=interpolation) for im in images]
    return to_array(crops, mean=mean, std=std, in_chans=in_chans)
