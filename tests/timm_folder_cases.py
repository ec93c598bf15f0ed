"""The models tests/test_timm_folder.py writes as timm Hub folders, with seeded weights, so that
tests/golden/make_timm_folder_golden.py (run once beside timm) and the test write the same bytes."""
from __future__ import annotations

import numpy as np

from vit_common import get_config
from vit_common.weights import canonical_shapes

CASES = {  # name: (preset, overrides)
    "vit_avg_gray": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=2, num_classes=5,
                                                  global_pool="avg", in_chans=1)),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8, depth=1, num_classes=3)),
    "swin": ("swin_tiny_patch4_window7_224", dict(img_size=56, depths=(2, 2), num_heads=(1, 2), embed_dim=16,
                                                  num_classes=4)),
    "eva02": ("eva02_tiny_patch14_224", dict(img_size=28, depth=1, num_classes=3)),
}


def case_weights(name: str):
    """(config, canonical weights N(0, 0.05) in sorted-name order, meta: class names and preprocessing)."""
    preset, overrides = CASES[name]
    cfg = get_config(preset, **overrides)
    rng = np.random.default_rng(sorted(CASES).index(name))
    weights = {k: (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in sorted(canonical_shapes(cfg).items())}
    squash = name == "swin"  # one case of each timm crop mode
    preprocess = dict(resize="squash" if squash else "shorter_side", crop_pct=1.0 if squash else 0.9,
                      interpolation="bilinear" if squash else "bicubic", mean=[0.5] * cfg.in_chans,
                      std=[0.25] * cfg.in_chans)
    return cfg, weights, dict(class_names=[f"class_{i}" for i in range(cfg.num_classes)], preprocess=preprocess)


def case_input(name: str) -> np.ndarray:
    """Two NCHW float32 images for the case's model."""
    cfg = case_weights(name)[0]
    return np.random.default_rng(100).standard_normal((2, cfg.in_chans, cfg.img_size, cfg.img_size)).astype(np.float32)
