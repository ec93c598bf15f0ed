"""OpenAI CLIP and OpenCLIP: the ViT image tower (`visual.*`) of a CLIP state dict, read to timm's
names and written back (--to openclip).

Names (openai/CLIP model.py and open_clip transformer.py, read as documentation), C = width:
    visual.conv1.weight                     (C, 3, p, p)  no bias
    visual.class_embedding                  (C,)
    visual.positional_embedding             (1 + N, C)    the class token's entry first
    visual.ln_pre.weight|bias               (C,)
    visual.transformer.resblocks.{i}.ln_1 / ln_2 .weight|bias
    visual.transformer.resblocks.{i}.attn.in_proj_weight (3C, C), in_proj_bias (3C,): rows q | k | v
    visual.transformer.resblocks.{i}.attn.out_proj.weight|bias
    visual.transformer.resblocks.{i}.mlp.c_fc / c_proj .weight|bias
    visual.transformer.resblocks.{i}.ls_1.gamma, ls_2.gamma (C,)  OpenCLIP's LayerScale, where set
    visual.ln_post.weight|bias              (C,)
    visual.proj                             (C, E)  the projection to the joint embedding, no bias
As timm does (vision_transformer.py, _convert_openai_clip), `proj` becomes the head: weight
proj.T, a zero bias; timm's CLIP image towers have num_classes = E. The text tower
(token_embedding, transformer.*, ln_final, text_projection), logit_scale (and OpenCLIP's
logit_bias) are not the twins': they are left behind, and a file written back holds `visual.*`
only. OpenAI's own files (TorchScript archives, whose state dicts also hold the integers
input_resolution, context_length and vocab_size) are recognised by those integers and run
QuickGELU; OpenCLIP's weights do not say their activation (most GELU, *-quickgelu QuickGELU).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError
from ..weights import TIMM, Weights
from .base import Implied, Layout, refuse
from .containers import save_state_dict

VISUAL = "visual."
OPENAI_ENTRIES = ("input_resolution", "context_length", "vocab_size")  # OpenAI's TorchScript state dicts
_TOP = {  # OpenCLIP name (after visual.) -> timm name
    "conv1.weight": "patch_embed.proj.weight",
    "ln_pre.weight": "norm_pre.weight", "ln_pre.bias": "norm_pre.bias",
    "ln_post.weight": "norm.weight", "ln_post.bias": "norm.bias",
}
_BLOCK = {  # inside transformer.resblocks.{i}
    "ln_1.weight": "norm1.weight", "ln_1.bias": "norm1.bias", "ln_2.weight": "norm2.weight", "ln_2.bias": "norm2.bias",
    "attn.in_proj_weight": "attn.qkv.weight", "attn.in_proj_bias": "attn.qkv.bias",
    "attn.out_proj.weight": "attn.proj.weight", "attn.out_proj.bias": "attn.proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
    "ls_1.gamma": "ls1.gamma", "ls_2.gamma": "ls2.gamma",
}
_RESBLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
# Towers OpenCLIP builds that these twins do not have, by a telltale name (after visual.).
_VARIANTS = (
    ("trunk.", "a timm model wrapped by OpenCLIP (visual.trunk.*): its names after 'visual.trunk.' are timm's; "
               "save that part alone and read it as a timm state dict"),
    ("attn_pool", "an attention-pooling tower (CoCa, attentional_pool=True)"),
    ("layer1.", "a ResNet tower (ModifiedResNet: RN50 ... RN50x64)"),
    (".ln_attn.", "a NormFormer-style block (scale_attn=True, ln_attn)"),
    (".mlp.ln.", "a block with a norm inside its MLP (scale_fc=True)"),
)


def is_openai(keys: set[str]) -> bool:
    return all(k in keys for k in OPENAI_ENTRIES)


def openclip_to_timm(raw: Weights) -> Weights:
    """The image tower in timm's names; everything outside visual.* is left behind."""
    visual = {k[len(VISUAL):]: v for k, v in raw.items() if k.startswith(VISUAL)}
    for telltale, what in _VARIANTS:
        if any(telltale in f".{k}" for k in visual):
            raise CheckpointError(f"this CLIP image tower is {what}, which these twins do not have; only the plain "
                                  "ViT tower (visual.conv1, visual.transformer.resblocks.N...) is read")
    if "ln_pre.weight" not in visual:
        raise CheckpointError("this CLIP ViT tower has no visual.ln_pre (OpenCLIP no_ln_pre=True); the twins' CLIP "
                              "towers norm before the blocks")
    out: Weights = {}
    unknown = []
    for name, value in visual.items():
        if name in _TOP:
            out[_TOP[name]] = value
        elif name == "class_embedding":
            out["cls_token"] = value.reshape(1, 1, -1)
        elif name == "positional_embedding":
            out["pos_embed"] = value[None]
        elif name == "proj":
            out["head.weight"] = np.ascontiguousarray(value.T)
            out["head.bias"] = np.zeros(value.shape[1], np.float32)  # CLIP's projection has none
        elif (m := _RESBLOCK.match(name)) and m[2] in _BLOCK:
            out[f"blocks.{m[1]}.{_BLOCK[m[2]]}"] = value
        else:
            unknown.append(VISUAL + name)
    if unknown:
        raise CheckpointError(f"CLIP image tower has names this converter does not know: {sorted(unknown)[:8]}")
    return out


def _notes(keys: set[str]) -> list[str]:
    left = sorted(k for k in keys if not k.startswith(VISUAL))
    notes = []
    if is_openai(keys):
        notes.append("OpenAI CLIP (its state dict holds input_resolution, context_length, vocab_size): without a "
                     "config or --model it runs act_layer='quick_gelu', as OpenAI's CLIP does")
    if left:
        text = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
        others = ", ".join(k for k in left if not k.startswith(text))
        notes.append(f"not read: {len(left)} entries outside visual.* (the text tower: token_embedding, "
                     f"transformer.resblocks.N, ln_final, text_projection{'; and ' + others if others else ''}): "
                     "only the image tower is these twins'; a file written from this one holds visual.* alone")
    return notes


def _implies(weights: Weights, keys: set[str]) -> Implied:
    """CLIP's towers: a norm before the blocks, LayerNorm eps 1e-5 (torch's default), LayerScale where
    the weights have it; the activation is OpenAI's QuickGELU for OpenAI's files and cannot be told
    for OpenCLIP's."""
    fields: dict[str, Any] = dict(pre_norm=True, norm_eps=1e-5)
    if any(k.endswith(".ls_1.gamma") for k in keys):  # OpenCLIP's LayerScale; the weights hold the scales,
        fields["init_values"] = 1e-5  # init_values (any positive value) only says that there is one
    if is_openai(keys):
        return Implied(fields={**fields, "act_layer": "quick_gelu"}, notes=tuple(_notes(keys)))
    return Implied(fields=fields, notes=tuple(_notes(keys)), needs={"act_layer": (
        "an OpenCLIP state dict does not say its activation: OpenAI's weights and OpenCLIP's *-quickgelu models "
        "run QuickGELU, the others GELU. Pass --act-layer quick_gelu or --act-layer gelu (in Python: act_layer=), "
        "or a preset with --model (e.g. vit_base_patch16_clip_quickgelu_224 or vit_base_patch16_clip_224)")})


def check_openclip(cfg, weights: Weights) -> None:
    """Refuse what OpenCLIP's ViT tower (a plain VisionTransformer) cannot hold, naming each."""
    if cfg.arch != "vit":
        raise CheckpointError(f"OpenCLIP's image tower is a ViT, not a {cfg.arch} model; write --to timm")
    refuse("OpenCLIP's ViT tower", (
        ("no norm before the blocks (pre_norm=False)", not cfg.pre_norm), ("no class token", not cfg.class_token),
        (f"global_pool={cfg.global_pool!r} (OpenCLIP here: the class token)", cfg.global_pool != "token"),
        ("register tokens", cfg.reg_tokens), ("a distillation token", cfg.distilled),
        ("a position table without the class token's entry (no_embed_class)", cfg.no_embed_class),
        (f"pos_embed={cfg.pos_embed!r}", cfg.pos_embed != "learn"),
        (f"norm_layer={cfg.norm_layer!r}", cfg.norm_layer != "layernorm"),
        (f"mlp_layer={cfg.mlp_layer!r}", cfg.mlp_layer != "mlp"), ("proj_bias=False", not cfg.proj_bias),
        ("qkv_bias=False", not cfg.qkv_bias), ("a patch-embedding norm", cfg.embed_norm_layer),
        ("a norm after pooling (fc_norm)", cfg.has_fc_norm), ("a representation layer", cfg.representation_size),
    ), fix="; write --to timm")
    bias = weights.get("head/bias")
    if bias is not None and np.any(bias != 0):
        raise CheckpointError("this head has a nonzero bias, which CLIP's projection (visual.proj) has not; "
                              "write --to timm, or --num-classes 0 to drop the head")


def timm_to_openclip(sd: Weights) -> Weights:
    top = {v: k for k, v in _TOP.items()}
    block = {v: k for k, v in _BLOCK.items()}
    out: Weights = {}
    for name, value in sd.items():
        if name in top:
            out[top[name]] = value
        elif name == "cls_token":
            out["class_embedding"] = value.reshape(-1)
        elif name == "pos_embed":
            out["positional_embedding"] = value[0]
        elif name == "head.weight":
            out["proj"] = np.ascontiguousarray(value.T)
        elif name == "head.bias":
            continue  # zero (check_openclip)
        elif (m := re.match(r"^blocks\.(\d+)\.(.+)$", name)) and m[2] in block:
            out[f"transformer.resblocks.{m[1]}.{block[m[2]]}"] = value
        else:
            raise CheckpointError(f"{name}: no OpenCLIP name for it")
    return {VISUAL + k: v for k, v in out.items()}


def write_openclip(weights: Weights, cfg, meta: dict, dst: Path) -> None:
    """The image tower under visual.*: .safetensors, or a torch pickle {'state_dict': ...} (.pt /
    .pth / .bin), which OpenCLIP's load_checkpoint unwraps; the config travels inside as usual."""
    check_openclip(cfg, weights)
    save_state_dict(dst, timm_to_openclip(TIMM.export(weights, cfg)), cfg, meta)


LAYOUT = Layout("openclip", "OpenAI CLIP / OpenCLIP state dict, image tower", "visual.conv1.weight, "
                "visual.transformer.resblocks.N...", lambda keys: any(k.startswith(VISUAL) for k in keys),
                openclip_to_timm, names="timm", family="vit", implies=_implies, write=write_openclip,
                suffixes=(".safetensors", ".pt", ".pth", ".bin"))
LAYOUTS = (LAYOUT,)
