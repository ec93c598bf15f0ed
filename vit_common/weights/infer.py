"""Infer the architecture (a ViTConfig or SwinConfig) from weight shapes."""
from __future__ import annotations

import math
import re
from typing import Any

from ..config import SwinConfig, ViTConfig
from ..errors import ArchitectureUnknown, CheckpointError
from .canonical import Weights

# Official widths -> heads; timm and HF fuse or flatten the heads, so their shapes cannot say.
# 1152: SigLIP so400m (head width 72); 1536: DINOv2 giant. AIMv2 (RMSNorm) uses heads 128 wide.
_HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1152: 16, 1280: 16, 1408: 16, 1536: 24, 1664: 16}
_AIMV2_HEAD_DIM = 128


def _depth(keys, pattern: str) -> int:
    return len({int(m.group(1)) for k in keys if (m := re.match(pattern, k))})


def summarize_canonical(w: Weights) -> dict[str, Any]:
    q = w.get("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel")
    if q is None:
        raise CheckpointError("canonical weights without Transformer/encoderblock_0/.../query/kernel: no encoder found")
    kernel = w["embedding/kernel"]
    pos = w.get("Transformer/posembed_input/pos_embedding")
    block = "Transformer/encoderblock_0"
    hidden = w[f"{block}/MlpBlock_3/Dense_0/kernel"].shape[1]
    gated = f"{block}/MlpBlock_3/gate/kernel" in w
    layer_scale = f"{block}/LayerScale_1/scale" in w
    return dict(
        embed_dim=kernel.shape[3], patch_size=kernel.shape[0], in_chans=kernel.shape[2],
        depth=_depth(w, r"^Transformer/encoderblock_(\d+)/"), num_heads=q.shape[1],
        # Both SwiGLU layouts share the canonical names (gate, Dense_0) and compute the same function;
        # timm packs DINOv2's (which has LayerScale) and splits AIMv2's: that decides the names on export.
        mlp_layer=("swiglu_packed" if layer_scale else "swiglu") if gated else "mlp",
        mlp_dim=2 * hidden if gated and layer_scale else hidden,
        qkv_bias=f"{block}/MultiHeadDotProductAttention_1/query/bias" in w,
        proj_bias=f"{block}/MultiHeadDotProductAttention_1/out/bias" in w,
        layer_scale=layer_scale, reg_tokens=w["reg"].shape[1] if "reg" in w else 0,
        pre_norm="Transformer/pre_norm/scale" in w,
        rmsnorm=f"{block}/LayerNorm_0/bias" not in w,
        embed_norm=(("layernorm" if "embedding_norm/bias" in w else "rmsnorm") if "embedding_norm/scale" in w
                    else None),
        class_token="cls" in w, distilled="dist" in w, map_head="MAPHead_0/probe" in w,
        fc_norm="fc_norm/scale" in w, pos_len=None if pos is None else pos.shape[1],
        num_classes=w["head/kernel"].shape[1] if "head/kernel" in w else 0,
        representation_size=w["pre_logits/kernel"].shape[1] if "pre_logits/kernel" in w else None,
    )


def summarize_timm(sd: Weights) -> dict[str, Any]:
    if "blocks.0.attn.qkv.weight" not in sd:
        raise CheckpointError("timm state dict without blocks.0.attn.qkv.weight: no encoder found")
    proj = sd["patch_embed.proj.weight"]
    pos = sd.get("pos_embed")
    fc1, fc2 = sd.get("blocks.0.mlp.fc1.weight"), sd["blocks.0.mlp.fc2.weight"]
    if "blocks.0.mlp.fc1_g.weight" in sd:  # timm SwiGLU: fc1_g, fc1_x
        mlp_layer, mlp_dim = "swiglu", sd["blocks.0.mlp.fc1_x.weight"].shape[0]
    elif fc1 is not None and fc1.shape[0] == 2 * fc2.shape[1]:  # SwiGLUPacked: fc2 reads half of fc1's output
        mlp_layer, mlp_dim = "swiglu_packed", fc1.shape[0]
    elif fc1 is not None:
        mlp_layer, mlp_dim = "mlp", fc1.shape[0]
    else:
        raise CheckpointError("timm state dict without blocks.0.mlp.fc1 (or SwiGLU's fc1_g / fc1_x): no MLP found")
    return dict(
        embed_dim=proj.shape[0], patch_size=proj.shape[2], in_chans=proj.shape[1],
        depth=_depth(sd, r"^blocks\.(\d+)\."), num_heads=None, mlp_layer=mlp_layer, mlp_dim=mlp_dim,
        qkv_bias="blocks.0.attn.qkv.bias" in sd, proj_bias="blocks.0.attn.proj.bias" in sd,
        layer_scale="blocks.0.ls1.gamma" in sd, reg_tokens=sd["reg_token"].shape[1] if "reg_token" in sd else 0,
        pre_norm="norm_pre.weight" in sd, rmsnorm="blocks.0.norm1.bias" not in sd,
        embed_norm=(("layernorm" if "patch_embed.norm.bias" in sd else "rmsnorm") if "patch_embed.norm.weight" in sd
                    else None),
        class_token="cls_token" in sd, distilled="dist_token" in sd, map_head="attn_pool.latent" in sd,
        fc_norm="fc_norm.weight" in sd, pos_len=None if pos is None else pos.shape[1],
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
        representation_size=sd["pre_logits.fc.weight"].shape[0] if "pre_logits.fc.weight" in sd else None,
    )


def _square_side(n: int) -> int | None:
    side = math.isqrt(n) if n > 0 else 0
    return side if side * side == n and side > 0 else None


def config_from_summary(s: dict[str, Any], **overrides: Any) -> ViTConfig:
    """The config the weights describe; `overrides` (num_heads, img_size...) win."""
    c = s["embed_dim"]
    aimv2 = s["rmsnorm"] and s["mlp_layer"] == "swiglu" and not c % _AIMV2_HEAD_DIM
    heads = overrides.pop("num_heads", None) or s["num_heads"] or (c // _AIMV2_HEAD_DIM if aimv2 else
                                                                    _HEADS_BY_WIDTH.get(c))
    if heads is None:
        if c % 64:
            raise ArchitectureUnknown(f"cannot infer the number of heads for width {c}; give it (--num-heads or --model)")
        heads = c // 64  # the usual head width
    prefix = int(s["class_token"]) + int(s["distilled"]) + s["reg_tokens"]
    fields: dict[str, Any] = dict(
        embed_dim=c, patch_size=s["patch_size"], in_chans=s["in_chans"], depth=s["depth"], num_heads=heads,
        mlp_ratio=s["mlp_dim"] / c, qkv_bias=s["qkv_bias"], class_token=s["class_token"],
        distilled=s["distilled"], num_classes=s["num_classes"], representation_size=s["representation_size"],
        global_pool="map" if s["map_head"] else "avg" if (s["fc_norm"] or not s["class_token"]) else "token",
        **later_options(s),
    )
    # None where the weights follow timm's rule (norm after pooling iff average pooling).
    fields["fc_norm"] = None if s["fc_norm"] == (fields["global_pool"] == "avg") else s["fc_norm"]
    # Without class/distillation tokens the two position-embedding conventions coincide;
    # report timm's default then.
    if s["pos_len"] is None:  # no learned table: big_vision's fixed 2-D sin-cos
        fields.update(pos_embed="sincos2d", no_embed_class=prefix > 0, img_size=224)
    elif prefix and (side := _square_side(s["pos_len"] - prefix)):
        fields.update(no_embed_class=False, img_size=side * s["patch_size"])
    elif side := _square_side(s["pos_len"]):
        fields.update(no_embed_class=prefix > 0, img_size=side * s["patch_size"])
    else:
        raise ArchitectureUnknown(f"position embedding of {s['pos_len']} entries fits no square grid "
                              f"(with {prefix} class/distillation tokens)")
    fields.update(overrides)
    return ViTConfig(**fields)


def later_options(s: dict[str, Any]) -> dict[str, Any]:
    """The later families' options, from the entries present. What no weight says gets the value
    every released model with these entries has: SwiGLU runs SiLU (DINOv2 giant, AIMv2); the
    norms of CLIP (pre_norm) and AIMv2 (RMSNorm) use eps 1e-5, all others 1e-6; init_values only
    initialises LayerScale (the weights hold the trained scales): DeiT III's 1e-6 with a
    classifier, DINOv2's 1e-5 without."""
    gated = s["mlp_layer"] != "mlp"
    return dict(
        mlp_layer=s["mlp_layer"], act_layer="silu" if gated else "gelu", proj_bias=s["proj_bias"],
        reg_tokens=s["reg_tokens"], pre_norm=s["pre_norm"], norm_layer="rmsnorm" if s["rmsnorm"] else "layernorm",
        norm_eps=1e-5 if s["pre_norm"] or s["rmsnorm"] else 1e-6, embed_norm_layer=s["embed_norm"],
        init_values=(1e-6 if s["num_classes"] else 1e-5) if s["layer_scale"] else None,
    )


# Swin ----------------------------------------------------------------------------------------------
def _window_of_table(rows: int) -> int:
    side = math.isqrt(rows)
    if side * side != rows or side % 2 == 0:
        raise CheckpointError(f"a relative position bias table of {rows} rows is not (2w-1)^2 for any window w")
    return (side + 1) // 2


def summarize_swin_timm(sd: Weights) -> dict[str, Any]:
    """Shapes of a Swin state dict in timm's names (Microsoft's already brought to them)."""
    proj = sd["patch_embed.proj.weight"]  # (C, in, p, p)
    return _swin_summary(
        sd, r"^layers\.(\d+)\.blocks\.(\d+)\.", "layers.{i}.blocks.0.attn.relative_position_bias_table",
        embed_dim=proj.shape[0], in_chans=proj.shape[1], patch_size=proj.shape[2],
        mlp_dim=sd["layers.0.blocks.0.mlp.fc1.weight"].shape[0], qkv_bias="layers.0.blocks.0.attn.qkv.bias" in sd,
        num_classes=sd["head.fc.weight"].shape[0] if "head.fc.weight" in sd else 0,
    )


def summarize_swin_canonical(w: Weights) -> dict[str, Any]:
    """Shapes of canonical Swin weights (vit_common.weights.module_tables)."""
    proj = w["patch_embed/proj/kernel"]  # (p, p, in, C)
    return _swin_summary(
        w, r"^layers_(\d+)/blocks_(\d+)/", "layers_{i}/blocks_0/attn/relative_position_bias_table",
        embed_dim=proj.shape[3], in_chans=proj.shape[2], patch_size=proj.shape[0],
        mlp_dim=w["layers_0/blocks_0/mlp/fc1/kernel"].shape[1], qkv_bias="layers_0/blocks_0/attn/qkv/bias" in w,
        num_classes=w["head/fc/kernel"].shape[1] if "head/fc/kernel" in w else 0,
    )


def _swin_summary(w: Weights, block_pattern: str, table_name: str, **fields: Any) -> dict[str, Any]:
    blocks: dict[int, set[int]] = {}
    for k in w:
        if m := re.match(block_pattern, k):
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise CheckpointError(f"Swin weights without consecutive stages of blocks: found stages {sorted(blocks)}")
    tables = [w[table_name.format(i=i)].shape for i in range(len(blocks))]
    return dict(fields, depths=tuple(len(blocks[i]) for i in sorted(blocks)), num_heads=tuple(t[1] for t in tables),
                windows=tuple(_window_of_table(t[0]) for t in tables))


def swin_config_from_summary(s: dict[str, Any], **overrides: Any) -> SwinConfig:
    """The Swin config the weights describe; `overrides` win.

    No Swin weight depends on the image size, except through the windows: a stage whose window is
    smaller than stage 0's has its resolution equal to its window. Otherwise the image size is
    the smallest where the last stage is one window, patch * window * 2**(stages-1): 224 for
    window 7 and 384 for window 12 at patch 4, as in every released checkpoint.
    """
    windows, n = s["windows"], len(s["depths"])
    window = windows[0]
    grid = window * 2 ** (n - 1)
    for i, w in enumerate(windows):
        if w < window:
            grid = w * 2**i
            break
    fields: dict[str, Any] = dict(
        embed_dim=s["embed_dim"], patch_size=s["patch_size"], in_chans=s["in_chans"], depths=s["depths"],
        num_heads=s["num_heads"], window_size=window, mlp_ratio=s["mlp_dim"] / s["embed_dim"],
        qkv_bias=s["qkv_bias"], num_classes=s["num_classes"], img_size=grid * s["patch_size"],
    )
    fields.update(overrides)
    return SwinConfig(**fields)


# A family's summary of the weights' shapes and the function that infers its config from one.
def summarize(weights: Weights, family: str, timm_names: bool) -> tuple[dict[str, Any], Any]:
    """(the shapes of `weights` of a family, in timm's or canonical names; the config inference for them)."""
    from .infer_eva import eva_config_from_summary, summarize_eva

    if family == "eva":
        return summarize_eva(weights, timm=timm_names), eva_config_from_summary
    if family == "swin":
        return (summarize_swin_timm if timm_names else summarize_swin_canonical)(weights), swin_config_from_summary
    return (summarize_timm if timm_names else summarize_canonical)(weights), config_from_summary
