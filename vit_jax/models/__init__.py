from .vit import VisionTransformer, ViTOutput

__all__ = ["VisionTransformer", "ViTOutput"]
