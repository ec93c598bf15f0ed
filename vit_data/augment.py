"""Augmentations in numpy and PIL, driven by an explicit numpy Generator so both twins (and a
restored run) draw exactly the same transforms.

Per record (uint8 in, uint8 (img_size, img_size, in_chans) out), in this order:
  geometry   random-resized-crop (DeiT: scale (0.08, 1), ratio (3/4, 4/3)), or a central square
             resized to img_size; PIL bilinear either way
  RandAugment timm's op list, each chosen op applied with p=0.5
  pad-crop   zero-pad by N pixels, crop img_size back at a random offset (CIFAR/MNIST style)
  hflip      p=0.5
Per batch (float32): soft targets (one-hot, label smoothing), then MixUp or CutMix with the
batch's mirror image (timm's "batch" mode: sample i pairs with sample B-1-i; a shard of a global
batch is handed its partners, so the pairs span the global batch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

BILINEAR = Image.Resampling.BILINEAR
FILL = 128  # mid-grey for pixels that rotate/shear/translate uncover


@dataclass(frozen=True)
class AugmentConfig:
    random_resized_crop: bool = False   # scale (0.08, 1) as in DeiT; else resize (+ optional pad-and-crop)
    pad_crop: int = 0                   # CIFAR/MNIST-style: pad by N pixels then random crop back
    hflip: bool = False
    randaugment: tuple[int, int] | None = None   # (num_ops, magnitude 0..30); 9 = timm's m9
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0               # probability a batch is mixed; MixUp or CutMix with p=0.5 when both are on
    label_smoothing: float = 0.0

    def __post_init__(self):
        if self.randaugment is not None:
            object.__setattr__(self, "randaugment", tuple(int(v) for v in self.randaugment))  # lists from JSON
            num_ops, magnitude = self.randaugment
            if num_ops < 0 or not 0 <= magnitude <= 30:
                raise ValueError(f"randaugment needs num_ops >= 0 and magnitude in 0..30, got {self.randaugment}")
        if self.pad_crop < 0 or self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("pad_crop, mixup_alpha and cutmix_alpha must be >= 0")
        if not 0 <= self.mix_prob <= 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError(f"need mix_prob in [0, 1] and label_smoothing in [0, 1), got {self.mix_prob}, "
                             f"{self.label_smoothing}")

    @property
    def mixes(self) -> bool:
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mix_prob > 0


# --- per record ----------------------------------------------------------------------------------

def to_pil(image: np.ndarray, in_chans: int) -> Image.Image:
    """uint8 (H, W, C) with C in 1, 3, 4 -> a PIL image with in_chans channels ("L" or "RGB")."""
    channels = image.shape[-1] if image.ndim == 3 else 1
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
    if mode is None:
        raise ValueError(f"images with {channels} channels are not supported (1, 3 or 4)")
    pil = Image.fromarray(image.reshape(image.shape[0], image.shape[1]) if channels == 1 else image, mode)
    return pil.convert("L" if in_chans == 1 else "RGB")


def to_uint8(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image, np.uint8)
    return pixels.reshape(pixels.shape[0], pixels.shape[1], -1)


def center_square_box(width: int, height: int) -> tuple[int, int, int, int]:
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator,
                            scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """A box covering scale of the area with aspect in ratio (log-uniform); 10 tries, then the centre."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    return center_square_box(width, height)


def pad_and_crop(pixels: np.ndarray, pad: int, top: int, left: int) -> np.ndarray:
    """The window at (top, left) of pixels zero-padded by pad on every side, same size as pixels
    (copied straight from the source: np.pad costs more than the rest of the pipeline)."""
    h, w = pixels.shape[:2]
    out = np.zeros_like(pixels)
    dy, dx = top - pad, left - pad  # where the window starts in source coordinates
    y0, y1, x0, x1 = max(0, dy), min(h, h + dy), max(0, dx), min(w, w + dx)  # the part of the source inside
    if y0 < y1 and x0 < x1:
        out[y0 - dy:y1 - dy, x0 - dx:x1 - dx] = pixels[y0:y1, x0:x1]
    return out


def prepare_record(image: np.ndarray, img_size: int, in_chans: int) -> np.ndarray:
    """The central square, resized to img_size, in in_chans channels (evaluation, and training
    without random-resized-crop). No randomness."""
    if image.shape[:2] == (img_size, img_size) and image.shape[-1] == in_chans:
        return image
    pil = to_pil(image, in_chans)
    if pil.size != (img_size, img_size):
        pil = pil.resize((img_size, img_size), BILINEAR, box=center_square_box(*pil.size))
    return to_uint8(pil)


def augment_record(image: np.ndarray, img_size: int, in_chans: int, config: AugmentConfig,
                   rng: np.random.Generator) -> np.ndarray:
    """Training: the random transforms of the module docstring, drawn from rng."""
    if config.random_resized_crop:
        pil = to_pil(image, in_chans)
        pil = pil.resize((img_size, img_size), BILINEAR, box=random_resized_crop_box(*pil.size, rng))
        pixels = to_uint8(pil)
    else:
        pixels = prepare_record(image, img_size, in_chans)
    if config.randaugment and config.randaugment[0] > 0:
        pixels = to_uint8(rand_augment(to_pil(pixels, in_chans), *config.randaugment, rng))
    if config.pad_crop:
        top, left = rng.integers(0, 2 * config.pad_crop + 1, size=2)
        pixels = pad_and_crop(pixels, config.pad_crop, int(top), int(left))
    if config.hflip and rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    return np.ascontiguousarray(pixels)


# --- RandAugment ---------------------------------------------------------------------------------
# timm's op list (rand-mM-nN). Strength is level = magnitude / 10 of each op's maximum, so m9 means
# what it means in timm; magnitudes above 10 go past timm's default maximum (like timm's mmax), with
# parameters clamped to stay valid. Posterize, Solarize and the enhance ops use the "increasing"
# forms (timm's inc1, torchvision's), so magnitude 0 is the identity and strength grows with it.

def _signed(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() < 0.5 else value


def _fill(image: Image.Image):
    return FILL if image.mode == "L" else (FILL,) * 3


def _affine(image: Image.Image, matrix) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, matrix, BILINEAR, fillcolor=_fill(image))


def _solarize_add(image: Image.Image, level: float, rng) -> Image.Image:
    pixels = np.asarray(image, np.int16)
    added = np.where(pixels < 128, np.minimum(pixels + int(110 * level), 255), pixels)
    return Image.fromarray(added.astype(np.uint8), image.mode)


def _enhance(kind):
    return lambda im, level, rng: kind(im).enhance(max(0.0, 1.0 + _signed(0.9 * level, rng)))


RAND_OPS = {
    "AutoContrast": lambda im, level, rng: ImageOps.autocontrast(im),
    "Equalize": lambda im, level, rng: ImageOps.equalize(im),
    "Invert": lambda im, level, rng: ImageOps.invert(im),
    "Rotate": lambda im, level, rng: im.rotate(_signed(30 * level, rng), BILINEAR, fillcolor=_fill(im)),
    "Posterize": lambda im, level, rng: ImageOps.posterize(im, max(1, 8 - int(4 * level))),
    "Solarize": lambda im, level, rng: ImageOps.solarize(im, max(0, round(256 * (1 - level)))),
    "SolarizeAdd": _solarize_add,
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "ShearX": lambda im, level, rng: _affine(im, (1, _signed(0.3 * level, rng), 0, 0, 1, 0)),
    "ShearY": lambda im, level, rng: _affine(im, (1, 0, 0, _signed(0.3 * level, rng), 1, 0)),
    "TranslateXRel": lambda im, level, rng: _affine(im, (1, 0, _signed(0.45 * level, rng) * im.size[0], 0, 1, 0)),
    "TranslateYRel": lambda im, level, rng: _affine(im, (1, 0, 0, 0, 1, _signed(0.45 * level, rng) * im.size[1])),
}
RAND_OP_NAMES = tuple(RAND_OPS)


def rand_augment(image: Image.Image, num_ops: int, magnitude: float, rng: np.random.Generator,
                 prob: float = 0.5) -> Image.Image:
    """num_ops ops drawn uniformly with replacement, each applied with probability prob (timm)."""
    level = magnitude / 10
    for choice in rng.integers(0, len(RAND_OP_NAMES), size=num_ops):
        if rng.random() < prob:
            image = RAND_OPS[RAND_OP_NAMES[choice]](image, level, rng)
    return image


# --- per batch -----------------------------------------------------------------------------------

def soft_targets(labels: np.ndarray, num_classes: int, smoothing: float = 0.0) -> np.ndarray:
    """One-hot (B, K) float32 with label smoothing: 1 - eps + eps/K on the label, eps/K elsewhere."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    targets = np.full((len(labels), num_classes), smoothing / num_classes, np.float32)
    targets[np.arange(len(labels)), labels] = 1.0 - smoothing + smoothing / num_classes
    return targets


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box of about (1 - lam) of the image around a uniform centre, clipped to the image."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    return (max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height),
            max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width))


def mix_batch(images: np.ndarray, targets: np.ndarray, config: AugmentConfig, rng: np.random.Generator,
              partners=None) -> tuple[np.ndarray, np.ndarray]:
    """MixUp or CutMix of (B, H, W, C) images and (B, K) targets with their partners (CutMix
    pastes into `images`). `partners()` returns the partners' (images, targets), row i pairing with
    row i; by default the reversed batch. It is only called when the batch is mixed. CutMix's
    lambda is the unpasted area after clipping, so the targets weigh exactly what is visible."""
    if not config.mixes or rng.random() >= config.mix_prob:
        return images, targets
    use_cutmix = config.cutmix_alpha > 0 and (config.mixup_alpha <= 0 or rng.random() < 0.5)
    partner_images, partner_targets = partners() if partners else (images[::-1], targets[::-1])
    if use_cutmix:
        lam = float(rng.beta(config.cutmix_alpha, config.cutmix_alpha))
        h, w = images.shape[1:3]
        y0, y1, x0, x1 = cutmix_box(h, w, lam, rng)
        images[:, y0:y1, x0:x1] = partner_images[:, y0:y1, x0:x1].copy()  # a copy: the partners may view `images`
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        lam = float(rng.beta(config.mixup_alpha, config.mixup_alpha))
        images = lam * images + (1.0 - lam) * partner_images
    targets = lam * targets + (1.0 - lam) * partner_targets
    return images.astype(np.float32, copy=False), targets.astype(np.float32, copy=False)
