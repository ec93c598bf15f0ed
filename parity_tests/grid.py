"""The grids of small configs covering every option (ViT, Swin, Eva), and the full-size cases."""

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)

# name -> (preset, overrides): each row switches on one option over the tiny base.
SMALL_GRID = {
    "token": ("vit_base_patch16_224", {}),
    "posemb-no-cls": ("vit_base_patch16_224", dict(no_embed_class=True)),
    "avg+fc_norm": ("vit_base_patch16_224", dict(global_pool="avg")),
    "gap-no-cls": ("vit_base_patch16_224", dict(global_pool="avg", class_token=False, fc_norm=False)),
    "map": ("vit_base_patch16_224", dict(global_pool="map", class_token=False)),
    "map+cls": ("vit_base_patch16_224", dict(global_pool="map")),
    "sincos2d": ("vit_base_patch16_224", dict(pos_embed="sincos2d")),
    "sincos1d": ("vit_base_patch16_224", dict(pos_embed="sincos1d", no_embed_class=True)),
    "pre-logits": ("vit_base_patch16_224", dict(representation_size=24)),
    "no-qkv-bias": ("vit_base_patch16_224", dict(qkv_bias=False)),
    "features-only": ("vit_base_patch16_224", dict(num_classes=0)),
    "mnist-1ch": ("vit_base_patch16_224", dict(img_size=28, patch_size=7, in_chans=1, mlp_ratio=2.0)),
    "deit-distilled": ("deit_tiny_distilled_patch16_224", {}),
    # The later families, one option per row (their presets at the tiny size).
    "deit3-layerscale": ("deit3_small_patch16_224", dict(init_values=0.1)),
    "dinov2": ("vit_small_patch14_dinov2", dict(num_classes=10)),
    "dinov2-reg": ("vit_small_patch14_reg4_dinov2", dict(reg_tokens=2, num_classes=10)),
    "reg-posemb-on-prefix": ("vit_base_patch16_224", dict(reg_tokens=2)),
    "reg+avg": ("vit_base_patch16_224", dict(reg_tokens=2, global_pool="avg")),
    "dinov2-swiglu-packed": ("vit_giant_patch14_dinov2", dict(embed_dim=48, num_heads=3, num_classes=10)),
    "clip-pre-norm": ("vit_base_patch16_clip_224", {}),
    "clip-quickgelu": ("vit_base_patch16_clip_quickgelu_224", {}),
    "gelu-tanh": ("vit_base_patch16_224", dict(act_layer="gelu_tanh")),
    "silu": ("vit_base_patch16_224", dict(act_layer="silu")),
    "siglip-map-tanh": ("vit_base_patch32_siglip_256", dict(num_classes=10)),
    "siglip-gap": ("vit_base_patch16_siglip_gap_224", dict(num_classes=10)),
    "aimv2": ("aimv2_large_patch14_224", dict(num_classes=10)),
    "rmsnorm+map": ("vit_base_patch16_224", dict(norm_layer="rmsnorm", global_pool="map", class_token=False)),
    "no-proj-bias": ("vit_base_patch16_224", dict(proj_bias=False)),
}

# Full size once per family, one direction each (preset, initialising twin): the small grid runs
# every option in both directions, so a second full-size direction adds minutes and no new path.
# Each direction is covered at full size, and test_gradient_parity's take the other ones.
FULL_SIZE = [("vit_base_patch16_224", "jax"), ("deit_small_distilled_patch16_224", "torch"),
             ("swin_tiny_patch4_window7_224", "jax")]
# One full-size model of each later family, one direction each: (preset, overrides, initialising twin).
FAMILY_FULL_SIZE = [
    ("deit3_small_patch16_224", {}, "torch"),
    ("vit_small_patch14_reg4_dinov2", dict(img_size=224), "jax"),  # 518 px: 5x the tokens, same arithmetic
    ("vit_base_patch16_clip_quickgelu_224", {}, "torch"),
    ("vit_base_patch16_siglip_224", {}, "jax"),
]


# Swin: two stages of 4x4 windows (shifted on odd blocks) over a 16x16 grid, width 16 -> 32.
SWIN_PRESET = "swin_tiny_patch4_window7_224"
SWIN_TINY = dict(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4),
                 num_classes=10)
SWIN_GRID = {
    "swin": {},
    "swin-3-stages": dict(depths=(2, 2, 2), num_heads=(2, 2, 4)),  # the last stage is one window: no shift
    "swin-shrink": dict(depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4)),  # 2x2 last stage: its window shrinks to 2
    "swin-w7-1ch": dict(img_size=28, window_size=7, in_chans=1),  # odd window, shift 3
    "swin-no-qkv-bias": dict(qkv_bias=False),
    "swin-no-pool": dict(global_pool=""),  # timm: features and logits per position
}


def small(name: str) -> tuple[str, dict]:
    """(preset, overrides) of a small config: ViT (SMALL_GRID), Swin (SWIN_GRID) or Eva (EVA_GRID)."""
    if name in SWIN_GRID:
        return SWIN_PRESET, {**SWIN_TINY, **SWIN_GRID[name]}
    if name in EVA_GRID:
        preset, overrides = EVA_GRID[name]
        return preset, {**EVA_TINY, **overrides}
    preset, overrides = SMALL_GRID[name]
    return preset, {**TINY, **overrides}


def first_block(cfg) -> str:
    """The canonical prefix of the first encoder block's weights."""
    return "layers_0/blocks_0/" if cfg.arch == "swin" else "Transformer/encoderblock_0/"


# timm's Eva (EVA-02, DINOv3), tested in test_eva_parity.py and test_bf16.py.
EVA02, DINOV3 = "eva02_tiny_patch14_224", "vit_small_patch16_dinov3"
# A 4x4 grid of 7 px patches, width 32 over 2 heads (head_dim 16: 4 rotary frequencies per axis).
EVA_TINY = dict(img_size=28, patch_size=7, embed_dim=32, depth=2, num_heads=2, num_classes=10)
EVA_GRID = {  # name -> (preset, overrides): each row switches on options over the tiny base
    "eva02-packed-swiglu": (EVA02, dict(ref_feat_shape=6)),  # fused qkv + q/v bias, packed SwiGLU, rope 'cat'
    "eva02-split-qkv": ("eva02_base_patch14_224", {}),  # q/k/v projections, split SwiGLU + its LayerNorm
    "eva02-attn-norm": (EVA02, dict(scale_attn_inner=True, qkv_bias=False, rope_grid_offset=0.5)),
    "eva-gelu-no-rope": (EVA02, dict(swiglu_mlp=False, use_rot_pos_emb=False, init_values=0.1)),
    "dinov3": (DINOV3, {}),  # 4 registers, LayerScale, no absolute embedding, rope 'dinov3', eps 1e-5
    "dinov3-qkvb-swiglu": ("vit_small_plus_patch16_dinov3_qkvb", dict(swiglu_align_to=24)),
    "dinov3-token-pairs": (DINOV3, dict(global_pool="token", rope_rotate_half=False)),
    "eva-regs-no-embed-class": (EVA02, dict(num_reg_tokens=2, no_embed_class=True, use_fc_norm=False)),
}


def sharpen(weights, cfg, factor: float = 4.0):
    """Query and key kernels scaled by `factor`: at timm's init scale the attention logits are
    ~0.1 and the softmax nearly uniform, so the rotary embedding would barely show in the output."""
    out = dict(weights)
    for i in range(cfg.depth):
        if cfg.qkv_fused:
            kernel = out[f"blocks_{i}/attn/qkv/kernel"].copy()
            kernel[:, :2 * cfg.embed_dim] *= factor
            out[f"blocks_{i}/attn/qkv/kernel"] = kernel
        else:
            for n in ("q", "k"):
                out[f"blocks_{i}/attn/{n}_proj/kernel"] = out[f"blocks_{i}/attn/{n}_proj/kernel"] * factor
    return out
