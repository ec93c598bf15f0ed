"""Every EVA-02 and DINOv3 preset has timm's parameter count, from a source independent of the
link table:
- DINOv3: Hugging Face transformers' DINOv3ViTModel of the same size, built on the meta device
  and counted. HF's model also holds mask_token (1, 1, C), used in masked pretraining only, which
  timm's Eva (and so each preset) lacks; nothing else differs (HF's separate q/k/v projections
  without a k bias hold what timm's fused qkv and q_bias / v_bias hold).
- EVA-02 (transformers has none): the tensors of the released checkpoints, listed by shape below
  as EVA's eva02 code and timm's Eva name them; the totals are listed too and agree with timm's
  model cards (5.5M, 5.8M, 21.6M, 22.1M, 85.8M, 87.1M, 303.3M, 305.1M).
"""
import pytest
import torch
import transformers

from vit_common import get_config, list_models
from vit_common.weights.canonical import count_params

# (width, depth, MLP hidden width, fused q|k|v with packed SwiGLU (tiny, small) or split (base, large))
_EVA02 = {"tiny": (192, 12, 512, True), "small": (384, 12, 1024, True), "base": (768, 12, 2048, False),
          "large": (1024, 24, 2730, False)}


def eva02_released_tensors(size: str, img_size: int, num_classes: int) -> list[tuple[int, ...]]:
    """Shapes of every tensor of a released EVA-02 checkpoint in timm's layout."""
    c, depth, h, fused = _EVA02[size]
    tensors = [(c, 3, 14, 14), (c,), (1, 1, c), (1, (img_size // 14) ** 2 + 1, c)]  # patch conv, cls, pos_embed
    block = [(c,), (c,)]  # norm1
    if fused:
        block += [(3 * c, c), (c,), (c,)]  # attn.qkv.weight, q_bias, v_bias
    else:
        block += [(c, c), (c,), (c, c), (c, c), (c,)]  # q_proj w+b, k_proj w, v_proj w+b
    block += [(c, c), (c,), (c,), (c,)]  # attn.proj, norm2
    if fused:
        block += [(2 * h, c), (2 * h,)]  # mlp.fc1 (EVA's w12): gate | value
    else:
        block += [(h, c), (h,), (h, c), (h,), (h,), (h,)]  # mlp.fc1_g (w1), fc1_x (w2), norm (ffn_ln)
    block += [(c, h), (c,)]  # mlp.fc2 (w3)
    tensors += block * depth + [(c,), (c,)]  # fc_norm
    return tensors + ([(num_classes, c), (num_classes,)] if num_classes else [])


EVA02_PARAMS = {  # name: (count, img_size, num_classes of the default pretrained tag)
    "eva02_tiny_patch14_224": (5_502_144, 224, 0),
    "eva02_tiny_patch14_336": (5_756_584, 336, 1000),
    "eva02_small_patch14_224": (21_621_120, 224, 0),
    "eva02_small_patch14_336": (22_129_000, 336, 1000),
    "eva02_base_patch14_224": (85_758_720, 224, 0),
    "eva02_base_patch14_448": (87_117_544, 448, 1000),
    "eva02_large_patch14_224": (303_268_800, 224, 0),
    "eva02_large_patch14_448": (305_080_232, 448, 1000),
}

# HF DINOv3ViTConfig of each timm size: (hidden, layers, heads, intermediate, gated MLP); q/v biases from '_qkvb'.
_DINOV3_HF = {"tiny": (192, 12, 3, 768, False), "small": (384, 12, 6, 1536, False),
              "small_plus": (384, 12, 6, 1536, True), "base": (768, 12, 12, 3072, False),
              "large": (1024, 24, 16, 4096, False), "huge_plus": (1280, 32, 20, 5120, True),
              "7b": (4096, 40, 32, 8192, True)}


def _hf_dinov3_count(name: str) -> int:
    size = name.removeprefix("vit_").split("_patch16")[0]
    hidden, layers, heads, inter, gated = _DINOV3_HF[size]
    bias = name.endswith("_qkvb")
    config = transformers.DINOv3ViTConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inter,
        use_gated_mlp=gated, query_bias=bias, value_bias=bias, key_bias=False, num_register_tokens=4,
        image_size=256, patch_size=16)
    with torch.device("meta"):
        model = transformers.DINOv3ViTModel(config)
    return sum(p.numel() for p in model.parameters()) - hidden  # HF's mask_token


DINOV3_NAMES = list_models("*_dinov3*")


def test_every_eva_preset_is_counted_here():
    assert set(list_models("eva02_*")) == set(EVA02_PARAMS)
    assert set(DINOV3_NAMES) == {f"vit_{s}_patch16_dinov3{q}" for s in _DINOV3_HF for q in ("", "_qkvb")} - {
        "vit_tiny_patch16_dinov3", "vit_7b_patch16_dinov3_qkvb"}  # timm registers only these


@pytest.mark.parametrize("name", sorted(EVA02_PARAMS))
def test_eva02_counts_equal_the_released_checkpoints(name):
    count, img, classes = EVA02_PARAMS[name]
    cfg = get_config(name)
    assert (cfg.img_size, cfg.num_classes) == (img, classes)
    size = name.split("_")[1]
    assert sum(torch.Size(s).numel() for s in eva02_released_tensors(size, img, classes)) == count
    assert count_params(cfg) == count


@pytest.mark.parametrize("name", DINOV3_NAMES)
def test_dinov3_counts_equal_transformers(name):
    cfg = get_config(name)
    assert (cfg.img_size, cfg.num_classes, cfg.num_reg_tokens) == (256, 0, 4)
    assert count_params(cfg) == _hf_dinov3_count(name)


def test_config_round_trips_and_refuses_bad_values_by_name():
    from vit_common import ConfigError, config_from_dict

    cfg = get_config("eva02_base_patch14_448")
    assert config_from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["arch"] == "eva"
    cases = [(dict(rope_type="mixed"), "rope_type must be one of"),
             (dict(rope_rotate_half=True), "rope_rotate_half must be False"),
             (dict(embed_dim=100, num_heads=16), "embed_dim 100 is not divisible by num_heads 16"),
             (dict(embed_dim=96, num_heads=16), "head_dim 96 / 16 must be divisible by 4"),
             (dict(global_pool="token", class_token=False), "needs class_token=True"),
             (dict(global_pool="map"), "global_pool must be one of"),
             (dict(ref_feat_shape=(16, 12)), "ref_feat_shape must be square"),
             (dict(num_reg_tokens=-1), "num_reg_tokens")]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            get_config("eva02_base_patch14_448", **overrides)
    with pytest.raises(ConfigError, match=r"Eva configs have no field\(s\) \['window_size'\]"):
        cfg.replace(window_size=7)
