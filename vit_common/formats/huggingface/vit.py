"""transformers' ViT (ViTModel, ViTForImageClassification) and DeiT (DeiTModel,
DeiTForImageClassificationWithTeacher): a plain pre-norm ViT with a class token (and DeiT's
distillation token), whose position table covers the prefix tokens.

ViTModel's pooler (Dense + tanh on the normalised class token) is timm's pre_logits
(representation_size). ViTModel and DeiTModel always build one: where ours has none, the writer
fills it with zeros (pooler_output is then 0) and the reader drops an all-zero pooler again.
DeiTModel's pooler is dropped whatever it holds: DeiT has none, HF initialises it at random.
Likewise a model whose table leaves out the prefix tokens (no_embed_class: DeiT III) is written
with zero entries for them, and read back without them.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...config import ViTConfig
from ...errors import CheckpointError
from ...weights import Weights
from ..base import Layout, is_swin
from .common import HF_ACT, all_zero, exact_ratio, label_fields, our_act, refuse_unless, size_hints
from .family import Family, hf_config, strip_prefix
from .names import Rule, convert

_QKV = ("query", "key", "value")


def _rules(head: str = "classifier") -> list[Rule]:
    block = "encoder.layer.{i}."
    return [
        Rule("embeddings.cls_token", "cls_token"),
        Rule("embeddings.distillation_token", "dist_token"),
        Rule("embeddings.position_embeddings", "pos_embed"),
        Rule("embeddings.patch_embeddings.projection.{p}", "patch_embed.proj.{p}"),
        Rule(block + "attention.attention.{part}.{p}", "blocks.{i}.attn.qkv.{p}", _QKV),
        Rule(block + "attention.output.dense.{p}", "blocks.{i}.attn.proj.{p}"),
        Rule(block + "layernorm_before.{p}", "blocks.{i}.norm1.{p}"),
        Rule(block + "layernorm_after.{p}", "blocks.{i}.norm2.{p}"),
        Rule(block + "intermediate.dense.{p}", "blocks.{i}.mlp.fc1.{p}"),
        Rule(block + "output.dense.{p}", "blocks.{i}.mlp.fc2.{p}"),
        Rule("layernorm.{p}", "norm.{p}"),
        Rule("pooler.dense.{p}", "pre_logits.fc.{p}"),
        Rule(head + ".{p}", "head.{p}"),
        Rule("classifier.{p}", "head.{p}", alias=True),
        Rule("cls_classifier.{p}", "head.{p}", alias=True),
        Rule("distillation_classifier.{p}", "head_dist.{p}"),
        # transformers 5's in-memory modules (model.state_dict()):
        Rule("layers.{i}.attention.{part}.{p}", "blocks.{i}.attn.qkv.{p}", ("q_proj", "k_proj", "v_proj"), alias=True),
        Rule("layers.{i}.attention.o_proj.{p}", "blocks.{i}.attn.proj.{p}", alias=True),
        Rule("layers.{i}.layernorm_before.{p}", "blocks.{i}.norm1.{p}", alias=True),
        Rule("layers.{i}.layernorm_after.{p}", "blocks.{i}.norm2.{p}", alias=True),
        Rule("layers.{i}.mlp.fc1.{p}", "blocks.{i}.mlp.fc1.{p}", alias=True),
        Rule("layers.{i}.mlp.fc2.{p}", "blocks.{i}.mlp.fc2.{p}", alias=True),
    ]


def to_timm(raw: Weights) -> Weights:
    raw = strip_prefix(raw, ("vit.", "deit."))
    # The writer's placeholder; DeiTModel's pooler is no part of DeiT (HF initialises it at random).
    if "embeddings.distillation_token" in raw or all_zero(raw.get("pooler.dense.weight")) and all_zero(
            raw.get("pooler.dense.bias")):
        raw = {k: v for k, v in raw.items() if not k.startswith("pooler.")}
    out = convert(raw, _rules(), "hf", "HuggingFace ViT/DeiT checkpoint")
    prefix = 1 + int("dist_token" in out)
    if "pos_embed" in out and all_zero(out["pos_embed"][:, :prefix]):  # written from a no_embed_class model
        out["pos_embed"] = out["pos_embed"][:, prefix:]
    if "dist_token" in out and "head.weight" in out and "head_dist.weight" not in out:
        raise CheckpointError("a DeiTForImageClassification checkpoint (a classifier on the class token only, with a "
                              "distillation token): the twins' distilled DeiT has both heads; read "
                              "DeiTForImageClassificationWithTeacher or DeiTModel checkpoints")
    return out


def hints(config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    fields = {"norm_eps": config.get("layer_norm_eps", 1e-12), "act_layer": our_act(config, "gelu"),
              "mlp_ratio": exact_ratio(summary["mlp_dim"], summary["embed_dim"])}
    fields.update(size_hints(config))
    if config.get("pooler_act", "tanh") != "tanh" and summary["representation_size"]:
        raise CheckpointError(f"pooler_act {config['pooler_act']!r}: the twins' representation layer is tanh")
    return fields


def write(timm: Weights, cfg: ViTConfig, meta: dict[str, Any]) -> tuple[Weights, dict[str, Any]]:
    model_type = "deit" if cfg.distilled else "vit"
    head = cfg.num_classes > 0
    base = "DeiT" if cfg.distilled else "ViT"
    what = f"{base}Model / {base}ForImageClassification"
    refuse_unless(cfg, what, class_token=True, global_pool="token", reg_tokens=0, init_values=None, pre_norm=False,
                  norm_layer="layernorm", mlp_layer="mlp", proj_bias=True, embed_norm_layer=None, pos_embed="learn",
                  has_fc_norm=False)
    if head and cfg.representation_size:
        raise CheckpointError(f"transformers' {base}ForImageClassification has no representation layer (pre_logits) "
                              f"before its classifier; this model has representation_size={cfg.representation_size}")
    timm = dict(timm)
    prefix = cfg.num_prefix_tokens
    if cfg.no_embed_class:  # HF adds the table to the prefix tokens too: zero entries for them
        pos = timm["pos_embed"]
        timm["pos_embed"] = np.concatenate([np.zeros((1, prefix, pos.shape[-1]), pos.dtype), pos], axis=1)
    if not head and not cfg.representation_size:  # ViTModel's pooler, which ours lacks: zeros (see above)
        timm["pre_logits.fc.weight"] = np.zeros((cfg.embed_dim, cfg.embed_dim), np.float32)
        timm["pre_logits.fc.bias"] = np.zeros((cfg.embed_dim,), np.float32)
    hf = convert(timm, _rules("cls_classifier" if cfg.distilled else "classifier"), "timm", "ViT")
    if head:
        hf = {k if k.split(".")[0].endswith("classifier") else f"{model_type}.{k}": v for k, v in hf.items()}
        architecture = "DeiTForImageClassificationWithTeacher" if cfg.distilled else "ViTForImageClassification"
    else:
        architecture = f"{base}Model"
    config = hf_config(model_type, architecture, cfg, intermediate_size=cfg.mlp_dim, hidden_act=HF_ACT[cfg.act_layer],
                       layer_norm_eps=cfg.norm_eps, qkv_bias=cfg.qkv_bias, pooler_act="tanh",
                       pooler_output_size=cfg.representation_size or cfg.embed_dim,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if head:
        config.update(num_labels=cfg.num_classes, **label_fields(meta, cfg.num_classes))
    return hf, config


def _is_vit(keys: set[str]) -> bool:
    return (any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in keys) and not is_swin(keys)
            and not any(".layer_scale1." in k or k.endswith("embeddings.mask_token") for k in keys))


LAYOUT = Layout("hf", "HuggingFace transformers ViT/DeiT state dict", "vit.embeddings...", _is_vit, to_timm,
                names="timm", family="vit", preprocess="google", model_first=True, pos_embed_interp="transformers")
FAMILY = Family(("vit", "deit"), LAYOUT, hints, lambda cfg: isinstance(cfg, ViTConfig), write)
