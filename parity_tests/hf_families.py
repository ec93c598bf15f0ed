"""Hugging Face transformers' DINOv2, CLIP, SigLIP and AIMv2 vision models as independent references.

Two jobs:
- `to_timm(family, state_dict)`: an HF model's in-memory state dict in timm's names for the
  VisionTransformer that timm builds for the family, so it loads strictly into both twins (the
  library's readers, vit_common/formats/huggingface/, do it);
- `hf_model(family, ...)`: the HF model of a family for a set of sizes, used with random weights
  (small) or on the meta device to count a released size's parameters.
"""
from __future__ import annotations

import numpy as np
import torch
import transformers

from vit_common.formats.huggingface import aimv2, clip, dinov2, siglip

FAMILIES = ("dinov2", "dinov2_reg", "clip", "siglip", "aimv2")


def hf_model(family: str, *, hidden: int, layers: int, heads: int, mlp: int, patch: int, img: int,
             act: str | None = None, registers: int = 0, swiglu: bool = False, map_head: bool = True,
             eps: float | None = None) -> torch.nn.Module:
    """The family's HF vision model (eager attention, so attention weights come back)."""
    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, patch_size=patch,
                  image_size=img, attn_implementation="eager")
    if act is not None:
        common["hidden_act"] = act
    if eps is not None:
        common["layer_norm_eps" if family != "aimv2" else "rms_norm_eps"] = eps
    if family == "dinov2":
        # mlp_ratio (an int in HF) drives the width: plain MLP hidden * ratio; SwiGLU two thirds of it, rounded to 8.
        return transformers.Dinov2Model(transformers.Dinov2Config(**common, mlp_ratio=mlp // hidden,
                                                                  use_swiglu_ffn=swiglu))
    if family == "dinov2_reg":
        return transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(
            **common, mlp_ratio=mlp // hidden, use_swiglu_ffn=swiglu, num_register_tokens=registers))
    if family == "clip":
        return transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**common, intermediate_size=mlp))
    if family == "siglip":
        return transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
            **common, intermediate_size=mlp, vision_use_head=map_head))
    if family == "aimv2":
        return transformers.Aimv2VisionModel(transformers.Aimv2VisionConfig(**common, intermediate_size=mlp,
                                                                            use_head=False))
    raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")


_LAYOUTS = {"dinov2": dinov2.LAYOUT, "dinov2_reg": dinov2.LAYOUT, "clip": clip.LAYOUT, "siglip": siglip.LAYOUT,
            "aimv2": aimv2.LAYOUT}


def to_timm(family: str, state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """An HF model's state dict in timm's names and layout, by the library's reader."""
    return _LAYOUTS[family].read({k: v.detach().numpy().copy() for k, v in state_dict.items()})


def perturb_(model: torch.nn.Module, seed: int, scale: float = 0.1) -> torch.nn.Module:
    """HF initialises biases to 0, norms and LayerScales to 1 (or 1e-5): noise makes every entry count."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()
