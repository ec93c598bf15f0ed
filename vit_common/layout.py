"""The canonical weight layout: Google's ViT checkpoint names, Flax shapes, numpy arrays.

One table of links ties each module of the twins (named as in timm) to its canonical entries.
Both twins' weight mappings, the shape check and the parameter count are derived from it, so
they cannot drift apart. Swin Transformers have their own table (vit_common.swin_layout), built
from the same links; `links(cfg)` picks the table of the config's family.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

from .config import ModelConfig, SwinConfig, ViTConfig

Weights = dict[str, np.ndarray]

# Kinds of links and the canonical entries each owns (prefix + suffix).
#   array           one array stored as is (tokens, position embedding)
#   conv            kernel (kh, kw, in, out) + bias (out,)
#   dense           kernel (in, out) + bias (out,)
#   norm            scale (dim,) + bias (dim,)
#   heads_in        one fused module holding several (C, heads, head_dim) projections (q|k|v)
#   heads_out       kernel (heads, head_dim, C) + bias (C,)


@dataclasses.dataclass(frozen=True)
class Link:
    module: str  # the twins' module path, e.g. 'blocks.3.attn.qkv'
    kind: str
    canonical: tuple[str, ...]  # canonical prefixes (one per fused projection), or the array key
    shape: tuple[int, ...]  # kernel shape (array shape for 'array', (dim,) for 'norm')
    bias: bool = True

    def canonical_shapes(self) -> dict[str, tuple[int, ...]]:
        if self.kind == "array":
            return {self.canonical[0]: self.shape}
        if self.kind == "norm":
            return {f"{self.canonical[0]}/scale": self.shape, f"{self.canonical[0]}/bias": self.shape}
        shapes = {}
        for prefix in self.canonical:
            shapes[f"{prefix}/kernel"] = self.shape
            if self.bias:
                if self.kind == "heads_in":
                    shapes[f"{prefix}/bias"] = self.shape[1:]
                else:
                    shapes[f"{prefix}/bias"] = self.shape[-1:]
        return shapes


def _attention_links(module: str, prefix: str, cfg: ViTConfig, qkv_bias: bool) -> list[Link]:
    heads = (cfg.embed_dim, cfg.num_heads, cfg.head_dim)
    names = tuple(f"{prefix}/{p}" for p in ("query", "key", "value"))
    return [
        Link(f"{module}.qkv", "heads_in", names, heads, qkv_bias),
        Link(f"{module}.proj", "heads_out", (f"{prefix}/out",), (cfg.num_heads, cfg.head_dim, cfg.embed_dim)),
    ]


def _mlp_links(module: str, prefix: str, cfg: ViTConfig) -> list[Link]:
    return [
        Link(f"{module}.fc1", "dense", (f"{prefix}/Dense_0",), (cfg.embed_dim, cfg.mlp_dim)),
        Link(f"{module}.fc2", "dense", (f"{prefix}/Dense_1",), (cfg.mlp_dim, cfg.embed_dim)),
    ]


def links(cfg: ModelConfig) -> list[Link]:
    """Every parameterised module of the model described by cfg, in forward order."""
    if isinstance(cfg, SwinConfig):
        from .swin_layout import swin_links

        return swin_links(cfg)
    c, p = cfg.embed_dim, cfg.patch_size
    out = [Link("patch_embed.proj", "conv", ("embedding",), (p, p, cfg.in_chans, c))]
    if cfg.class_token:
        out.append(Link("cls_token", "array", ("cls",), (1, 1, c)))
    if cfg.distilled:
        out.append(Link("dist_token", "array", ("dist",), (1, 1, c)))
    if cfg.pos_embed == "learn":
        out.append(Link("pos_embed", "array", ("Transformer/posembed_input/pos_embedding",), (1, cfg.num_pos_embed, c)))
    for i in range(cfg.depth):
        block = f"Transformer/encoderblock_{i}"
        out.append(Link(f"blocks.{i}.norm1", "norm", (f"{block}/LayerNorm_0",), (c,)))
        out += _attention_links(f"blocks.{i}.attn", f"{block}/MultiHeadDotProductAttention_1", cfg, cfg.qkv_bias)
        out.append(Link(f"blocks.{i}.norm2", "norm", (f"{block}/LayerNorm_2",), (c,)))
        out += _mlp_links(f"blocks.{i}.mlp", f"{block}/MlpBlock_3", cfg)
    if not cfg.use_fc_norm:
        out.append(Link("norm", "norm", ("Transformer/encoder_norm",), (c,)))
    if cfg.global_pool == "map":
        head = "MAPHead_0"
        attn = f"{head}/MultiHeadDotProductAttention_0"
        heads = (c, cfg.num_heads, cfg.head_dim)
        out += [
            Link("attn_pool.latent", "array", (f"{head}/probe",), (1, 1, c)),
            Link("attn_pool.q", "heads_in", (f"{attn}/query",), heads),
            Link("attn_pool.kv", "heads_in", (f"{attn}/key", f"{attn}/value"), heads),
            Link("attn_pool.proj", "heads_out", (f"{attn}/out",), (cfg.num_heads, cfg.head_dim, c)),
            Link("attn_pool.norm", "norm", (f"{head}/LayerNorm_0",), (c,)),
        ]
        out += _mlp_links("attn_pool.mlp", f"{head}/MlpBlock_0", cfg)
    if cfg.use_fc_norm:
        out.append(Link("fc_norm", "norm", ("fc_norm",), (c,)))
    if cfg.representation_size:
        out.append(Link("pre_logits.fc", "dense", ("pre_logits",), (c, cfg.representation_size)))
    if cfg.num_classes:
        out.append(Link("head", "dense", ("head",), (cfg.num_features, cfg.num_classes)))
        if cfg.distilled:
            out.append(Link("head_dist", "dense", ("head_dist",), (c, cfg.num_classes)))
    return out


def canonical_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every canonical entry of the model; allocates nothing."""
    shapes: dict[str, tuple[int, ...]] = {}
    for link in links(cfg):
        shapes.update(link.canonical_shapes())
    return shapes


def count_params(cfg: ModelConfig) -> int:
    """Number of trainable parameters, from shapes alone."""
    return sum(math.prod(s) for s in canonical_shapes(cfg).values())


class WeightsMismatchError(ValueError):
    """Weights that do not fit the model: lists the offending names."""


MAX_LISTED = 20  # a whole model's worth of mismatches helps nobody


def _listing(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_LISTED:
        return lines
    return lines[:MAX_LISTED] + [f"  ... and {len(lines) - MAX_LISTED} more"]


def check_weights(weights: Mapping[str, np.ndarray], cfg: ModelConfig, what: str = "checkpoint") -> None:
    """Raise one error naming every missing, unexpected or misshapen canonical entry."""
    expected = canonical_shapes(cfg)
    missing = [k for k in expected if k not in weights]
    unexpected = sorted(k for k in weights if k not in expected)
    wrong = [
        f"  {k}: expected {expected[k]}, found {tuple(np.shape(weights[k]))}"
        for k in expected
        if k in weights and tuple(np.shape(weights[k])) != expected[k]
    ]
    if not (missing or unexpected or wrong):
        return
    lines = [f"{what} does not fit the model ({cfg.describe()}):"]
    if wrong:
        lines += ["shape mismatches:"] + _listing(wrong)
    if missing:
        lines += ["missing:"] + _listing([f"  {k}: expected {expected[k]}" for k in missing])
    if unexpected:
        lines += ["unexpected:"] + _listing([f"  {k}: found {tuple(np.shape(weights[k]))}" for k in unexpected])
    raise WeightsMismatchError("\n".join(lines))


class FrameworkLayout:
    """How one framework stores a link's canonical arrays under its own parameter names.

    Subclasses say how each kind of link is encoded; `export` and `import_` walk the link table.
    Every operation is a transpose, reshape, split or concatenation, so round trips are exact.
    """

    weight_name = "weight"
    norm_scale_name = "weight"

    def encode(self, link: Link, arrays: list[np.ndarray], part: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, link: Link, value: np.ndarray, part: str) -> list[np.ndarray]:
        raise NotImplementedError

    def _parts(self, link: Link) -> list[tuple[str, str]]:
        """(framework suffix, canonical suffix) pairs of a link."""
        if link.kind == "array":
            return [("", "")]
        if link.kind == "norm":
            return [(self.norm_scale_name, "scale"), ("bias", "bias")]
        parts = [(self.weight_name, "kernel")]
        if link.bias:
            parts.append(("bias", "bias"))
        return parts

    def export(self, canonical: Mapping[str, np.ndarray], cfg: ModelConfig) -> Weights:
        """Canonical -> this framework's flat names (module path + '.' + parameter)."""
        out: Weights = {}
        for link in links(cfg):
            for fw_part, canon_part in self._parts(link):
                arrays = [np.asarray(canonical[_join(p, canon_part)]) for p in link.canonical]
                out[_join(link.module, fw_part, ".")] = self.encode(link, arrays, canon_part)
        return out

    def import_(self, params: Mapping[str, np.ndarray], cfg: ModelConfig) -> Weights:
        """This framework's flat names -> canonical."""
        expected = {_join(link.module, fw, "."): (link, canon) for link in links(cfg) for fw, canon in self._parts(link)}
        missing = sorted(set(expected) - set(params))
        unexpected = sorted(set(params) - set(expected))
        if missing or unexpected:
            lines = ["parameter names do not fit the model:"]
            if missing:
                lines += ["missing:"] + _listing([f"  {k}" for k in missing])
            if unexpected:
                lines += ["unexpected:"] + _listing([f"  {k}" for k in unexpected])
            raise WeightsMismatchError("\n".join(lines))
        out: Weights = {}
        bad = []
        for name, (link, canon_part) in expected.items():
            value = np.asarray(params[name])
            shapes = link.canonical_shapes()
            try:
                decoded = self.decode(link, value, canon_part)
            except ValueError:
                decoded = []
            wanted = [shapes[_join(p, canon_part)] for p in link.canonical]
            if [a.shape for a in decoded] != wanted:
                bad.append(f"  {name}: found {value.shape}, which does not hold {len(wanted)} x {wanted[0]}")
                continue
            for prefix, array in zip(link.canonical, decoded):
                out[_join(prefix, canon_part)] = array
        if bad:
            raise WeightsMismatchError("parameter shapes do not fit the model:\n" + "\n".join(_listing(bad)))
        return out


def _join(prefix: str, suffix: str, sep: str = "/") -> str:
    return f"{prefix}{sep}{suffix}" if suffix else prefix


def split_fused(value: np.ndarray, n: int, axis: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(a) for a in np.split(value, n, axis=axis)]
