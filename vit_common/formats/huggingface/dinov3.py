"""transformers' DINOv3 (DINOv3ViTModel): timm's Eva with DINOv3's rotary embedding, a class
token and registers, LayerScale, q/v biases without a k bias, a GELU MLP (`up_proj` /
`down_proj`) or a SwiGLU one (`gate_proj` / `up_proj` = timm's fc1_g / fc1_x). Its
`mask_token` (masked pretraining) is unused on images: dropped when read, zeros when written;
LayerScale is always there (ones where ours has none). Saved names start `layer.N`, the
in-memory ones `model.layer.N`."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...config import EvaConfig
from ...errors import CheckpointError
from ...weights import Weights
from ..base import Layout
from .common import exact_ratio, refuse_unless, size_hints
from .family import Family, strip_prefix
from .names import Rule, convert


def _rules(gated: bool) -> list[Rule]:
    b, t = "layer.{i}.", "blocks.{i}."
    mlp = ([Rule(b + "mlp.gate_proj.{p}", t + "mlp.fc1_g.{p}"), Rule(b + "mlp.up_proj.{p}", t + "mlp.fc1_x.{p}")]
           if gated else [Rule(b + "mlp.up_proj.{p}", t + "mlp.fc1.{p}")])
    return [
        Rule("embeddings.cls_token", "cls_token"),
        Rule("embeddings.register_tokens", "reg_token"),
        Rule("embeddings.patch_embeddings.{p}", "patch_embed.proj.{p}"),
        Rule(b + "norm1.{p}", t + "norm1.{p}"),
        Rule(b + "attention.{part}.weight", t + "attn.qkv.weight", ("q_proj", "k_proj", "v_proj")),
        Rule(b + "attention.q_proj.bias", t + "attn.q_bias"),
        Rule(b + "attention.v_proj.bias", t + "attn.v_bias"),
        Rule(b + "attention.o_proj.{p}", t + "attn.proj.{p}"),
        Rule(b + "layer_scale1.lambda1", t + "gamma_1"),
        Rule(b + "norm2.{p}", t + "norm2.{p}"),
        *mlp,
        Rule(b + "mlp.down_proj.{p}", t + "mlp.fc2.{p}"),
        Rule(b + "layer_scale2.lambda1", t + "gamma_2"),
        Rule("norm.{p}", "norm.{p}"),
    ]


def to_timm(raw: Weights) -> Weights:
    raw = {k: v for k, v in strip_prefix(raw, ("model.",)).items() if k != "embeddings.mask_token"}
    if any(k.endswith("attention.k_proj.bias") for k in raw):
        raise CheckpointError("a DINOv3 with a key bias (key_bias): timm's Eva, and the twins, have q and v "
                              "biases only")
    gated = any(".mlp.gate_proj." in k for k in raw)
    out = convert(raw, _rules(gated), "hf", "HuggingFace DINOv3 checkpoint")
    if "reg_token" in out and out["reg_token"].shape[1] == 0:  # HF keeps a (1, 0, C) tensor without registers
        del out["reg_token"]
    return out


def hints(config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    gated = config.get("use_gated_mlp", False)
    act = config.get("hidden_act", "gelu")
    problems = []
    if act != ("silu" if gated else "gelu"):
        problems.append(f"hidden_act {act!r} (the twins' {'SwiGLU' if gated else 'MLP'} computes "
                        f"{'SiLU' if gated else 'exact GELU'})")
    for flag in ("proj_bias", "mlp_bias"):
        if not config.get(flag, True):
            problems.append(f"{flag} false (timm's Eva has these biases)")
    if config.get("query_bias", True) != config.get("value_bias", True):
        problems.append("query_bias and value_bias differ (timm's Eva has both or neither)")
    if problems:
        raise CheckpointError(f"a DINOv3 the twins do not build: {'; '.join(problems)}")
    fields = {"global_pool": "token", "use_fc_norm": False, "norm_eps": config.get("layer_norm_eps", 1e-5),
              "rope_temperature": float(config.get("rope_theta", 100.0)),
              "mlp_ratio": exact_ratio(summary["mlp_dim"], summary["embed_dim"])}
    return {**fields, **size_hints(config)}


def write(timm: Weights, cfg: EvaConfig, meta: dict[str, Any]) -> tuple[Weights, dict[str, Any]]:
    if not (cfg.use_rot_pos_emb and cfg.rope_type == "dinov3"):
        raise CheckpointError("transformers has no EVA-02 (nor EVA-01); of timm's Eva models it holds DINOv3 only "
                              "(rope_type='dinov3'). Write another format (--to timm, canonical .npz)")
    refuse_unless(cfg, "DINOv3ViTModel", rope_rotate_half=True, rope_grid_offset=0.0, use_abs_pos_emb=False,
                  class_token=True, global_pool="token", has_fc_norm=False, scale_mlp=False, scale_attn_inner=False,
                  qkv_fused=True, num_classes=(lambda v: v == 0, "no classifier: 0"),
                  mlp_kind=(lambda v: v in ("gelu", "swiglu"), "a GELU MLP or a SwiGLU with separate gate and value"))
    gated = cfg.mlp_kind == "swiglu"
    timm = dict(timm)
    if cfg.init_values is None:  # HF's blocks always scale their residual branches: by ones here
        for i in range(cfg.depth):
            timm[f"blocks.{i}.gamma_1"] = timm[f"blocks.{i}.gamma_2"] = np.ones((cfg.embed_dim,), np.float32)
    hf = convert(timm, _rules(gated), "timm", "DINOv3")
    hf["embeddings.mask_token"] = np.zeros((1, 1, cfg.embed_dim), np.float32)  # unused on images; see above
    hf.setdefault("embeddings.register_tokens", np.zeros((1, 0, cfg.embed_dim), np.float32))  # HF's, even if empty
    config = {"model_type": "dinov3_vit", "architectures": ["DINOv3ViTModel"], "image_size": cfg.img_size,
              "patch_size": cfg.patch_size, "num_channels": cfg.in_chans, "hidden_size": cfg.embed_dim,
              "intermediate_size": cfg.mlp_dim, "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.num_heads,
              "hidden_act": "silu" if gated else "gelu", "use_gated_mlp": gated, "layer_norm_eps": cfg.norm_eps,
              "rope_theta": cfg.rope_temperature, "query_bias": cfg.qkv_bias, "key_bias": False,
              "value_bias": cfg.qkv_bias, "proj_bias": True, "mlp_bias": True,
              "layerscale_value": cfg.init_values or 1.0, "num_register_tokens": cfg.num_reg_tokens,
              "attention_dropout": 0.0, "drop_path_rate": 0.0, "dtype": "float32"}
    return hf, config


def _is_dinov3(keys: set[str]) -> bool:
    return any(k.endswith("embeddings.patch_embeddings.weight") for k in keys)


LAYOUT = Layout("hf_dinov3", "HuggingFace transformers DINOv3 state dict",
                "embeddings.patch_embeddings.weight, layer.N.layer_scale1...", _is_dinov3, to_timm, names="timm", family="eva")
FAMILY = Family(("dinov3_vit",), LAYOUT, hints, lambda cfg: isinstance(cfg, EvaConfig), write)
