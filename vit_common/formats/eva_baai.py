"""EVA-02 as BAAI released it (baaivision/EVA, EVA-02/asuka modeling_finetune.py), read to timm's
Eva names and written back. timm's own Eva names are the timm layout's.

A BAAI checkpoint is {'model': state dict} (timm also takes 'module' / 'model_ema'); its names:
    cls_token, pos_embed (1, 1 + N, C), patch_embed.proj
    rope.freqs_cos / freqs_sin (N, head_dim), repeated in every blocks.i.attn.rope: fixed tables
    blocks.i.norm1, blocks.i.attn.qkv (Ti, S) or q_proj / k_proj / v_proj (B, L; sub-LN), all
      without bias, and blocks.i.attn.q_bias / v_bias (the key has none)
    blocks.i.mlp.w12 / w3 (Ti, S: xformers' packed SwiGLU, gate first) or w1 (gate) / w2 /
      ffn_ln / w3 (B, L); blocks.i.gamma_1 / gamma_2 where LayerScale is used
    fc_norm + head (mean pooling; fine-tuned) or norm (class token)
  The MIM-pretrained files add mask_token and lm_head (dropped; their norm becomes fc_norm, as timm
  loads them into eva02_*_224). timm renames: w12 -> fc1, w1 -> fc1_g, w2 -> fc1_x, w3 -> fc2,
  ffn_ln -> mlp.norm, inner_attn_ln (EVA-CLIP) -> attn.norm, q_bias -> q_proj.bias with q_proj.
The writer stores the rotary tables (vit_common.config.rope, float32) where BAAI's model has them.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..config import EvaConfig
from ..config.rope import rope_tables
from ..weights import TIMM, Weights
from .base import Layout, require
from .containers import save_state_dict
from .meta_dino import STATE_DICT_FILES

# BAAI -> timm, applied in order ('w12' before 'w1').
_RENAMES = [(r"\.mlp\.ffn_ln\.", ".mlp.norm."), (r"\.attn\.inner_attn_ln\.", ".attn.norm."),
            (r"\.mlp\.w12\.", ".mlp.fc1."), (r"\.mlp\.w1\.", ".mlp.fc1_g."), (r"\.mlp\.w2\.", ".mlp.fc1_x."),
            (r"\.mlp\.w3\.", ".mlp.fc2.")]
_MIM_ONLY = ("mask_token", "lm_head.weight", "lm_head.bias")


def baai_to_timm(raw: Weights) -> Weights:
    mim = "mask_token" in raw
    split = any(k.endswith(".attn.q_proj.weight") for k in raw)
    out: Weights = {}
    for k, v in raw.items():
        if k.startswith("rope.") or ".rope." in k or k in _MIM_ONLY:
            continue  # fixed rotary tables, recomputed from the config; pretraining-only entries
        if mim and k in ("norm.weight", "norm.bias"):
            k = "fc_" + k
        for pattern, replacement in _RENAMES:
            k = re.sub(pattern, replacement, k)
        if split:
            k = re.sub(r"\.attn\.(q|v)_bias$", r".attn.\1_proj.bias", k)
        out[k] = v
    return out


def write_eva_baai(weights: Weights, cfg, meta: dict, dst: Path) -> None:
    eva = isinstance(cfg, EvaConfig)
    require("eva_baai", cfg, {
        "an Eva model": eva,
        "a class token, no registers, a position embedding with its entry": eva and cfg.class_token
        and not cfg.num_reg_tokens and cfg.use_abs_pos_emb and not cfg.no_embed_class,
        "EVA-02's rotary embedding (rope_type cat, no offset) or none": eva and (not cfg.use_rot_pos_emb or (
            cfg.rope_type == "cat" and not cfg.rope_rotate_half and cfg.rope_grid_offset == 0
            and cfg.rope_temperature == 10000.0)),
        "no inner attention norm (EVA-CLIP's, not EVA-02's)": eva and not cfg.scale_attn_inner,
        "fc_norm with mean pooling, or norm with the class token": eva and cfg.has_fc_norm == (cfg.global_pool == "avg"),
        "q and v biases (qkv_bias)": eva and cfg.qkv_bias,
    })
    sd = TIMM.export(weights, cfg)
    out: Weights = {}
    for k, v in sd.items():
        k = re.sub(r"\.attn\.(q|v)_proj\.bias$", r".attn.\1_bias", k)
        k = re.sub(r"\.mlp\.fc1\.", ".mlp.w12.", k)
        k = re.sub(r"\.mlp\.fc1_g\.", ".mlp.w1.", k)
        k = re.sub(r"\.mlp\.fc1_x\.", ".mlp.w2.", k)
        k = re.sub(r"\.mlp\.fc2\.", ".mlp.w3.", k) if cfg.swiglu_mlp else k
        k = re.sub(r"\.mlp\.norm\.", ".mlp.ffn_ln.", k)
        out[k] = v
    if not cfg.swiglu_mlp:  # EVA-01-style GELU MLP: BAAI's Mlp keeps fc1 / fc2
        out = {re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", k): v for k, v in out.items()}
    if cfg.use_rot_pos_emb:
        sin, cos = rope_tables(cfg)
        for prefix in ["rope."] + [f"blocks.{i}.attn.rope." for i in range(cfg.depth)]:
            out[prefix + "freqs_cos"], out[prefix + "freqs_sin"] = cos, sin
    save_state_dict(dst, out, wrapper="model")


def _is_baai(keys: set[str]) -> bool:
    return "patch_embed.proj.weight" in keys and any(
        re.match(r"^blocks\.\d+\.(mlp\.(w12|w1|w3|ffn_ln)\.weight|attn\.inner_attn_ln\.weight)$", k)
        or k == "rope.freqs_cos" for k in keys)


LAYOUT = Layout("eva_baai", "EVA-02 state dict (BAAI's names)", "blocks.N.mlp.w12 / w1 / w3, rope.freqs_cos",
                _is_baai, baai_to_timm, names="timm", family="eva", write=write_eva_baai, suffixes=STATE_DICT_FILES)
LAYOUTS = (LAYOUT,)
