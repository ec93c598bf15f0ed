"""preprocessor_config.json: the recorded preprocessing (vit_common.predict.preprocess's
meta["preprocess"]) as the transformers image processor that computes it, so that
`AutoImageProcessor` and `pipeline("image-classification", model=FOLDER)` feed a written folder
what vit-predict feeds the twins.

    squash          ViTImageProcessor: the whole image resized to img_size x img_size
    shorter_side    CLIPImageProcessor: shorter side to floor(img_size / crop_pct), central crop
    center_square   CLIPImageProcessor with crop_pct 1: the same pixels on square images; on others
                    transformers resizes before it crops, where train.py's evaluation crops first
"""
from __future__ import annotations

import math
from typing import Any

from PIL import Image

PROCESSOR_FILE = "preprocessor_config.json"
PIL_FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
               "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
               "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


def image_processor_config(preprocess: dict[str, Any], img_size: int, in_chans: int) -> tuple[dict[str, Any], str | None]:
    """(preprocessor_config.json's content, a note where transformers computes something else)."""
    o = {"resize": "shorter_side", "crop_pct": 0.875, "interpolation": "bicubic", "mean": 0.5, "std": 0.5,
         **{k: v for k, v in preprocess.items() if v is not None}}
    per_channel = lambda v: [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)] * in_chans
    config = dict(do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=per_channel(o["mean"]),
                  image_std=per_channel(o["std"]), resample=int(PIL_FILTERS[o["interpolation"]]),
                  do_convert_rgb=in_chans == 3, do_resize=True)  # 1 channel: keep Pillow's L images as they are
    if o["resize"] == "squash":
        return dict(config, image_processor_type="ViTImageProcessor", size=dict(height=img_size, width=img_size)), None
    note = None if o["resize"] == "shorter_side" else (
        "transformers' image processors resize before they crop, where this model's evaluation crops the central "
        "square first: the same pixels on square images, resampled slightly differently on others")
    return dict(config, image_processor_type="CLIPImageProcessor",
                size=dict(shortest_edge=math.floor(img_size / o["crop_pct"])), do_center_crop=True,
                crop_size=dict(height=img_size, width=img_size)), note


def preprocess_record(processor: dict[str, Any], in_chans: int) -> dict[str, Any] | None:
    """The meta["preprocess"] record of a preprocessor_config.json (ours or a Hub model's), or None
    where its transforms are not ones the record can state (no resize, no rescale, unknown filter)."""
    size, crop = processor.get("size") or {}, processor.get("crop_size") or {}
    filters = {int(v): k for k, v in PIL_FILTERS.items()}
    if not processor.get("do_resize", True) or processor.get("rescale_factor", 1 / 255) != 1 / 255 \
            or processor.get("resample", 2) not in filters:
        return None
    mean, std = ((processor.get("image_mean", 0.5), processor.get("image_std", 0.5)) if processor.get("do_normalize", True)
                 else (0.0, 1.0))
    record = dict(color_mode="RGB" if in_chans == 3 else "L", interpolation=filters[processor.get("resample", 2)],
                  mean=mean, std=std)
    if processor.get("do_center_crop") and "shortest_edge" in size and crop.get("height") == crop.get("width"):
        side, short = crop["height"], size["shortest_edge"]
        crop_pct = side / short
        while math.floor(side / crop_pct) < short:  # the ratio may round below: floor() must give short back
            crop_pct = math.nextafter(crop_pct, 0)
        return dict(record, resize="shorter_side", crop_pct=crop_pct)
    if not processor.get("do_center_crop") and size.get("height") == size.get("width") and "height" in size:
        return dict(record, resize="squash", crop_pct=1.0)
    return None
