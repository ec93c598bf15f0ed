"""The Flax twin's models (ViT/DeiT, Swin) and build_model, which picks one for a config."""
from .swin import SwinOutput, SwinTransformer
from .vit import VisionTransformer, ViTOutput

Model = VisionTransformer | SwinTransformer


def build_model(cfg, **kwargs):
    """The model a config describes: SwinTransformer for a SwinConfig, else VisionTransformer."""
    return (SwinTransformer if cfg.arch == "swin" else VisionTransformer)(cfg, **kwargs)


__all__ = ["Model", "SwinOutput", "SwinTransformer", "VisionTransformer", "ViTOutput", "build_model"]
