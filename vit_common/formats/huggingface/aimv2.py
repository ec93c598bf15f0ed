"""transformers' AIMv2 image tower (Aimv2VisionModel): RMSNorm everywhere (also on the patch
embedding), a SwiGLU MLP (`ffn.gate_proj` / `up_proj` = timm's fc1_g / fc1_x), no class token,
a position table over the patches. Its attention-pooling head (use_head) is not the twins':
they average the normalised tokens, as timm's AIMv2 does; is_native (sin-cos positions at any
size) is not theirs either. HF ties the attention output's bias to qkv_bias and the MLP's to
mlp_bias; ours ties both to proj_bias."""
from __future__ import annotations

from typing import Any

from ...config import ViTConfig
from ...errors import CheckpointError
from ...weights import Weights
from ..base import Layout
from .clip import ENCODER_FIELDS
from .common import exact_ratio, refuse_unless, size_hints
from .family import Family, hf_config, strip_prefix
from .names import Rule, convert, unsqueeze

_B, _T = "encoder.layers.{i}.", "blocks.{i}."
RULES = [
    Rule("embeddings.patch_embed.{p}", "patch_embed.proj.{p}"),
    Rule("embeddings.rms_norm.weight", "patch_embed.norm.weight"),
    Rule("embeddings.position_embedding.weight", "pos_embed", **unsqueeze(1)),
    Rule(_B + "rms_norm1.weight", _T + "norm1.weight"),
    Rule(_B + "attention.{part}.{p}", _T + "attn.qkv.{p}", ("q_proj", "k_proj", "v_proj")),
    Rule(_B + "attention.out_proj.{p}", _T + "attn.proj.{p}"),
    Rule(_B + "rms_norm2.weight", _T + "norm2.weight"),
    Rule(_B + "ffn.gate_proj.{p}", _T + "mlp.fc1_g.{p}"),
    Rule(_B + "ffn.up_proj.{p}", _T + "mlp.fc1_x.{p}"),
    Rule(_B + "ffn.down_proj.{p}", _T + "mlp.fc2.{p}"),
    Rule("rms_norm.weight", "norm.weight"),
]


def to_timm(raw: Weights) -> Weights:
    raw = strip_prefix(raw, ("vision_model.",))
    if any(k.startswith("head.") for k in raw):
        raise CheckpointError("an AIMv2 vision checkpoint with its attention-pooling head (use_head): the twins "
                              "average-pool instead, as timm's AIMv2; read one saved with use_head=false")
    return convert(raw, RULES, "hf", "HuggingFace AIMv2 vision checkpoint")


def hints(config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    if config.get("is_native"):
        raise CheckpointError("a native-resolution AIMv2 (is_native: sin-cos positions at any size), which the twins "
                              "do not build")
    if config.get("hidden_act", "silu") not in ("silu", "swish"):
        raise CheckpointError(f"an AIMv2 with hidden_act {config['hidden_act']!r}: the twins' SwiGLU uses SiLU")
    qkv_bias, mlp_bias = config.get("qkv_bias", False), config.get("mlp_bias", False)
    if qkv_bias != mlp_bias:
        raise CheckpointError(f"an AIMv2 with qkv_bias={qkv_bias} but mlp_bias={mlp_bias}: the twins' proj_bias sets "
                              "the attention output's and the MLP's biases together")
    return {"class_token": False, "global_pool": "avg", "fc_norm": False, "norm_layer": "rmsnorm",
            "embed_norm_layer": "rmsnorm", "mlp_layer": "swiglu", "act_layer": "silu", "proj_bias": mlp_bias,
            "norm_eps": config.get("rms_norm_eps", 1e-5),
            "mlp_ratio": exact_ratio(summary["mlp_dim"], summary["embed_dim"]), **size_hints(config)}


def write(timm: Weights, cfg: ViTConfig, meta: dict[str, Any]) -> tuple[Weights, dict[str, Any]]:
    refuse_unless(cfg, "Aimv2VisionModel", class_token=False, global_pool="avg", has_fc_norm=False, pre_norm=False,
                  norm_layer="rmsnorm", embed_norm_layer="rmsnorm", mlp_layer="swiglu", act_layer="silu",
                  qkv_bias=(lambda v: v == cfg.proj_bias, f"the attention output's bias iff q/k/v's: {cfg.proj_bias}"),
                  **ENCODER_FIELDS)
    config = hf_config("aimv2_vision_model", "Aimv2VisionModel", cfg, intermediate_size=cfg.mlp_dim,
                       hidden_act="silu", rms_norm_eps=cfg.norm_eps, qkv_bias=cfg.qkv_bias, mlp_bias=cfg.proj_bias,
                       use_head=False, is_native=False, attention_dropout=0.0)
    return convert(timm, RULES, "timm", "AIMv2"), config


LAYOUT = Layout("hf_aimv2", "HuggingFace transformers AIMv2 vision state dict",
                "embeddings.patch_embed, embeddings.rms_norm...",
                lambda keys: any(k.endswith("embeddings.rms_norm.weight") for k in keys), to_timm, names="timm", preprocess="aimv2", family="vit")
FAMILY = Family(("aimv2_vision_model",), LAYOUT, hints,
                lambda cfg: isinstance(cfg, ViTConfig) and cfg.norm_layer == "rmsnorm", write)
