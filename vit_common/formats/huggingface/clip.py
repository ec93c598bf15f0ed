"""transformers' CLIP image tower (CLIPVisionModel; hidden_act quick_gelu is OpenAI's CLIP, gelu
OpenCLIP's): a pre-norm ViT (`pre_layrnorm`, no patch-embedding bias) whose `post_layernorm`
normalises the class token only (pooler_output); timm's `norm` on every token, then class-token
pooling, gives the same pooled features. Checkpoints of the whole CLIPModel name the tower
`vision_model.`; its projection (CLIPVisionModelWithProjection) is no part of the tower."""
from __future__ import annotations

from typing import Any

from ...config import ViTConfig
from ...weights import Weights
from ..base import Layout
from .common import HF_ACT, exact_ratio, our_act, refuse_unless, size_hints
from .family import Family, hf_config, strip_prefix
from .names import Rule, convert, unsqueeze

_B, _T = "encoder.layers.{i}.", "blocks.{i}."
# The encoder layers CLIP and SigLIP share.
BLOCK_RULES = [
    Rule(_B + "layer_norm1.{p}", _T + "norm1.{p}"),
    Rule(_B + "self_attn.{part}.{p}", _T + "attn.qkv.{p}", ("q_proj", "k_proj", "v_proj")),
    Rule(_B + "self_attn.out_proj.{p}", _T + "attn.proj.{p}"),
    Rule(_B + "layer_norm2.{p}", _T + "norm2.{p}"),
    Rule(_B + "mlp.fc1.{p}", _T + "mlp.fc1.{p}"),
    Rule(_B + "mlp.fc2.{p}", _T + "mlp.fc2.{p}"),
]
RULES = [
    Rule("embeddings.class_embedding", "cls_token", **unsqueeze(2)),
    Rule("embeddings.patch_embedding.weight", "patch_embed.proj.weight"),
    Rule("embeddings.position_embedding.weight", "pos_embed", **unsqueeze(1)),
    Rule("pre_layrnorm.{p}", "norm_pre.{p}"),
    *BLOCK_RULES,
    Rule("post_layernorm.{p}", "norm.{p}"),
]
# The fields every transformers encoder of this kind (CLIP, SigLIP, AIMv2) shares with ours.
ENCODER_FIELDS = dict(distilled=False, reg_tokens=0, init_values=None, pos_embed="learn", representation_size=None,
                      num_classes=(lambda v: v == 0, "no classifier: 0"))


def to_timm(raw: Weights) -> Weights:
    raw = {k: v for k, v in strip_prefix(raw, ("vision_model.",)).items() if k != "embeddings.position_ids"}
    return convert(raw, RULES, "hf", "HuggingFace CLIP vision checkpoint")


def hints(config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    return {"pre_norm": True, "norm_eps": config.get("layer_norm_eps", 1e-5), "global_pool": "token", "fc_norm": None,
            "act_layer": our_act(config, "quick_gelu"),
            "mlp_ratio": exact_ratio(summary["mlp_dim"], summary["embed_dim"]), **size_hints(config)}


def write(timm: Weights, cfg: ViTConfig, meta: dict[str, Any]) -> tuple[Weights, dict[str, Any]]:
    refuse_unless(cfg, "CLIPVisionModel", pre_norm=True, class_token=True, global_pool="token", no_embed_class=False,
                  norm_layer="layernorm", mlp_layer="mlp", proj_bias=True, qkv_bias=True, embed_norm_layer=None,
                  has_fc_norm=False, **ENCODER_FIELDS)
    config = hf_config("clip_vision_model", "CLIPVisionModel", cfg, intermediate_size=cfg.mlp_dim,
                       hidden_act=HF_ACT[cfg.act_layer], layer_norm_eps=cfg.norm_eps, attention_dropout=0.0)
    return convert(timm, RULES, "timm", "CLIP"), config


LAYOUT = Layout("hf_clip", "HuggingFace transformers CLIP vision state dict",
                "embeddings.class_embedding, pre_layrnorm...",
                lambda keys: any(k.endswith("embeddings.class_embedding") for k in keys), to_timm, names="timm", preprocess="clip", family="vit",
                pos_embed_interp="transformers")
FAMILY = Family(("clip_vision_model",), LAYOUT, hints, lambda cfg: isinstance(cfg, ViTConfig) and cfg.pre_norm, write)
