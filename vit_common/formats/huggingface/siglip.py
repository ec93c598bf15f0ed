"""transformers' SigLIP image tower (SiglipVisionModel): no class token, a position table over
the patches only, `post_layernorm` on every token, and a MAP head (`head`: a probe attending to
the tokens through torch's MultiheadAttention, whose fused in_proj is timm's q and kv) or, with
vision_use_head false, none (timm's global average pooling without fc_norm)."""
from __future__ import annotations

from typing import Any

from ...config import ViTConfig
from ...weights import Weights
from ..base import Layout
from .clip import BLOCK_RULES, ENCODER_FIELDS
from .common import HF_ACT, exact_ratio, our_act, refuse_unless, size_hints
from .family import Family, hf_config, strip_prefix
from .names import Rule, convert, unsqueeze

RULES = [
    Rule("embeddings.patch_embedding.{p}", "patch_embed.proj.{p}"),
    Rule("embeddings.position_embedding.weight", "pos_embed", **unsqueeze(1)),
    *BLOCK_RULES,
    Rule("post_layernorm.{p}", "norm.{p}"),
    Rule("head.probe", "attn_pool.latent"),
    Rule("head.attention.in_proj_{p}", "attn_pool.{part}.{p}", ("q", "kv"), sizes=(1, 2)),
    Rule("head.attention.out_proj.{p}", "attn_pool.proj.{p}"),
    Rule("head.layernorm.{p}", "attn_pool.norm.{p}"),
    Rule("head.mlp.fc1.{p}", "attn_pool.mlp.fc1.{p}"),
    Rule("head.mlp.fc2.{p}", "attn_pool.mlp.fc2.{p}"),
]


def to_timm(raw: Weights) -> Weights:
    raw = {k: v for k, v in strip_prefix(raw, ("vision_model.",)).items() if k != "embeddings.position_ids"}
    return convert(raw, RULES, "hf", "HuggingFace SigLIP vision checkpoint")


def hints(config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    head = config.get("vision_use_head", True)
    return {"class_token": False, "global_pool": "map" if head else "avg", "fc_norm": None if head else False,
            "norm_eps": config.get("layer_norm_eps", 1e-6), "act_layer": our_act(config, "gelu_pytorch_tanh"),
            "mlp_ratio": exact_ratio(summary["mlp_dim"], summary["embed_dim"]), **size_hints(config)}


def write(timm: Weights, cfg: ViTConfig, meta: dict[str, Any]) -> tuple[Weights, dict[str, Any]]:
    refuse_unless(cfg, "SiglipVisionModel", class_token=False, pre_norm=False, norm_layer="layernorm",
                  mlp_layer="mlp", proj_bias=True, qkv_bias=True, embed_norm_layer=None,
                  global_pool=(lambda v: v in ("map", "avg"), "a MAP head or none (average pooling)"),
                  has_fc_norm=(lambda v: not v, "no norm after pooling: False"), **ENCODER_FIELDS)
    config = hf_config("siglip_vision_model", "SiglipVisionModel", cfg, intermediate_size=cfg.mlp_dim,
                       hidden_act=HF_ACT[cfg.act_layer], layer_norm_eps=cfg.norm_eps,
                       vision_use_head=cfg.global_pool == "map", attention_dropout=0.0)
    return convert(timm, RULES, "timm", "SigLIP"), config


def _is_siglip(keys: set[str]) -> bool:
    return (any(k.endswith("embeddings.patch_embedding.weight") for k in keys)
            and not any(k.endswith("embeddings.class_embedding") for k in keys))


LAYOUT = Layout("hf_siglip", "HuggingFace transformers SigLIP vision state dict",
                "embeddings.patch_embedding, post_layernorm, head.probe...", _is_siglip, to_timm, names="timm", preprocess="siglip", family="vit",
                pos_embed_interp="transformers")
FAMILY = Family(("siglip_vision_model",), LAYOUT, hints,
                lambda cfg: isinstance(cfg, ViTConfig) and not cfg.class_token and cfg.norm_layer == "layernorm", write)
