"""The official JAX initialisation, as statistics each twin's canonical weights must show.

Numpy only, so each twin's tests use it without the other framework.
"""
from __future__ import annotations

import math

import numpy as np

from vit_common import ViTConfig, canonical_shapes

TRUNC2_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]


def expected_init(name: str, shape: tuple[int, ...]) -> tuple[str, float]:
    """(distribution, parameter): 'zeros', 'ones', 'normal' std, 'uniform' bound, 'lecun' std."""
    leaf = name.rsplit("/", 1)[-1]
    if name in ("cls", "dist") or name.startswith(("head", "head_dist")):
        return "zeros", 0.0
    if name.endswith("pos_embedding"):
        return "normal", 0.02
    if name == "MAPHead_0/probe":
        return "uniform", math.sqrt(6.0 / (1 + shape[-1]))
    if "LayerNorm" in name or name.startswith(("Transformer/encoder_norm", "fc_norm")):
        return ("ones", 1.0) if leaf == "scale" else ("zeros", 0.0)
    if "MlpBlock" in name and leaf == "bias":
        return "normal", 1e-6
    if leaf == "bias":
        return "zeros", 0.0
    if name in ("embedding/kernel", "pre_logits/kernel"):
        fan_in = math.prod(shape[:-1])
        return "lecun", 1.0 / math.sqrt(fan_in)
    if name.endswith("out/kernel"):  # (H, D, C): a Dense from H*D to C
        return "uniform", math.sqrt(6.0 / (shape[0] * shape[1] + shape[2]))
    if len(shape) == 3:  # query/key/value (C, H, D): a Dense from C to H*D
        return "uniform", math.sqrt(6.0 / (shape[0] + shape[1] * shape[2]))
    return "uniform", math.sqrt(6.0 / (shape[0] + shape[1]))  # xavier_uniform Dense


def init_failures(weights: dict[str, np.ndarray], cfg: ViTConfig) -> list[str]:
    """Entries whose values do not look drawn from the official initialiser."""
    failures = []
    for name, shape in canonical_shapes(cfg).items():
        w = np.asarray(weights[name], np.float64)
        kind, p = expected_init(name, shape)
        std, peak = w.std(), np.abs(w).max()
        if kind in ("zeros", "ones"):
            ok = np.all(w == p)
        elif kind == "normal":
            ok = abs(std / p - 1) < 0.15 and abs(w.mean()) < 3 * p / math.sqrt(w.size) + 1e-12
        elif kind == "uniform":  # std of U(-b, b) is b / sqrt(3)
            ok = peak <= p * (1 + 1e-6) and peak > 0.9 * p  # float32 draws may round onto the bound and abs(std * math.sqrt(3) / p - 1) < 0.1
        else:  # truncated normal rescaled to unit variance, cut at 2 (untruncated) std
            ok = abs(std / p - 1) < 0.1 and peak <= 2 * p / TRUNC2_STD + 1e-7
        if not ok:
            failures.append(f"{name}: expected {kind}({p:.3g}), got mean {w.mean():.3g} std {std:.3g} max {peak:.3g}")
    return failures


INIT_TEST_CONFIG = dict(img_size=64, patch_size=8, embed_dim=192, depth=2, num_heads=3, num_classes=100,
                        global_pool="map", representation_size=128, class_token=True)



def swin_expected_init(name: str, shape: tuple[int, ...], patch_fan_in: int) -> tuple[str, float]:
    """timm's Swin: Linear weights and the bias tables N(0, 0.02^2) (trunc_normal_ cut at +-2
    absolute, i.e. 100 std), zero Linear biases, LayerNorm ones / zeros, and PyTorch's default
    init for the patch projection (weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)))."""
    *modules, leaf = name.split("/")
    if name.startswith("patch_embed/proj/"):
        return "uniform", 1.0 / math.sqrt(patch_fan_in)
    if modules[-1].startswith("norm"):  # norm, norm1, norm2, patch_embed/norm, downsample/norm
        return ("ones", 1.0) if leaf == "scale" else ("zeros", 0.0)
    if leaf == "bias":
        return "zeros", 0.0
    return "normal", 0.02  # dense kernels, relative position bias tables


def swin_init_failures(weights: dict[str, np.ndarray], cfg) -> list[str]:
    """Entries of a Swin model whose values do not look drawn from timm's initialiser."""
    shapes = canonical_shapes(cfg)
    patch_fan_in = math.prod(shapes["patch_embed/proj/kernel"][:-1])
    failures = []
    for name, shape in shapes.items():
        w = np.asarray(weights[name], np.float64)
        kind, p = swin_expected_init(name, shape, patch_fan_in)
        std, peak = w.std(), np.abs(w).max()
        if kind in ("zeros", "ones"):
            ok = np.all(w == p)
        elif kind == "normal":
            ok = abs(std / p - 1) < 0.15 and abs(w.mean()) < 4 * p / math.sqrt(w.size) and peak < 6 * p
        else:  # uniform: std of U(-b, b) is b / sqrt(3)
            ok = peak <= p * (1 + 1e-6) and abs(std * math.sqrt(3) / p - 1) < 0.25
        if not ok:
            failures.append(f"{name}: expected {kind}({p:.3g}), got mean {w.mean():.3g} std {std:.3g} max {peak:.3g}")
    return failures


SWIN_INIT_TEST_CONFIG = dict(img_size=112, patch_size=4, window_size=7, embed_dim=48, depths=(2, 2),
                             num_heads=(3, 6), num_classes=100)
