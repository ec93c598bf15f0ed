"""Flax NNX twin of the ViT family and the Swin Transformer. Never imports torch."""
from vit_common import get_config, list_models

from .factory import create_model
from .models import Eva, EvaOutput, SwinOutput, SwinTransformer, VisionTransformer, ViTOutput, build_model
from .weights import grads_to_canonical, load_canonical_, to_canonical

__all__ = [
    "Eva", "EvaOutput", "SwinOutput", "SwinTransformer", "VisionTransformer", "ViTOutput", "build_model", "create_model", "get_config",
    "grads_to_canonical",
    "list_models", "load_canonical_", "to_canonical",
]
