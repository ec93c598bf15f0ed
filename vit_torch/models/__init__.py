"""The PyTorch twin's models (ViT/DeiT, Swin, Eva) and build_model, which picks one for a config."""
from .eva import Eva, EvaOutput
from .swin import SwinOutput, SwinTransformer
from .vit import VisionTransformer, ViTOutput

Model = VisionTransformer | SwinTransformer | Eva


def build_model(cfg, **kwargs):
    """The model a config describes: SwinTransformer for a SwinConfig, Eva for an EvaConfig, else VisionTransformer."""
    return {"swin": SwinTransformer, "eva": Eva}.get(cfg.arch, VisionTransformer)(cfg, **kwargs)


__all__ = ["Eva", "EvaOutput", "Model", "SwinOutput", "SwinTransformer", "VisionTransformer", "ViTOutput", "build_model"]
