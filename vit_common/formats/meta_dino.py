"""Meta's DINOv2 and DINOv3 backbones as released for torch.hub (facebookresearch/dinov2, /dinov3),
read to timm's names and written back.

DINOv2 (`dinov2_vits14.pth` ...; timm's vit_*_patch14_dinov2 / _reg4_dinov2, a ViTConfig):
    cls_token (1, 1, C), pos_embed (1, 1 + N, C): the class token has an entry, the registers none
    register_tokens (1, R, C)           with registers (timm: reg_token)
    mask_token (1, C)                   masked-image pretraining only; written as zeros
    patch_embed.proj, blocks.i.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2,
    ls2.gamma}, norm; the giant's SwiGLU is mlp.w12 (gate | value) and mlp.w3 (timm fc1 / fc2)
  Training checkpoints chunk the blocks (blocks.c.i...): read as blocks.i.
  With registers timm has no entry for the class token (no_embed_class): its entry is folded into
  the token on read, cls + pos[0] (what DINOv2 adds in every forward), and written as a zero row.

DINOv3 (`dinov3_vits16_pretrain_lvd1689m-*.pth` ...; timm's vit_*_patch16_dinov3[_qkvb], an EvaConfig):
    cls_token, storage_tokens (1, 4, C) (timm reg_token), mask_token (1, C) (zeros), no pos_embed
    rope_embed.periods (head_dim / 4,)  rotary periods, base ** (k / (head_dim / 4)), base 100
    blocks.i.attn.qkv.bias (3C,), .bias_mask (3C,) = [1 | 0 | 1]: the key bias is masked out
    blocks.i.ls1.gamma / ls2.gamma (timm gamma_1 / gamma_2), mlp.fc1 / fc2 or SwiGLU mlp.w1 (gate),
    w2, w3 (timm fc1_g, fc1_x, fc2), norm; local_cls_norm (the 7B; used only in training)
  The hub builds every ViT but the 7B with qkv_bias=True; the distilled ones hold zero biases,
  which timm's presets without _qkvb drop: all-zero q / v biases are read as none. A key bias
  shifts every logit of a query equally, so dropping it leaves the attention unchanged.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..config import EvaConfig, ViTConfig
from ..errors import CheckpointError
from ..weights import TIMM, Weights
from .base import Implied, Layout, require
from .containers import save_state_dict

STATE_DICT_FILES = (".pth", ".pt", ".safetensors")  # as the hub releases them, or as safetensors
DINOV2_SIZES = {384: "small", 768: "base", 1024: "large", 1536: "giant"}
DINOV3_ROPE_BASE = 100.0
_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")  # training checkpoints: blocks.<chunk>.<block>.


# DINOv2 -----------------------------------------------------------------------------------------
def dinov2_to_timm(raw: Weights) -> Weights:
    sd = {_CHUNKED.sub(r"blocks.\1.", k): v for k, v in raw.items() if k != "mask_token"}
    if "register_tokens" in sd:  # timm: no_embed_class, the class token's entry folded into it
        sd["reg_token"] = sd.pop("register_tokens")
        pos = sd["pos_embed"]
        if np.any(pos[:, :1]):  # a zero row (what the writer stores) leaves the token bit-exact
            sd["cls_token"] = sd["cls_token"] + pos[:, :1]
        sd["pos_embed"] = pos[:, 1:]
    return {re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", k)): v for k, v in sd.items()}


def implied_dinov2(sd: Weights, keys: set[str]) -> Implied:
    """Nothing in the hub's files says the heads or LayerScale: the width names the released size."""
    width = sd["patch_embed.proj.weight"].shape[0]
    if width not in DINOV2_SIZES:
        return Implied(needs={"num_heads": f"a DINOv2 hub checkpoint of width {width}, which no DINOv2 preset has: "
                                           "its file does not record the heads; pass --num-heads (the rest is read "
                                           "off the shapes)"})
    return Implied(model=f"vit_{DINOV2_SIZES[width]}_patch14_{'reg4_' if 'reg_token' in sd else ''}dinov2")


def write_dinov2(weights: Weights, cfg, meta: dict, dst: Path) -> None:
    vit = isinstance(cfg, ViTConfig)
    require("dinov2", cfg, {
        "a ViT (not Swin or Eva)": vit,
        "a class token, no distillation token": vit and cfg.class_token and not cfg.distilled,
        "LayerScale (init_values)": vit and cfg.init_values is not None,
        "LayerNorm, no norm before the blocks or on the patches": vit and cfg.norm_layer == "layernorm"
        and not cfg.pre_norm and not cfg.embed_norm_layer,
        "a GELU MLP or the giant's packed SiLU SwiGLU": vit and (cfg.mlp_layer, cfg.act_layer) in (
            ("mlp", "gelu"), ("swiglu_packed", "silu")),
        "q/k/v, projection and MLP biases": vit and cfg.qkv_bias and cfg.proj_bias,
        "a learned position embedding, no fc_norm or MAP head": vit and cfg.pos_embed == "learn"
        and not cfg.has_fc_norm and cfg.global_pool != "map" and not cfg.representation_size,
        "no classifier (the hub's backbones have none): --num-classes 0": vit and cfg.num_classes == 0,
        "registers without position entries (no_embed_class)": vit and (cfg.no_embed_class or not cfg.reg_tokens),
    })
    sd = TIMM.export(weights, cfg)
    c = cfg.embed_dim
    pos = sd.pop("pos_embed")
    out = {"cls_token": sd.pop("cls_token"),
           "pos_embed": np.concatenate([np.zeros((1, 1, c), pos.dtype), pos], 1) if cfg.no_embed_class else pos}
    if cfg.reg_tokens:
        out["register_tokens"] = sd.pop("reg_token")
    out["mask_token"] = np.zeros((1, c), np.float32)
    for k, v in sd.items():
        if cfg.mlp_layer == "swiglu_packed":
            k = re.sub(r"\.mlp\.fc1\.", ".mlp.w12.", re.sub(r"\.mlp\.fc2\.", ".mlp.w3.", k))
        out[k] = v
    save_state_dict(dst, out, wrapper=None)


# DINOv3 -----------------------------------------------------------------------------------------
def dinov3_periods(head_dim: int, base: float = DINOV3_ROPE_BASE) -> np.ndarray:
    quarter = head_dim // 4
    return (base ** (np.arange(quarter, dtype=np.float64) / quarter)).astype(np.float32)


def _check_dinov3_buffers(raw: Weights) -> None:
    if "cls_norm.weight" in raw:
        raise CheckpointError("this DINOv3 model normalises the class token apart (untie_cls_and_patch_norms), "
                              "which timm's Eva and these twins do not")
    periods = raw.get("rope_embed.periods")
    if periods is not None:
        want = dinov3_periods(4 * periods.shape[0])
        if not np.allclose(periods, want, rtol=1e-5, atol=0):
            raise CheckpointError(f"rope_embed.periods are not DINOv3's base-{DINOV3_ROPE_BASE:g} periods "
                                  "(min / max period variants are not supported)")
    for name, mask in raw.items():
        if name.endswith(".bias_mask"):
            c = mask.shape[0] // 3
            if not (np.all(mask[:c] == 1) and np.all(mask[c:2 * c] == 0) and np.all(mask[2 * c:] == 1)):
                raise CheckpointError(f"{name} is not DINOv3's key-bias mask [1 | 0 | 1]")


_DINOV3_RENAMES = [(r"^storage_tokens$", "reg_token"), (r"\.ls1\.gamma$", ".gamma_1"), (r"\.ls2\.gamma$", ".gamma_2"),
                   (r"\.mlp\.w1\.", ".mlp.fc1_g."), (r"\.mlp\.w2\.", ".mlp.fc1_x."), (r"\.mlp\.w3\.", ".mlp.fc2.")]


def dinov3_to_timm(raw: Weights) -> Weights:
    _check_dinov3_buffers(raw)
    out: Weights = {}
    for k, v in raw.items():
        if k in ("mask_token", "rope_embed.periods") or k.endswith(".bias_mask") or k.startswith("local_cls_norm."):
            continue
        if k.endswith(".attn.qkv.bias"):
            q, _, value = np.split(v, 3)  # the key's part is masked out (and would not matter)
            if np.any(q) or np.any(value):
                out[k.replace("qkv.bias", "q_bias")], out[k.replace("qkv.bias", "v_bias")] = q, value
            continue
        for pattern, replacement in _DINOV3_RENAMES:
            k = re.sub(pattern, replacement, k)
        out[k] = v
    return out


def _is_7b(cfg: EvaConfig) -> bool:
    """The 7B, the one hub model built without q/k/v bias and with local_cls_norm."""
    return cfg.swiglu_align_to == 64


def write_dinov3(weights: Weights, cfg, meta: dict, dst: Path) -> None:
    eva = isinstance(cfg, EvaConfig)
    require("dinov3", cfg, {
        "an Eva model (EVA-02 / DINOv3 family)": eva,
        "DINOv3's rotary embedding (rope_type dinov3, rotate-half, no offset), no absolute one": eva
        and cfg.use_rot_pos_emb and cfg.rope_type == "dinov3" and cfg.rope_rotate_half
        and cfg.rope_grid_offset == 0 and cfg.rope_temperature == DINOV3_ROPE_BASE and not cfg.use_abs_pos_emb,
        "a class token, LayerScale, fused q|k|v": eva and cfg.class_token and cfg.init_values is not None
        and cfg.qkv_fused,
        "a GELU MLP or a split SwiGLU, no inner norms": eva and cfg.mlp_kind in ("gelu", "swiglu")
        and not cfg.scale_mlp and not cfg.scale_attn_inner,
        "the final norm, no fc_norm or classifier (--num-classes 0)": eva and not cfg.has_fc_norm
        and cfg.num_classes == 0,
    })
    sd = TIMM.export(weights, cfg)
    c = cfg.embed_dim
    out = {"cls_token": sd.pop("cls_token")}
    if cfg.num_reg_tokens:
        out["storage_tokens"] = sd.pop("reg_token")
    out["mask_token"] = np.zeros((1, c), np.float32)
    out["patch_embed.proj.weight"], out["patch_embed.proj.bias"] = sd.pop("patch_embed.proj.weight"), sd.pop(
        "patch_embed.proj.bias")
    out["rope_embed.periods"] = dinov3_periods(cfg.head_dim)
    bias = cfg.qkv_bias or not _is_7b(cfg)
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        block = {k[len(b):]: v for k, v in sd.items() if k.startswith(b)}
        out[b + "norm1.weight"], out[b + "norm1.bias"] = block["norm1.weight"], block["norm1.bias"]
        out[b + "attn.qkv.weight"] = block["attn.qkv.weight"]
        if bias:
            zeros = np.zeros(c, np.float32)
            out[b + "attn.qkv.bias"] = np.concatenate([block.get("attn.q_bias", zeros), zeros,
                                                       block.get("attn.v_bias", zeros)])
            out[b + "attn.qkv.bias_mask"] = np.concatenate([np.ones(c), np.zeros(c), np.ones(c)]).astype(np.float32)
        out[b + "attn.proj.weight"], out[b + "attn.proj.bias"] = block["attn.proj.weight"], block["attn.proj.bias"]
        out[b + "ls1.gamma"] = block["gamma_1"]
        out[b + "norm2.weight"], out[b + "norm2.bias"] = block["norm2.weight"], block["norm2.bias"]
        mlp = {"fc1_g": "w1", "fc1_x": "w2", "fc2": "w3"} if cfg.mlp_kind == "swiglu" else {"fc1": "fc1", "fc2": "fc2"}
        for theirs, ours in mlp.items():
            for leaf in ("weight", "bias"):
                out[f"{b}mlp.{ours}.{leaf}"] = block[f"mlp.{theirs}.{leaf}"]
        out[b + "ls2.gamma"] = block["gamma_2"]
    out["norm.weight"], out["norm.bias"] = sd.pop("norm.weight"), sd.pop("norm.bias")
    if _is_7b(cfg):  # the hub's 7B has it (strict load); inference never uses it
        out["local_cls_norm.weight"], out["local_cls_norm.bias"] = out["norm.weight"].copy(), out["norm.bias"].copy()
    save_state_dict(dst, out, wrapper=None)


def _is_dinov2(keys: set[str]) -> bool:
    return "mask_token" in keys and "pos_embed" in keys and "storage_tokens" not in keys and any(
        re.match(r"^blocks\.(\d+\.)?\d+\.ls1\.gamma$", k) for k in keys)


def _is_dinov3(keys: set[str]) -> bool:
    return "patch_embed.proj.weight" in keys and ("storage_tokens" in keys or "rope_embed.periods" in keys)


DINOV2 = Layout("dinov2", "DINOv2 torch.hub state dict", "mask_token, pos_embed, blocks.N.ls1.gamma",
                _is_dinov2, dinov2_to_timm, names="timm", family="vit", implies=implied_dinov2, preprocess="dinov2_hub", write=write_dinov2,
                suffixes=STATE_DICT_FILES, pos_embed_interp="dinov2")
DINOV3 = Layout("dinov3", "DINOv3 torch.hub state dict", "storage_tokens, rope_embed.periods",
                _is_dinov3, dinov3_to_timm, names="timm", family="eva", write=write_dinov3, suffixes=STATE_DICT_FILES)
LAYOUTS = (DINOV3, DINOV2)
