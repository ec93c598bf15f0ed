"""transformers' DINOv2 (Dinov2Model) and DINOv2 with registers (Dinov2WithRegistersModel).

A ViT whose blocks always have LayerScale (`layer_scale1.lambda1`; ones where ours has none),
an MLP or a packed SwiGLU (`mlp.weights_in` = timm's fc1, act(first half) * second half), and
the masked-image-modelling `mask_token`, which the encoder never uses on images alone: read,
it is dropped; written, it is zeros. HF's position table always has the class token's entry;
timm's registers models (no_embed_class) fold it into the class token, as timm's converter does,
and are written back with a zero entry.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...config import ViTConfig
from ...errors import CheckpointError
from ...weights import Weights
from ..base import Layout
from .common import HF_ACT, all_zero, exact_ratio, our_act, refuse_unless, size_hints
from .family import Family, hf_config, strip_prefix
from .names import Rule, convert


def _rules(swiglu: bool) -> list[Rule]:
    b, t = "encoder.layer.{i}.", "blocks.{i}."
    mlp = [Rule(b + "mlp.fc1.{p}", t + "mlp.fc1.{p}"), Rule(b + "mlp.fc2.{p}", t + "mlp.fc2.{p}")]
    glu = [Rule(b + "mlp.weights_in.{p}", t + "mlp.fc1.{p}"), Rule(b + "mlp.weights_out.{p}", t + "mlp.fc2.{p}")]
    return [
        Rule("embeddings.cls_token", "cls_token"),
        Rule("embeddings.register_tokens", "reg_token"),
        Rule("embeddings.position_embeddings", "pos_embed"),
        Rule("embeddings.patch_embeddings.projection.{p}", "patch_embed.proj.{p}"),
        Rule(b + "norm1.{p}", t + "norm1.{p}"),
        Rule(b + "attention.attention.{part}.{p}", t + "attn.qkv.{p}", ("query", "key", "value")),
        Rule(b + "attention.output.dense.{p}", t + "attn.proj.{p}"),
        Rule(b + "layer_scale1.lambda1", t + "ls1.gamma"),
        Rule(b + "norm2.{p}", t + "norm2.{p}"),
        *(glu + mlp if swiglu else mlp + glu),
        Rule(b + "layer_scale2.lambda1", t + "ls2.gamma"),
        Rule("layernorm.{p}", "norm.{p}"),
        # transformers 5's in-memory modules:
        Rule(b + "attention.{part}.{p}", t + "attn.qkv.{p}", ("q_proj", "k_proj", "v_proj"), alias=True),
        Rule(b + "attention.o_proj.{p}", t + "attn.proj.{p}", alias=True),
        Rule(b + "mlp.{part}.{p}", t + "mlp.fc1.{p}", ("gate_proj", "up_proj"), alias=True),
        Rule(b + "mlp.down_proj.{p}", t + "mlp.fc2.{p}", alias=True),
    ]


def to_timm(raw: Weights) -> Weights:
    raw = {k: v for k, v in strip_prefix(raw, ("dinov2.", "dinov2_with_registers.")).items()
           if k != "embeddings.mask_token"}
    if any(k.startswith("classifier.") for k in raw):
        raise CheckpointError("a Dinov2ForImageClassification checkpoint: its classifier reads the class token and the "
                              "mean patch token side by side, which the twins' heads do not; read the backbone "
                              "(Dinov2Model)")
    out = convert(raw, _rules(False), "hf", "HuggingFace DINOv2 checkpoint")
    pos = out.get("pos_embed")
    if pos is not None and ("reg_token" in out or all_zero(pos[:, :1])):  # timm: no_embed_class
        out["cls_token"] = out["cls_token"] + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
    return out


def hints(config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    swiglu = config.get("use_swiglu_ffn", False)
    fields = {"norm_eps": config.get("layer_norm_eps", 1e-6), "global_pool": "token", "fc_norm": None,
              "init_values": config.get("layerscale_value", 1.0), "reg_tokens": config.get("num_register_tokens", 0),
              "act_layer": "silu" if swiglu else our_act(config, "gelu"),
              "mlp_layer": "swiglu_packed" if swiglu else "mlp",
              "mlp_ratio": exact_ratio(summary["mlp_dim"], summary["embed_dim"])}
    fields.update(size_hints(config))
    return fields


def _hf_mlp_ratio(cfg: ViTConfig) -> int:
    """Dinov2Config.mlp_ratio (an integer) giving our MLP: C * ratio wide, or for SwiGLU two thirds
    of that rounded up to a multiple of 8 (HF's rule) = our hidden width."""
    c, hidden = cfg.embed_dim, cfg.mlp_hidden
    for ratio in range(1, 65):
        width = c * ratio
        if (width if cfg.mlp_layer == "mlp" else (int(width * 2 / 3) + 7) // 8 * 8) == hidden:
            return ratio
    rule = "C * mlp_ratio" if cfg.mlp_layer == "mlp" else "two thirds of C * mlp_ratio, rounded up to 8"
    raise CheckpointError(f"transformers' Dinov2 MLP is {rule} wide for an integer mlp_ratio; no ratio gives this "
                          f"model's {hidden} at width C={c}")


def write(timm: Weights, cfg: ViTConfig, meta: dict[str, Any]) -> tuple[Weights, dict[str, Any]]:
    registers = cfg.reg_tokens > 0
    what = "Dinov2WithRegistersModel" if registers else "Dinov2Model"
    swiglu = cfg.mlp_layer == "swiglu_packed"
    refuse_unless(cfg, what, class_token=True, global_pool="token", distilled=False, pre_norm=False,
                  norm_layer="layernorm", mlp_layer=(lambda v: v in ("mlp", "swiglu_packed"), "mlp or swiglu_packed"),
                  proj_bias=True, embed_norm_layer=None, pos_embed="learn", has_fc_norm=False,
                  representation_size=None, num_classes=(lambda v: v == 0, "no classifier the twins have: 0"),
                  no_embed_class=(lambda v: v or not registers, "registers without position entries: True"),
                  act_layer=(lambda v: v == "silu" or not swiglu, "SiLU in its SwiGLU"))
    timm = dict(timm)
    pos = timm["pos_embed"]
    if cfg.no_embed_class:  # HF adds the table to the class token too: a zero entry for it
        timm["pos_embed"] = np.concatenate([np.zeros((1, 1, pos.shape[-1]), pos.dtype), pos], axis=1)
    if cfg.init_values is None:  # HF's blocks always scale their residual branches: by ones here
        for i in range(cfg.depth):
            timm[f"blocks.{i}.ls1.gamma"] = timm[f"blocks.{i}.ls2.gamma"] = np.ones((cfg.embed_dim,), np.float32)
    hf = convert(timm, _rules(swiglu), "timm", "DINOv2")
    hf["embeddings.mask_token"] = np.zeros((1, cfg.embed_dim), np.float32)  # unused on images; see above
    model_type = "dinov2_with_registers" if registers else "dinov2"
    config = hf_config(model_type, what, cfg, mlp_ratio=_hf_mlp_ratio(cfg), use_swiglu_ffn=swiglu,
                       hidden_act=HF_ACT[cfg.act_layer], layer_norm_eps=cfg.norm_eps, qkv_bias=cfg.qkv_bias,
                       layerscale_value=cfg.init_values or 1.0, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0, drop_path_rate=0.0)
    if registers:
        config["num_register_tokens"] = cfg.reg_tokens
    return hf, config


def _is_dinov2(keys: set[str]) -> bool:
    return any(k.startswith(("encoder.layer.", "dinov2.encoder.layer.", "dinov2_with_registers.encoder.layer."))
               and ".layer_scale1." in k for k in keys)


LAYOUT = Layout("hf_dinov2", "HuggingFace transformers DINOv2 state dict",
                "embeddings.mask_token, encoder.layer.N.layer_scale1.lambda1...", _is_dinov2, to_timm, names="timm", preprocess="dinov2_hub", family="vit",
                pos_embed_interp="transformers")
FAMILY = Family(("dinov2", "dinov2_with_registers"), LAYOUT, hints,
                lambda cfg: isinstance(cfg, ViTConfig) and (cfg.reg_tokens > 0 or cfg.init_values is not None
                                                            or cfg.mlp_layer == "swiglu_packed"),
                write)
