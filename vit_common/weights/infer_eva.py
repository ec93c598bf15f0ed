"""Recognise timm's Eva (EVA-02, DINOv3) weights and infer an EvaConfig from their shapes.

Works on timm's names (state dicts) and on the canonical names (vit_common.weights.module_tables.eva_links).
What the shapes cannot say follows the released families: weights with an absolute position
embedding are EVA-02 (rope 'cat' with ref_feat_shape 16 when the MLP is a SwiGLU, as every EVA-02;
none with a GELU MLP, as EVA-01; LayerNorm eps 1e-6), weights without one are DINOv3 (rope
'dinov3', temperature 100, rotate-half pairs, eps 1e-5, a 16x16 grid as timm's
256 px at patch 16); heads are 64 wide; pooling is
timm's default, 'avg'. A preset (--model) or a config stored in the file overrides all of it.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable

from ..config import EvaConfig
from ..errors import ArchitectureUnknown, CheckpointError
from .canonical import Weights
from .module_tables import _canonical

# Names only timm's Eva has (its ViT calls LayerScale ls1.gamma and fuses the q|k|v bias).
_EVA_TIMM = re.compile(r"^blocks\.\d+\.(gamma_1|attn\.q_bias|attn\.q_proj\.weight|mlp\.fc1_g\.weight)$")


def is_eva(keys: Iterable[str]) -> bool:
    """Whether weight names are timm's Eva (timm names) or canonical Eva names (blocks_N/...).

    timm's AIMv2 (a VisionTransformer) shares Eva's split SwiGLU names (mlp.fc1_g), but has a
    patch-embedding norm, which no Eva has."""
    keys = set(keys)
    aimv2 = "patch_embed.norm.weight" in keys
    return any(k.startswith("blocks_0/") or (m := _EVA_TIMM.match(k)) and not (aimv2 and m.group(1) == "mlp.fc1_g.weight")
               for k in keys)


def _shape(w: Weights, timm: bool, module: str, leaf: str | None = None) -> tuple[int, ...] | None:
    """The shape of a module's parameter in canonical orientation (kernels (in, out) / HWIO), or None."""
    if not timm:
        value = w.get(_canonical(module) + (f"/{leaf}" if leaf else ""))
        return None if value is None else tuple(value.shape)
    value = w.get(module + (f".{'weight' if leaf in ('kernel', 'scale') else leaf}" if leaf else ""))
    if value is None:
        return None
    shape = tuple(value.shape)
    if leaf == "kernel":
        shape = shape[::-1] if len(shape) == 2 else (shape[2], shape[3], shape[1], shape[0])
    return shape


def summarize_eva(w: Weights, timm: bool) -> dict[str, Any]:
    """The architecture the shapes of Eva weights (timm or canonical names) say."""
    proj = _shape(w, timm, "patch_embed.proj", "kernel")
    if proj is None or _shape(w, timm, "blocks.0.norm1", "scale") is None:
        raise CheckpointError("Eva weights without patch_embed.proj and blocks.0: no encoder found")
    pattern = r"^blocks\.(\d+)\." if timm else r"^blocks_(\d+)/"
    depth = len({int(m.group(1)) for k in w if (m := re.match(pattern, k))})
    has = lambda module, leaf="kernel": _shape(w, timm, module, leaf) is not None  # noqa: E731
    fc2 = _shape(w, timm, "blocks.0.mlp.fc2", "kernel")
    if has("blocks.0.mlp.fc1_g"):
        mlp, hidden = "swiglu", fc2[0]
    else:
        fc1 = _shape(w, timm, "blocks.0.mlp.fc1", "kernel")
        mlp, hidden = ("swiglu_packed" if fc1[1] == 2 * fc2[0] else "gelu"), fc2[0]
    pos = _shape(w, timm, "pos_embed")
    reg = _shape(w, timm, "reg_token")
    head = _shape(w, timm, "head", "kernel")
    return dict(
        embed_dim=proj[3], patch_size=proj[0], in_chans=proj[2], depth=depth, mlp=mlp, mlp_dim=hidden,
        qkv_fused=has("blocks.0.attn.qkv"),
        qkv_bias=has("blocks.0.attn.q_bias", None) or has("blocks.0.attn.q_proj", "bias"),
        scale_attn_inner=has("blocks.0.attn.norm", "scale"), scale_mlp=has("blocks.0.mlp.norm", "scale"),
        layer_scale=has("blocks.0.gamma_1", None), class_token=has("cls_token", None),
        num_reg_tokens=reg[1] if reg else 0, pos_len=pos[1] if pos else None,
        fc_norm=has("fc_norm", "scale"), norm=has("norm", "scale"), num_classes=head[1] if head else 0,
    )


def _ratio(hidden: int, dim: int) -> float:
    """An mlp_ratio with int(dim * ratio) == hidden exactly."""
    ratio = hidden / dim
    while int(dim * ratio) < hidden:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def eva_config_from_summary(s: dict[str, Any], **overrides: Any) -> EvaConfig:
    """The EvaConfig the weights describe (see the module docstring); `overrides` win."""
    c = s["embed_dim"]
    heads = overrides.pop("num_heads", None) or (32 if c == 4096 else c // 64 if c % 64 == 0 else None)
    if heads is None:
        raise ArchitectureUnknown(f"cannot infer the number of heads for width {c}; give it (--num-heads or --model)")
    if s["fc_norm"] == s["norm"]:
        raise CheckpointError("Eva weights with both or neither of norm and fc_norm are not supported")
    prefix = int(s["class_token"]) + s["num_reg_tokens"]
    fields: dict[str, Any] = dict(
        embed_dim=c, patch_size=s["patch_size"], in_chans=s["in_chans"], depth=s["depth"], num_heads=heads,
        mlp_ratio=_ratio(s["mlp_dim"], c), swiglu_mlp=s["mlp"] != "gelu", scale_mlp=s["scale_mlp"],
        # split SwiGLU weights without the MLP norm: timm builds those for swiglu_align_to (1 aligns nothing)
        swiglu_align_to=1 if s["mlp"] == "swiglu" and not s["scale_mlp"] else 0,
        qkv_fused=s["qkv_fused"], qkv_bias=s["qkv_bias"], scale_attn_inner=s["scale_attn_inner"],
        init_values=1e-5 if s["layer_scale"] else None, class_token=s["class_token"],
        num_reg_tokens=s["num_reg_tokens"], num_classes=s["num_classes"], global_pool="avg",
        use_fc_norm=None if s["fc_norm"] else False,  # None: timm's rule, fc_norm with 'avg' pooling
    )
    if s["pos_len"] is None:  # DINOv3
        fields.update(use_abs_pos_emb=False, use_rot_pos_emb=True, rope_type="dinov3", rope_temperature=100.0,
                      rope_rotate_half=True, norm_eps=1e-5, img_size=16 * s["patch_size"])
    else:  # EVA-02 (SwiGLU) or EVA-01 (GELU)
        side = math.isqrt(s["pos_len"] - prefix) if s["pos_len"] > prefix else 0
        no_embed_class = False
        if side * side != s["pos_len"] - prefix:
            side, no_embed_class = math.isqrt(s["pos_len"]), True
            if side * side != s["pos_len"]:
                raise ArchitectureUnknown(f"position embedding of {s['pos_len']} entries fits no square grid "
                                      f"(with {prefix} class/register tokens)")
        swiglu = s["mlp"] != "gelu"
        fields.update(img_size=side * s["patch_size"], no_embed_class=no_embed_class and prefix > 0,
                      use_rot_pos_emb=swiglu, ref_feat_shape=16 if swiglu else None)
    fields.update(overrides)
    return EvaConfig(**fields)

