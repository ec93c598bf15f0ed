"""AIMv2 image encoders as Apple released them (apple/ml-aim, aim-v2; the Hub's apple/aimv2-*
repositories): PyTorch `model.safetensors` and Flax `flax_model.msgpack`, read to timm's names
and written back.

PyTorch names (timm's checkpoint filter renames them the same way):
    preprocessor.patchifier.proj (conv, bias), preprocessor.patchifier.norm (RMSNorm),
    preprocessor.pos_embed (1, N, C)                     -> patch_embed.proj / .norm, pos_embed
    trunk.blocks.i.norm_1 / norm_2 (RMSNorm), .attn.qkv (q | k | v, no bias), .attn.proj (no bias),
    .mlp.fc1 (gate: silu), .mlp.fc3 (value), .mlp.fc2    -> blocks.i.norm1 / norm2, attn.*, mlp.fc1_g,
                                                            mlp.fc1_x, mlp.fc2
    trunk.post_trunk_norm                                -> norm
Flax (ml-aim's torch_weights_to_jax: '.' -> nested dicts, blocks.i -> layers_i, weight -> kernel
(dense (in, out), conv HWIO) or scale (norms)), under 'params':
    preprocessor/patchifier/proj/kernel (p, p, 3, C), .../norm/scale, preprocessor/pos_embed,
    trunk/layers_i/{norm_1, norm_2}/scale, attn/qkv/kernel (C, 3C), attn/proj/kernel,
    mlp/{fc1, fc3, fc2}/kernel, trunk/post_trunk_norm/scale
The files do not say the heads: the width names the released size (large, huge, 1B, 3B).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..config import ViTConfig
from ..errors import CheckpointError
from ..weights import TIMM, Weights
from .base import Implied, Layout, require
from .containers import save_state_dict
from .flax_msgpack import save_msgpack

AIMV2_SIZES = {1024: "large", 1536: "huge", 2048: "1b", 3072: "3b"}
# Apple's module paths -> timm's, inside a block and at the top.
_BLOCK = {"norm_1": "norm1", "norm_2": "norm2", "attn.qkv": "attn.qkv", "attn.proj": "attn.proj",
          "mlp.fc1": "mlp.fc1_g", "mlp.fc3": "mlp.fc1_x", "mlp.fc2": "mlp.fc2"}
_TOP = {"preprocessor.patchifier.proj": "patch_embed.proj", "preprocessor.patchifier.norm": "patch_embed.norm",
        "trunk.post_trunk_norm": "norm"}


def _module_to_timm(module: str) -> str | None:
    if module in _TOP:
        return _TOP[module]
    if (m := re.match(r"^trunk\.blocks\.(\d+)\.(.+)$", module)) and m.group(2) in _BLOCK:
        return f"blocks.{m.group(1)}.{_BLOCK[m.group(2)]}"
    return None


def _module_from_timm(module: str) -> str:
    if (m := re.match(r"^blocks\.(\d+)\.(.+)$", module)):
        return f"trunk.blocks.{m.group(1)}." + {v: k for k, v in _BLOCK.items()}[m.group(2)]
    return {v: k for k, v in _TOP.items()}[module]


def _unknown(names: list[str], what: str) -> CheckpointError:
    return CheckpointError(f"{what} has names this converter does not know: {names[:8]}")


def apple_to_timm(raw: Weights) -> Weights:
    out: Weights = {}
    unknown = []
    for k, v in raw.items():
        if k == "preprocessor.pos_embed":
            out["pos_embed"] = v
            continue
        module, _, leaf = k.rpartition(".")
        timm = _module_to_timm(module)
        if timm is None or leaf not in ("weight", "bias"):
            unknown.append(k)
        else:
            out[f"{timm}.{leaf}"] = v
    if unknown:
        raise _unknown(unknown, "AIMv2 state dict")
    return out


def flax_to_timm(raw: Weights) -> Weights:
    """ml-aim's Flax tree (flattened with '/') -> timm's names: kernels transposed back."""
    out: Weights = {}
    unknown = []
    for k, v in raw.items():
        if k == "preprocessor/pos_embed":
            out["pos_embed"] = v
            continue
        path, _, leaf = k.rpartition("/")
        module = re.sub(r"^trunk\.layers_(\d+)\.", r"trunk.blocks.\1.", path.replace("/", "."))
        timm = _module_to_timm(module)
        if timm is None or leaf not in ("kernel", "scale", "bias"):
            unknown.append(k)
            continue
        if leaf == "kernel":
            v = np.ascontiguousarray(v.transpose(3, 2, 0, 1) if v.ndim == 4 else v.T)
        out[f"{timm}.{'bias' if leaf == 'bias' else 'weight'}"] = v
    if unknown:
        raise _unknown(unknown, "AIMv2 Flax tree")
    return out


def implied_aimv2(sd: Weights, keys: set[str]) -> Implied:
    """The files do not say the heads: the width names the released size."""
    width = sd["patch_embed.proj.weight"].shape[0]
    if width not in AIMV2_SIZES:
        return Implied(needs={"num_heads": f"an AIMv2 checkpoint of width {width}, which no AIMv2 preset has: its file "
                                           "does not record the heads; pass --num-heads (the rest is read off the "
                                           "shapes)"})
    return Implied(model=f"aimv2_{AIMV2_SIZES[width]}_patch14_224")  # the image size comes from the position embedding


def _apple_names(weights: Weights, cfg, fmt: str) -> Weights:
    vit = isinstance(cfg, ViTConfig)
    require(fmt, cfg, {
        "a ViT": vit,
        "AIMv2's architecture: RMSNorm (also on the patches), SiLU SwiGLU, no class token, no biases but the "
        "patch embedding's, a learned position embedding, average pooling without fc_norm, no classifier":
        vit and cfg.norm_layer == "rmsnorm" and cfg.embed_norm_layer == "rmsnorm" and cfg.mlp_layer == "swiglu"
        and cfg.act_layer == "silu" and not cfg.class_token and not cfg.reg_tokens and not cfg.distilled
        and not cfg.qkv_bias and not cfg.proj_bias and cfg.pos_embed == "learn" and not cfg.pre_norm
        and not cfg.has_fc_norm and cfg.global_pool != "map" and cfg.num_classes == 0,
    })
    out: Weights = {}
    for k, v in TIMM.export(weights, cfg).items():
        if k == "pos_embed":
            out["preprocessor.pos_embed"] = v
        else:
            module, _, leaf = k.rpartition(".")
            out[f"{_module_from_timm(module)}.{leaf}"] = v
    return out


def write_apple(weights: Weights, cfg, meta: dict, dst: Path) -> None:
    save_state_dict(dst, _apple_names(weights, cfg, "aimv2"))  # no metadata: as Apple's file


def write_flax(weights: Weights, cfg, meta: dict, dst: Path) -> None:
    flat: Weights = {}
    for k, v in _apple_names(weights, cfg, "aimv2_flax").items():
        if k == "preprocessor.pos_embed":
            flat["preprocessor/pos_embed"] = v
            continue
        module, _, leaf = k.rpartition(".")
        module = re.sub(r"^trunk\.blocks\.(\d+)\.", r"trunk.layers_\1.", module)
        if leaf == "weight" and v.ndim >= 2:
            leaf, v = "kernel", v.transpose(2, 3, 1, 0) if v.ndim == 4 else v.T
        elif leaf == "weight":
            leaf = "scale"
        flat[f"{module.replace('.', '/')}/{leaf}"] = v
    save_msgpack(dst, flat)


APPLE = Layout("aimv2", "AIMv2 state dict (Apple's names)", "preprocessor.patchifier.proj.weight, trunk.blocks.N...",
               lambda keys: "preprocessor.patchifier.proj.weight" in keys, apple_to_timm, names="timm",
               family="vit", implies=implied_aimv2, write=write_apple, suffixes=(".safetensors",), preprocess="aimv2")
FLAX = Layout("aimv2_flax", "AIMv2 Flax msgpack (ml-aim)", "preprocessor/patchifier/proj/kernel, trunk/layers_N/...",
              lambda keys: "preprocessor/patchifier/proj/kernel" in keys, flax_to_timm, names="timm",
              family="vit", implies=implied_aimv2, write=write_flax, suffixes=(".msgpack",), preprocess="aimv2")
LAYOUTS = (APPLE, FLAX)
