"""transformers' Swin (SwinModel, SwinForImageClassification). Like Microsoft's code, HF's patch
merging ends stage i (`encoder.layers.i.downsample`) where timm's starts stage i+1."""
from __future__ import annotations

import re
from typing import Any

from ...config import SwinConfig
from ...errors import CheckpointError
from ...weights import Weights
from ..base import Layout, is_swin
from .common import label_fields, our_act, refuse_unless
from .family import Family, strip_prefix
from .names import Rule, convert

_B = "encoder.layers.{i}.blocks.{j}."
_T = "layers.{i}.blocks.{j}."
RULES = [
    Rule("embeddings.patch_embeddings.projection.{p}", "patch_embed.proj.{p}"),
    Rule("embeddings.norm.{p}", "patch_embed.norm.{p}"),
    Rule(_B + "layernorm_before.{p}", _T + "norm1.{p}"),
    Rule(_B + "attention.self.relative_position_bias_table", _T + "attn.relative_position_bias_table"),
    Rule(_B + "attention.self.{part}.{p}", _T + "attn.qkv.{p}", ("query", "key", "value")),
    Rule(_B + "attention.output.dense.{p}", _T + "attn.proj.{p}"),
    Rule(_B + "layernorm_after.{p}", _T + "norm2.{p}"),
    Rule(_B + "intermediate.dense.{p}", _T + "mlp.fc1.{p}"),
    Rule(_B + "output.dense.{p}", _T + "mlp.fc2.{p}"),
    # timm's stage i >= 1 starts with the merging HF stores at the end of stage i - 1 (renumbered below)
    Rule("encoder.merging.{i}.reduction.weight", "layers.{i}.downsample.reduction.weight"),
    Rule("encoder.merging.{i}.norm.{p}", "layers.{i}.downsample.norm.{p}"),
    Rule("layernorm.{p}", "norm.{p}"),
    Rule("classifier.{p}", "head.fc.{p}"),
    # transformers 5's in-memory modules:
    Rule(_B + "attention.relative_position_bias.relative_position_bias_table",
         _T + "attn.relative_position_bias_table", alias=True),
    Rule(_B + "attention.{part}.{p}", _T + "attn.qkv.{p}", ("q_proj", "k_proj", "v_proj"), alias=True),
    Rule(_B + "attention.o_proj.{p}", _T + "attn.proj.{p}", alias=True),
    Rule(_B + "mlp.fc1.{p}", _T + "mlp.fc1.{p}", alias=True),
    Rule(_B + "mlp.fc2.{p}", _T + "mlp.fc2.{p}", alias=True),
]


def _renumber(name: str, pattern: str, template: str, shift: int) -> str:
    m = re.match(pattern, name)
    return template.format(int(m.group(1)) + shift, m.group(2)) if m else name


def to_timm(raw: Weights) -> Weights:
    if any(k.endswith("embeddings.position_embeddings") for k in raw):
        raise CheckpointError("this Swin checkpoint has an absolute position embedding (use_absolute_embeddings), "
                              "which neither timm's Swin nor these twins have")
    raw = {_renumber(k, r"^encoder\.layers\.(\d+)\.downsample\.(.*)$", "encoder.merging.{}.{}", 1): v
           for k, v in strip_prefix(raw, ("swin.",)).items() if not k.endswith("relative_position_index")}
    return convert(raw, RULES, "hf", "HuggingFace Swin checkpoint")


def hints(config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    problems = []
    if our_act(config, "gelu") != "gelu":
        problems.append(f"hidden_act {config['hidden_act']!r} (the twins' Swin computes exact GELU)")
    if config.get("layer_norm_eps", 1e-5) != 1e-5:
        problems.append(f"layer_norm_eps {config['layer_norm_eps']} (the twins' Swin has 1e-5, as timm's)")
    if not config.get("patch_norm", True):
        problems.append("patch_norm false (the twins' Swin normalises the patch embedding)")
    if problems:
        raise CheckpointError(f"a transformers Swin the twins do not build: {'; '.join(problems)}")
    return {"img_size": config["image_size"]} if config.get("image_size") is not None else {}


def write(timm: Weights, cfg: SwinConfig, meta: dict[str, Any]) -> tuple[Weights, dict[str, Any]]:
    head = cfg.num_classes > 0
    if head:
        refuse_unless(cfg, "SwinForImageClassification", global_pool="avg")
    hf = convert(timm, RULES, "timm", "Swin")
    hf = {_renumber(k, r"^encoder\.merging\.(\d+)\.(.*)$", "encoder.layers.{}.downsample.{}", -1): v
          for k, v in hf.items()}
    if head:
        hf = {k if k.startswith("classifier.") else f"swin.{k}": v for k, v in hf.items()}
    config = {"model_type": "swin", "architectures": ["SwinForImageClassification" if head else "SwinModel"],
              "image_size": cfg.img_size, "patch_size": cfg.patch_size, "num_channels": cfg.in_chans,
              "embed_dim": cfg.embed_dim, "depths": list(cfg.depths), "num_heads": list(cfg.num_heads),
              "window_size": cfg.window_size, "mlp_ratio": cfg.mlp_ratio, "qkv_bias": cfg.qkv_bias,
              "hidden_act": "gelu", "layer_norm_eps": 1e-5, "use_absolute_embeddings": False, "patch_norm": True,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.0,
              "dtype": "float32"}
    if head:
        config.update(num_labels=cfg.num_classes, **label_fields(meta, cfg.num_classes))
    return hf, config


def _is_swin(keys: set[str]) -> bool:
    return any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in keys) and is_swin(keys)


LAYOUT = Layout("hf_swin", "HuggingFace transformers Swin state dict", "swin.encoder.layers.N.blocks.M...",
                _is_swin, to_timm, names="timm", preprocess="hf_swin", family="swin")
FAMILY = Family(("swin",), LAYOUT, hints, lambda cfg: isinstance(cfg, SwinConfig), write)
