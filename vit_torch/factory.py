"""create_model: a named preset, keyword overrides, optional weights."""
from __future__ import annotations

import os
from typing import Any

from vit_common import get_config, pretrained_source, read_checkpoint

from .models import Eva, SwinTransformer, VisionTransformer, build_model
from .weights import load_canonical_


def create_model(name: str | None = None, checkpoint: str | os.PathLike | None = None, *, pretrained: bool = False,
                 **overrides: Any) -> VisionTransformer | SwinTransformer | Eva:
    """Build `name` (timm's preset names and keyword overrides), in eval mode.

    ViT / DeiT names give a VisionTransformer, swin_* names a SwinTransformer, EVA-02 and DINOv3
    names (eva02_*, vit_*_dinov3*) timm's Eva.
    The config is validated before anything is allocated. `checkpoint` may be any file
    vit-convert reads (canonical or Google .npz, timm or HuggingFace state dicts); when it
    carries its config (or its architecture can be inferred), `name` may be omitted.
    pretrained=True loads the weights `name` names, as timm does: NAME.TAG or a bare NAME (timm's
    default tag) from the Hub repository timm/NAME.TAG, or hf-hub:ORG/REPO (timm or transformers),
    through the Hugging Face cache (offline with HF_HUB_OFFLINE=1); num_classes=K then gives a new zero head.
    Overriding img_size / patch_size / num_classes adapts the checkpoint's weights. Weights with
    NaN / inf or a non-float dtype raise WeightsMismatchError; half precision is widened to float32.
    """
    if pretrained:
        checkpoint, name = pretrained_source(name, checkpoint), None
    if checkpoint is None:
        if name is None:
            raise ValueError("create_model needs a model name, a checkpoint, or both")
        return build_model(get_config(name, **overrides)).eval()
    ckpt = read_checkpoint(checkpoint, name, **overrides)
    return load_canonical_(build_model(ckpt.config), ckpt.weights).eval()
