"""Google's released ViT checkpoints (.npz): vision_transformer before and after Linen, and big_vision.

Read to canonical names (vision_transformer's pre-Linen names are the canonical layout) and
written back (canonical_to_linen, canonical_to_big_vision).

big_vision's image-text models (SigLIP, SigLIP 2, LiT: models/proj/image_text/two_towers.py)
hold the image tower under params/img/ (a big_vision ViT: MAP head `MAPHead_0`, blocks maybe
scanned, arrays maybe bfloat16, a `head` projection where the tower has one), the text tower
under params/txt/ and the temperature and bias as params/t, params/b. Only the image tower is
read, and written back (--to big_vision_img) alone. FlexiViT's releases are big_vision
classifiers whose patch embedding is stored at the base patch size (32): read as such, and
--patch-size / --img-size PI-resize it and resample the position grid as FlexiViT does.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..weights import Weights
from .base import Implied, Layout, refuse
from .containers import save_npz

# Per-block module names: vision_transformer's Linen models and big_vision number modules per
# type; its pre-Linen models (our canonical names) numbered them across the block.
_LINEN_TO_CANONICAL = {
    "LayerNorm_0": "LayerNorm_0",
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}
_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/([^/]+)/(.*)$")


def _is_linen(keys: set[str]) -> bool:
    return "embedding/kernel" in keys and any(
        "/MultiHeadDotProductAttention_0/" in k for k in keys if k.startswith("Transformer/"))


def linen_to_canonical(raw: Weights) -> Weights:
    """vision_transformer's Linen names (modules numbered per type in a block) -> canonical names."""
    out = {}
    for name, value in raw.items():
        if match := _BLOCK.match(name):
            index, module, rest = match.groups()
            if module not in _LINEN_TO_CANONICAL:
                raise CheckpointError(f"unexpected module {module!r} in {name}")
            name = f"Transformer/encoderblock_{index}/{_LINEN_TO_CANONICAL[module]}/{rest}"
        out[name] = value
    return out


def big_vision_to_canonical(raw: Weights) -> Weights:
    """big_vision: params/ prefix, Linen names, top-level pos_embedding, maybe scanned blocks."""
    weights = {k.removeprefix("params/"): v for k, v in raw.items()}
    weights = _unscan_blocks(weights)
    if "pos_embedding" in weights:  # big_vision keeps it at the top level
        weights["Transformer/posembed_input/pos_embedding"] = weights.pop("pos_embedding")
    return linen_to_canonical(weights)


def _unscan_blocks(weights: Weights) -> Weights:
    """big_vision's scanned encoder stores one 'encoderblock' with a leading depth axis."""
    prefix = "Transformer/encoderblock/"
    scanned = {k: v for k, v in weights.items() if k.startswith(prefix)}
    if not scanned:
        return weights
    depths = {v.shape[0] for v in scanned.values()}
    if len(depths) != 1:
        raise CheckpointError(f"scanned encoder blocks disagree on depth: {sorted(depths)}")
    out = {k: v for k, v in weights.items() if not k.startswith(prefix)}
    for name, value in scanned.items():
        for i in range(value.shape[0]):
            out[f"Transformer/encoderblock_{i}/{name[len(prefix):]}"] = np.ascontiguousarray(value[i])
    return out


IMG, TXT = "params/img/", "params/txt/"


def big_vision_image_tower(raw: Weights) -> Weights:
    """The image tower of a big_vision image-text model, to canonical names (the rest is left)."""
    image = {f"params/{k[len(IMG):]}": v for k, v in raw.items() if k.startswith(IMG)}
    kernel = image.get("params/embedding/kernel")
    if kernel is not None and np.ndim(kernel) != 4:  # naflex_vit: a Dense over flattened patches
        raise CheckpointError(f"{IMG}embedding/kernel has shape {np.shape(kernel)}, not a (p, p, in, C) convolution: "
                              "a NaFlex (variable aspect ratio) SigLIP 2 tower, which these twins do not have")
    return big_vision_to_canonical(image)


def _image_tower_notes(keys: set[str]) -> list[str]:
    left = sorted(k for k in keys if not k.startswith(IMG))
    notes = ["image tower of a big_vision image-text model (SigLIP / LiT); without a config or --model it runs "
             "act_layer='gelu_tanh', as big_vision computes it (Flax nn.gelu: the tanh approximation)"]
    if left:
        text = sum(k.startswith(TXT) for k in left)
        notes.append(f"not read: {len(left)} arrays outside {IMG} ({text} of the text tower under {TXT}, "
                     f"{', '.join(k for k in left if not k.startswith(TXT))[:120] or 'no others'}): only the image "
                     "tower is these twins'; a file written from this one holds the image tower alone")
    return notes


GOOGLE_GELU_NOTE = ("act_layer='gelu_tanh': a Google .npz without a config or a model name runs as Google's "
                    "vision_transformer and big_vision run it, with Flax's nn.gelu, the tanh approximation by "
                    "default (timm runs these weights with exact GELU: --act-layer gelu, or --model NAME)")


def google_implies(weights: Weights, keys: set[str]) -> Implied:
    """A Google file with neither a config nor a timm name runs as Google's code runs it: Flax's
    nn.gelu, the tanh approximation (a gated MLP keeps its SiLU)."""
    if "Transformer/encoderblock_0/MlpBlock_3/gate/kernel" in weights:
        return Implied()
    return Implied(fields={"act_layer": "gelu_tanh"}, fields_notes=(GOOGLE_GELU_NOTE,))


def _image_tower_implies(weights: Weights, keys: set[str]) -> Implied:
    return Implied(fields={"act_layer": "gelu_tanh"}, notes=tuple(_image_tower_notes(keys)))


def _npz_writer(convert):
    def write(weights: Weights, cfg, meta: dict, dst: Path) -> None:
        save_npz(dst, convert(weights, cfg), cfg, meta)
    return write


def _google_only(layout: str, cfg) -> None:
    if cfg.arch != "vit":
        family = "Swin" if cfg.arch == "swin" else "Eva (EVA-02, DINOv3)"
        raise CheckpointError(f"Google never released {family} models, so there is no {layout} layout for them; "
                              "write --layout canonical")


def _to_linen(weights: Weights, cfg) -> Weights:
    _google_only("linen", cfg)
    return canonical_to_linen(weights)


def _to_big_vision(weights: Weights, cfg) -> Weights:
    _google_only("big_vision", cfg)
    check_big_vision(cfg)
    return canonical_to_big_vision(weights)


def _to_big_vision_img(weights: Weights, cfg) -> Weights:
    """The image tower alone, under params/img/, blocks not scanned (as SigLIP's releases are)."""
    check_big_vision(cfg)
    return canonical_to_big_vision(weights, scanned=False, prefix=IMG)


NPZ = (".npz",)
BIG_VISION_IMG = Layout("big_vision_img", "Google big_vision image-text model, image tower (SigLIP, LiT)",
                        "params/img/...", lambda keys: any(k.startswith(IMG) for k in keys), big_vision_image_tower,
                        family="vit", implies=_image_tower_implies, write=_npz_writer(_to_big_vision_img),
                        suffixes=NPZ, preprocess="google")
BIG_VISION = Layout("big_vision", "Google big_vision", "params/...",
                    lambda keys: any(k.startswith("params/") for k in keys), big_vision_to_canonical,
                    family="vit", implies=google_implies, write=_npz_writer(_to_big_vision), suffixes=NPZ, preprocess="google")
LINEN = Layout("linen", "Google vision_transformer, Linen names", "Transformer/encoderblock_N/MlpBlock_0/...",
               _is_linen, linen_to_canonical, family="vit", implies=google_implies, write=_npz_writer(_to_linen),
               suffixes=NPZ, preprocess="google")
# This project's canonical .npz: Google's pre-Linen names for a ViT (and the canonical names of any
# family when written: Swin's and Eva's read back through their own layouts).
CANONICAL = Layout("canonical", "Google vision_transformer, pre-Linen names (canonical)",
                   "embedding/kernel, Transformer/...", lambda keys: "embedding/kernel" in keys, family="vit",
                   implies=google_implies, write=_npz_writer(lambda weights, cfg: weights), suffixes=NPZ, preprocess="google")
LAYOUTS = (BIG_VISION_IMG, BIG_VISION, LINEN, CANONICAL)  # in the order they must be tried


# Writers: canonical -> the other Google layouts (the inverse of the readers above).
_CANONICAL_TO_LINEN = {v: k for k, v in _LINEN_TO_CANONICAL.items()}


def canonical_to_linen(weights: Weights) -> Weights:
    """vision_transformer's Linen names: modules numbered per type inside a block."""
    out = {}
    for name, value in weights.items():
        if match := _BLOCK.match(name):
            index, module, rest = match.groups()
            name = f"Transformer/encoderblock_{index}/{_CANONICAL_TO_LINEN[module]}/{rest}"
        out[name] = value
    return out


def check_big_vision(cfg) -> None:
    """Refuse what big_vision's ViT (models/vit.py) cannot hold or compute, naming each."""
    if cfg.arch != "vit":
        family = "Eva (EVA-02, DINOv3)" if cfg.arch == "eva" else "Swin"
        raise CheckpointError(f"big_vision has no {family} models; write --layout canonical")
    refuse("big_vision's ViT", (
        ("a position-table entry for the class token (no_embed_class=False: big_vision adds the position "
         "embedding before the class token)",
         cfg.num_prefix_tokens and not cfg.no_embed_class and cfg.pos_embed == "learn"),
        ("a norm before the blocks (pre_norm, CLIP)", cfg.pre_norm), ("LayerScale (init_values)", cfg.init_values),
        ("register tokens", cfg.reg_tokens), ("a distillation token", cfg.distilled),
        (f"norm_layer={cfg.norm_layer!r}", cfg.norm_layer != "layernorm"),
        (f"mlp_layer={cfg.mlp_layer!r}", cfg.mlp_layer != "mlp"), ("proj_bias=False", not cfg.proj_bias),
        ("qkv_bias=False", not cfg.qkv_bias), ("a patch-embedding norm", cfg.embed_norm_layer),
        ("a norm after pooling (fc_norm)", cfg.has_fc_norm),
        (f"norm_eps={cfg.norm_eps} (Flax: 1e-6)", cfg.norm_eps != 1e-6),
        (f"act_layer={cfg.act_layer!r} (big_vision: GELU)", cfg.act_layer not in ("gelu", "gelu_tanh")),
        (f"pos_embed={cfg.pos_embed!r}", cfg.pos_embed == "sincos1d"),
    ), fix="; write --layout canonical or linen, or --to timm")


def canonical_to_big_vision(weights: Weights, scanned: bool = True, prefix: str = "params/") -> Weights:
    """big_vision: params/ prefix (params/img/ for an image tower), Linen names, top-level
    pos_embedding, optionally scanned blocks.

    big_vision adds the position embedding before the class token is attached, so a table with
    entries for the class token cannot be written in this layout."""
    linen = canonical_to_linen(weights)
    table = linen.pop("Transformer/posembed_input/pos_embedding", None)
    if table is not None:
        linen["pos_embedding"] = table
    if scanned:
        blocks: dict[str, dict[int, np.ndarray]] = {}
        for name in [k for k in linen if k.startswith("Transformer/encoderblock_")]:
            index, rest = re.match(r"^Transformer/encoderblock_(\d+)/(.*)$", name).groups()
            blocks.setdefault(rest, {})[int(index)] = linen.pop(name)
        for rest, per_block in blocks.items():
            linen[f"Transformer/encoderblock/{rest}"] = np.stack([per_block[i] for i in sorted(per_block)])
    return {f"{prefix}{k}": v for k, v in linen.items()}
