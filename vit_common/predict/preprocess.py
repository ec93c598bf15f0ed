"""Images from disk -> the NHWC float32 pixels a ViT checkpoint expects (numpy + Pillow).

A checkpoint records how its images must be prepared in meta["preprocess"] (final.npz, run
folders' config.json, every vit-convert output), a dict of PREPROCESS_KEYS:
  color_mode     "L" (grayscale, ITU-R 601-2 luma) or "RGB": what each file is converted to first
  resize         "shorter_side": shorter side to floor(img_size / crop_pct), then the central
                   img_size square (timm's eval transform)
                 "center_square": the central square of side min(w, h) * crop_pct, resized to
                   img_size in one step (train.py's evaluation, vit_data.augment.prepare_record)
                 "squash": the whole image resized to img_size x img_size, aspect not kept
                   (Google's vision_transformer / big_vision evaluation); crop_pct must be 1
  crop_pct       (0, 1]
  interpolation  a Pillow filter name (INTERPOLATIONS)
  mean, std      per channel (or one value), pixels -> (x / 255 - mean) / std; mean = std = 0.5
                 (or both absent) is the [-1, 1] range, computed as x / 127.5 - 1 like the loader
Files written before "resize" and "color_mode" existed hold only crop_pct / interpolation /
mean / std; the missing entries take the defaults below (timm's shorter-side rule, the model's
channels), which is what vit-predict applied to them then.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# What a checkpoint's meta["preprocess"] may set; anything else there is ignored.
PREPROCESS_KEYS = ("resize", "crop_pct", "interpolation", "mean", "std", "color_mode")
RESIZE_RULES = ("shorter_side", "center_square", "squash")
COLOR_MODES = {"L": 1, "RGB": 3}  # PIL mode -> channels
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class ImageError(ValueError):
    """An image file that is missing, that Pillow cannot decode, or whose pixel mode cannot be read."""


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Pillow modes read_image understands, by how they become 8-bit L or RGB (see read_image).
_EIGHT_BIT = {"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"}
_WITH_ALPHA = {"LA", "La", "PA", "RGBA", "RGBa"}
_HIGH_DEPTH = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
READABLE_MODES = _EIGHT_BIT | _WITH_ALPHA | _HIGH_DEPTH
GRAYSCALE_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def probe_image(path: str | os.PathLike) -> str:
    """The Pillow mode of the image at `path`, from its header only (no pixels decoded): fast
    enough to check every file of a dataset. ImageError if the file is missing, not an image Pillow
    knows, or of a mode read_image cannot turn into 8-bit pixels."""
    try:
        with Image.open(path) as image:
            mode = image.mode
    except FileNotFoundError as e:
        raise ImageError(f"image {path} does not exist") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"image {path} is not readable ({e})") from e
    if mode not in READABLE_MODES:
        raise ImageError(f"image {path} has Pillow mode {mode!r}, which cannot be read as 8-bit L or RGB; convert "
                         "it to an 8-bit RGB or grayscale PNG or JPEG")
    return mode


def read_image(path: str | os.PathLike, mode: str = "RGB") -> Image.Image:
    """The image at `path` as 8-bit `mode` ("L" or "RGB"), as a viewer shows it: turned upright by
    its EXIF orientation (phone photos); transparent pixels over white (LA, PA, RGBA, P with a
    transparent colour; as transformers' convert_to_rgb); 16- and 32-bit integer pixels (I;16*,
    I) scaled by their bit depth to 0..255, not clipped; float pixels (F) read as 0..1; CMYK,
    YCbCr, HSV and palettes converted by Pillow; colour to L by ITU-R 601-2 luma. vit-predict and
    vit_data's folder source both read files through here, so both see the same pixels."""
    if mode not in COLOR_MODES:
        raise ValueError(f"images are read as 'L' or 'RGB', not {mode!r}")
    try:
        with Image.open(path) as image:
            image.load()
            bits = _declared_bits(image)
            image = ImageOps.exif_transpose(image)
    except FileNotFoundError as e:
        raise ImageError(f"image {path} does not exist") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"image {path} is not readable ({e})") from e
    if image.mode not in READABLE_MODES:
        raise ImageError(f"image {path} has Pillow mode {image.mode!r}, which cannot be read as 8-bit L or RGB; "
                         "convert it to an 8-bit RGB or grayscale PNG or JPEG")
    return to_eight_bit(image, mode, bits)


def to_eight_bit(image: Image.Image, mode: str, bits: int | None = None) -> Image.Image:
    """An open image of any READABLE_MODES -> 8-bit `mode` (see read_image). `bits`: the integer
    depth of an I / I;16 image (default: 16 for I;16*, 32 for I)."""
    if image.mode in _HIGH_DEPTH:
        x = np.asarray(image).astype(np.float64)
        if image.mode == "F":
            x = x * 255.0
        else:
            depth = bits or (16 if image.mode.startswith("I;16") else 32)
            x = x * (255.0 / (2.0 ** (depth - (1 if depth == 32 else 0)) - 1))  # 32-bit I is signed
        image = Image.fromarray(np.clip(np.round(np.nan_to_num(x)), 0, 255).astype(np.uint8), "L")
    elif image.mode in _WITH_ALPHA or (image.mode == "P" and "transparency" in image.info):
        gray = image.mode in ("LA", "La")
        rgba = np.asarray(image.convert("LA" if gray else "RGBA"), np.uint32)
        color, alpha = rgba[..., :-1], rgba[..., -1:]
        over_white = (color * alpha + 255 * (255 - alpha) + 127) // 255  # round(c * a/255 + 255 * (1 - a/255))
        image = Image.fromarray(over_white.astype(np.uint8).squeeze(-1) if gray else over_white.astype(np.uint8),
                                "L" if gray else "RGB")
    return image if image.mode == mode else image.convert(mode)


def _declared_bits(image: Image.Image) -> int | None:
    """The bits per sample a file declares for integer pixels Pillow widens to mode I (a TIFF's
    BitsPerSample; a PNG holds at most 16)."""
    if image.mode != "I":
        return None
    if image.format == "PNG":
        return 16
    tags = getattr(image, "tag_v2", None)
    if tags is not None and 258 in tags:
        value = tags[258]
        bits = value[0] if isinstance(value, tuple) else value
        return int(bits) if 1 <= int(bits) <= 32 else None
    return None


def load_image(path: str | os.PathLike, mode: str = "RGB") -> Image.Image:
    """read_image under its older name."""
    return read_image(path, mode)


def options_from_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The preprocessing a checkpoint asks for in meta['preprocess'], as preprocess() keywords."""
    stored = meta.get("preprocess") or {}
    return {k: stored[k] for k in PREPROCESS_KEYS if stored.get(k) is not None}


def color_mode_for(in_chans: int) -> str:
    if in_chans not in (1, 3):
        raise ValueError(f"images can feed models with 1 or 3 input channels, not {in_chans}")
    return "L" if in_chans == 1 else "RGB"


def is_minus_one_to_one(mean, std) -> bool:
    """mean = std = 0.5 (every channel), or neither given: pixels in [-1, 1]."""
    if mean is None and std is None:
        return True
    if mean is None or std is None:
        return False
    return bool(np.all(np.asarray(mean, np.float64) == 0.5) and np.all(np.asarray(std, np.float64) == 0.5))


def describe(options: Mapping[str, Any], img_size: int, in_chans: int) -> str:
    """One line saying what preprocess(**options) does, as vit-predict prints it."""
    o = {"resize": "shorter_side", "crop_pct": 0.875, "interpolation": "bicubic", **options}
    mode = o.get("color_mode") or color_mode_for(in_chans)
    if o["resize"] == "squash":
        geometry = f"whole image resized to {img_size}x{img_size} ({o['interpolation']}, aspect not kept)"
    elif o["resize"] == "center_square":
        geometry = f"central square (crop_pct {o['crop_pct']}) resized to {img_size}x{img_size} ({o['interpolation']})"
    else:
        geometry = (f"shorter side to {math.floor(img_size / o['crop_pct'])} ({o['interpolation']}), "
                    f"central {img_size}x{img_size} crop (crop_pct {o['crop_pct']})")
    if is_minus_one_to_one(o.get("mean"), o.get("std")):
        values = "pixels in [-1, 1] (mean = std = 0.5)"
    else:
        mean, std = (np.atleast_1d(np.asarray(o[k], np.float64)).tolist() for k in ("mean", "std"))
        values = f"(x/255 - mean) / std with mean {mean}, std {std}"
    return f"{'grayscale (L)' if mode == 'L' else 'RGB'}; {geometry}; {values}"


def resize_and_crop(image: Image.Image, img_size: int, *, crop_pct: float = 0.875, interpolation: str = "bicubic",
                    resize: str = "shorter_side") -> Image.Image:
    """The img_size square the model sees, by one of RESIZE_RULES (see the module docstring)."""
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose one of {sorted(INTERPOLATIONS)}")
    if resize not in RESIZE_RULES:
        raise ValueError(f"unknown resize rule {resize!r}; choose one of {RESIZE_RULES}")
    w, h = image.size
    if resize == "squash":
        if crop_pct != 1:
            raise ValueError(f"resize 'squash' takes the whole image: crop_pct must be 1, got {crop_pct}")
        return image if image.size == (img_size, img_size) else image.resize((img_size, img_size), INTERPOLATIONS[interpolation])
    if resize == "center_square":  # one resize of the box, exactly as vit_data.augment.prepare_record
        side = min(w, h) if crop_pct == 1 else max(1, round(min(w, h) * crop_pct))
        if (side, side) == (w, h) == (img_size, img_size):
            return image
        left, top = (w - side) // 2, (h - side) // 2
        return image.resize((img_size, img_size), INTERPOLATIONS[interpolation], box=(left, top, left + side, top + side))
    scale_size = math.floor(img_size / crop_pct)  # timm's rule: 224 / 0.875 = 256
    # The longer side truncated, as torchvision's Resize (timm's eval transform) and transformers' do.
    if w <= h:
        size = (scale_size, max(scale_size, int(h * scale_size / w)))
    else:
        size = (max(scale_size, int(w * scale_size / h)), scale_size)
    image = image.resize(size, INTERPOLATIONS[interpolation])
    left, top = (size[0] - img_size) // 2, (size[1] - img_size) // 2
    return image.crop((left, top, left + img_size, top + img_size))


def to_array(images: Sequence[Image.Image], *, mean: Sequence[float] | float | None = None,
             std: Sequence[float] | float | None = None, in_chans: int = 3) -> np.ndarray:
    """Same-size PIL images -> (B, H, W, C) float32: in [-1, 1] by default or when mean = std = 0.5
    (Google's checkpoints; the same float32 arithmetic as vit_data's loader, so train.py runs see
    identical inputs), else (x/255 - mean) / std (ImageNet-style)."""
    mode = color_mode_for(in_chans)
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither (then pixels are scaled to [-1, 1])")
    x = np.stack([np.asarray(im.convert(mode), np.float32).reshape(im.size[1], im.size[0], in_chans)
                  for im in images])
    if mean is not None:  # checked even when they mean [-1, 1]
        mean, std = _per_channel(mean, in_chans, "mean"), _per_channel(std, in_chans, "std")
    if is_minus_one_to_one(mean, std):
        return x / np.float32(127.5) - np.float32(1.0)
    return ((x / np.float32(255.0) - mean) / std).astype(np.float32)


def _per_channel(values, in_chans: int, name: str) -> np.ndarray:
    v = np.asarray(values, np.float32).reshape(-1)
    if v.size not in (1, in_chans):
        raise ValueError(f"{name} has {v.size} values but the model takes {in_chans} channel(s)")
    return np.broadcast_to(v, (in_chans,))


def preprocess(images: Image.Image | Sequence[Image.Image], img_size: int, *, crop_pct: float = 0.875,
               interpolation: str = "bicubic", resize: str = "shorter_side", mean: Sequence[float] | float | None = None,
               std: Sequence[float] | float | None = None, color_mode: str | None = None, in_chans: int = 3) -> np.ndarray:
    """PIL images of any size -> (B, img_size, img_size, in_chans) float32, NHWC. Images are
    converted to color_mode (default: the model's channels) before they are resized."""
    if isinstance(images, Image.Image):
        images = [images]
    mode = check_color_mode(color_mode, in_chans)
    crops = [resize_and_crop(to_eight_bit(im, mode), img_size, crop_pct=crop_pct, interpolation=interpolation, resize=resize)
             for im in images]
    return to_array(crops, mean=mean, std=std, in_chans=in_chans)


def check_color_mode(color_mode: str | None, in_chans: int) -> str:
    """The PIL mode images are converted to: color_mode if it fits in_chans, else an error."""
    mode = color_mode_for(in_chans)
    if color_mode is not None and color_mode != mode:
        raise ValueError(f"the preprocessing converts images to {color_mode!r} "
                         f"({COLOR_MODES.get(color_mode, '?')} channel(s)) but the model takes {in_chans}")
    return mode
