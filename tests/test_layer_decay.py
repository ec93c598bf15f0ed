"""Layer-wise learning-rate decay's layer ids and scales (vit_common/train/layer_decay.py) against
tables derived by hand from the rule: embeddings 0, block i -> i + 1 (Swin: counted across its
stages, a stage's patch merging with its first block), everything after the blocks depth + 1,
scale = rate ** (depth + 1 - id)."""
import pytest

from vit_common import ConfigError, get_config
from vit_common.train.layer_decay import layer_ids, layer_scales
from vit_common.weights.canonical import links


def _modules(cfg):
    return [link.module for link in links(cfg)]


def test_vit_tiny_like_layers():
    cfg = get_config("vit_tiny_patch16_224", depth=3)
    block = ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]
    expected = {"patch_embed.proj": 0, "cls_token": 0, "pos_embed": 0,
                **{f"blocks.0.{m}": 1 for m in block}, **{f"blocks.1.{m}": 2 for m in block},
                **{f"blocks.2.{m}": 3 for m in block}, "norm": 4, "head": 4}
    ids, depth = layer_ids(_modules(cfg))
    assert depth == 3 and ids == expected
    scales = layer_scales(_modules(cfg), 0.5)  # a power of two: the scales are exact
    assert scales["head"] == scales["norm"] == 1.0
    assert scales["blocks.2.mlp.fc2"] == 0.5 and scales["blocks.0.attn.qkv"] == 0.125
    assert scales["patch_embed.proj"] == scales["cls_token"] == scales["pos_embed"] == 0.0625


def test_heads_and_pools_train_at_the_full_rate():
    for name, overrides, after in [
        ("deit_tiny_distilled_patch16_224", {}, {"norm", "head", "head_dist"}),
        ("vit_tiny_patch16_224", {"global_pool": "avg"}, {"fc_norm", "head"}),
        ("vit_tiny_patch16_224", {"global_pool": "map", "representation_size": 16},
         {"norm", "attn_pool.latent", "attn_pool.q", "attn_pool.kv", "attn_pool.proj", "attn_pool.norm",
          "attn_pool.mlp.fc1", "attn_pool.mlp.fc2", "pre_logits.fc", "head"}),
    ]:
        cfg = get_config(name, depth=2, **overrides)
        ids, depth = layer_ids(_modules(cfg))
        assert depth == 2
        assert {m for m, i in ids.items() if i == 3} == after, name
        assert {m for m, i in ids.items() if i == 0} == {"patch_embed.proj", "cls_token", "pos_embed"} | (
            {"dist_token"} if "distilled" in name else set()), name


def test_swin_tiny_layers():
    # swin_tiny: depths (2, 2, 6, 2), so 12 blocks. The first block of each stage, by hand:
    first = {0: 1, 1: 3, 2: 5, 3: 11}
    blocks = {0: 2, 1: 2, 2: 6, 3: 2}
    block = ["norm1", "attn.relative_position_bias_table", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]
    expected = {"patch_embed.proj": 0, "patch_embed.norm": 0, "norm": 13, "head.fc": 13}
    for s in range(4):
        for b in range(blocks[s]):
            expected |= {f"layers.{s}.blocks.{b}.{m}": first[s] + b for m in block}
        if s:  # patch merging at the start of stages 1-3, with the stage's first block (timm's grouping)
            expected |= {f"layers.{s}.downsample.norm": first[s], f"layers.{s}.downsample.reduction": first[s]}
    ids, depth = layer_ids(_modules(get_config("swin_tiny_patch4_window7_224")))
    assert depth == 12 and ids == expected
    scales = layer_scales(expected, 0.5)
    assert scales["head.fc"] == 1.0 and scales["layers.3.blocks.1.mlp.fc2"] == 0.5
    assert scales["layers.3.downsample.reduction"] == scales["layers.3.blocks.0.norm1"] == 0.25
    assert scales["layers.2.blocks.0.attn.qkv"] == 0.5 ** 8 and scales["patch_embed.norm"] == 0.5 ** 13


def test_names_of_other_families_and_frameworks():
    # Parameter names (leaf included) as PyTorch and Flax spell them, and names of families this
    # code has no entry for: tokens and embeddings before the blocks are layer 0, anything else
    # outside the blocks is with the head.
    ids, depth = layer_ids([
        "cls_token", "reg_token", "mask_token", "storage_tokens", "pos_embed", "patch_embed.proj.weight",
        "patch_embed.proj.kernel", "norm_pre.weight", "norm_pre.scale",
        "blocks.0.ls1.gamma", "blocks.0.attn.qkv.kernel", "blocks.0.attn.qkv.weight", "blocks.1.mlp.w12.weight",
        "blocks.1.attn.q_norm.weight", "norm.weight", "fc_norm.scale", "head.weight", "head.kernel",
        "rope.freqs", "neck.proj.weight",
    ])
    assert depth == 2
    assert {n for n, i in ids.items() if i == 0} == {
        "cls_token", "reg_token", "mask_token", "storage_tokens", "pos_embed", "patch_embed.proj.weight",
        "patch_embed.proj.kernel", "norm_pre.weight", "norm_pre.scale"}
    assert {n for n, i in ids.items() if i == 1} == {"blocks.0.ls1.gamma", "blocks.0.attn.qkv.kernel",
                                                     "blocks.0.attn.qkv.weight"}
    assert {n for n, i in ids.items() if i == 2} == {"blocks.1.mlp.w12.weight", "blocks.1.attn.q_norm.weight"}
    assert {n for n, i in ids.items() if i == 3} == {"norm.weight", "fc_norm.scale", "head.weight", "head.kernel",
                                                     "rope.freqs", "neck.proj.weight"}


def test_a_model_without_known_blocks_is_refused():
    with pytest.raises(ConfigError, match="layer decay needs transformer blocks named blocks.N"):
        layer_ids(["embeddings.patch.weight", "encoder.layer.0.attention.query.weight", "classifier.weight"])
