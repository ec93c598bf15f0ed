"""transformers model folders (config.json + model.safetensors), both ways, for every architecture
transformers has among the twins': a random-weight model saved by transformers (save_pretrained),
converted by vit-convert into each twin's format, computes transformers' outputs within 1e-5;
a checkpoint of ours written back with `vit-convert --to hf` loads into the transformers class
strictly (no missing, unexpected or mismatched keys) and computes our outputs within 1e-5; and
reading that folder gives our weights and config back exactly. NaN fails (rel_error is inf)."""
import json
import re

import numpy as np
import pytest
import torch
import transformers

import vit_jax
import vit_torch
from parity_tests.harness import FLOAT32_TOL, nhwc_to_nchw, perturb, random_images, rel_error, run_jax, run_torch
from parity_tests.hf_families import hf_model, perturb_
from vit_common.cli import vit_convert
from vit_common.formats import read_checkpoint, save_npz

TINY = dict(hidden=48, layers=2, heads=3, patch=8, img=32)
VIT = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96, patch_size=8,
           image_size=32, attn_implementation="eager")
LABELS = {"0": "cat", "1": "dog", "2": "fish"}


def _vit(cls, config_cls, **kw):
    return lambda: cls(config_cls(**VIT, **kw))


# case -> (builds the transformers model, what its pooled output is: logits | pooler | mean)
CASES = {
    "vit-cls": (_vit(transformers.ViTForImageClassification, transformers.ViTConfig, layer_norm_eps=1e-6,
                     id2label=LABELS), "logits"),
    "vit-pooler": (_vit(transformers.ViTModel, transformers.ViTConfig), "pooler"),  # eps 1e-12, its default
    "vit-quickgelu": (_vit(transformers.ViTModel, transformers.ViTConfig, hidden_act="quick_gelu"), "pooler"),
    "deit-teacher": (_vit(transformers.DeiTForImageClassificationWithTeacher, transformers.DeiTConfig,
                          num_labels=5), "logits"),
    "swin": (lambda: transformers.SwinForImageClassification(transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[2, 1], num_heads=[1, 2], window_size=4, num_labels=3,
        attn_implementation="eager")), "logits"),
    "dinov2": (lambda: hf_model("dinov2", **TINY, mlp=192), "pooler"),
    "dinov2-swiglu": (lambda: hf_model("dinov2", **TINY, mlp=192, swiglu=True), "pooler"),
    "dinov2-reg": (lambda: hf_model("dinov2_reg", **TINY, mlp=192, registers=2), "pooler"),
    "clip-quickgelu": (lambda: hf_model("clip", **TINY, mlp=192, act="quick_gelu"), "pooler"),
    "clip-gelu": (lambda: hf_model("clip", **TINY, mlp=192, act="gelu"), "pooler"),
    "siglip-map": (lambda: hf_model("siglip", **TINY, mlp=192), "pooler"),
    "siglip-gap": (lambda: hf_model("siglip", **TINY, mlp=192, map_head=False), "mean"),
    "aimv2": (lambda: hf_model("aimv2", **TINY, mlp=132), "mean"),
    "dinov3": (lambda: transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(
        **VIT, num_register_tokens=2, rope_theta=100.0, layer_norm_eps=1e-5)), "pooler"),
    "dinov3-swiglu": (lambda: transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(
        **{**VIT, "intermediate_size": 64}, use_gated_mlp=True, hidden_act="silu", query_bias=False,
        value_bias=False)), "pooler"),
}


def hf_outputs(model, images, pooling: str) -> dict[str, np.ndarray | list]:
    swin = isinstance(model.config, transformers.SwinConfig)
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(nhwc_to_nchw(images)), output_hidden_states=not swin,
                    output_attentions=not swin)
    pooled = {"logits": out.logits if pooling == "logits" else None, "pooler": getattr(out, "pooler_output", None),
              "mean": out.last_hidden_state.mean(1) if pooling == "mean" else None}[pooling]
    return {"pooled": pooled.numpy(), "hidden": [] if swin else [h.numpy() for h in out.hidden_states[1:]],
            "attention": [] if swin else [a.numpy() for a in out.attentions]}


def errors(ours, theirs: dict, pooling: str) -> dict[str, float]:
    mine = ours.logits if pooling == "logits" else ours.pooled
    found = {"pooled": rel_error(mine, theirs["pooled"])}
    for kind, tensors in (("hidden", ours.hidden_states), ("attention", ours.attentions)):
        if theirs[kind]:
            found[kind] = max(rel_error(a, b) for a, b in zip(tensors, theirs[kind], strict=True))
    return found


def convert(*argv) -> None:
    assert vit_convert.main([str(a) for a in argv]) == 0, argv


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    build, pooling = CASES[request.param]
    torch.manual_seed(0)
    model = perturb_(build(), seed=0)
    root = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(root / "hf")
    images = random_images(read_checkpoint(root / "hf").config, 2)
    convert(root / "hf", root / "ours.npz")  # the JAX twin's
    convert(root / "hf", root / "ours.safetensors")  # the PyTorch twin's
    return request.param, type(model), pooling, root, images, hf_outputs(model, images, pooling)


def test_transformers_folder_into_torch(case, record):
    _check_twin(case, "torch", record)


# The JAX twin on two cases only: on the same transformers models test_hf_families.py (DINOv2,
# CLIP, SigLIP, AIMv2), test_transformers_reference.py (ViT, DeiT, Swin, config.json through the
# Hub cache) and test_eva_transformers.py (DINOv3) already run it; these two keep the path
# folder -> vit-convert -> .npz -> JAX, with HF's default eps (1e-12) and with an Eva model.
@pytest.mark.parametrize("case", ["vit-pooler", "dinov3"], indirect=True)
def test_transformers_folder_into_jax(case, record):
    _check_twin(case, "jax", record)


def _check_twin(case, twin: str, record) -> None:
    name, _, pooling, root, images, theirs = case
    if twin == "torch":
        ours = run_torch(vit_torch.create_model(checkpoint=root / "ours.safetensors"), images)
    else:
        ours = run_jax(vit_jax.create_model(checkpoint=root / "ours.npz"), images)
    found = errors(ours, theirs, pooling)
    record(f"HF folder {name}", f"HF -> {twin}", found)
    assert all(v <= FLOAT32_TOL for v in found.values()), found


def test_ours_back_to_transformers_strictly(case, record, tmp_path):
    """Our weights (the converted ones, perturbed) -> --to hf -> from_pretrained, strict, equal."""
    name, cls, pooling, root, images, _ = case
    ckpt = read_checkpoint(root / "ours.npz")
    save_npz(tmp_path / "mine.npz", perturb(ckpt.weights, seed=1), ckpt.config, {"class_names": ckpt.meta.get(
        "class_names")} if "class_names" in ckpt.meta else None)
    convert(tmp_path / "mine.npz", tmp_path / "out", "--to", "hf")
    model, info = cls.from_pretrained(tmp_path / "out", output_loading_info=True, attn_implementation="eager")
    assert not any(info.values()), info  # missing / unexpected / mismatched keys, errors
    theirs = hf_outputs(model.eval(), images, pooling)
    ours = run_torch(vit_torch.create_model(checkpoint=tmp_path / "mine.npz"), images)
    found = errors(ours, theirs, pooling)
    record(f"HF folder {name}", "torch -> HF", found)
    assert all(v <= FLOAT32_TOL for v in found.values()), found
    # ... and the folder reads back to exactly what was written
    back, mine = read_checkpoint(tmp_path / "out"), read_checkpoint(tmp_path / "mine.npz")
    assert back.config == mine.config
    assert back.weights.keys() == mine.weights.keys()
    assert all(np.array_equal(back.weights[k], mine.weights[k]) for k in mine.weights)
    if name == "vit-cls":
        written = json.loads((tmp_path / "out" / "config.json").read_text())
        assert written["id2label"] == LABELS and back.meta["class_names"] == ["cat", "dog", "fish"]


SMALL = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)


@pytest.mark.parametrize("preset, overrides, cls", [
    # LayerScale and a table without the class token's entry: a Dinov2Model, the entry written as zeros
    ("deit3_small_patch16_224", dict(num_classes=0), transformers.Dinov2Model),
    # a ViT without a representation layer: ViTModel's pooler written as zeros
    ("vit_base_patch16_224", dict(num_classes=0), transformers.ViTModel),
])
def test_placeholders_load_strictly_and_read_back(preset, overrides, cls, tmp_path):
    cfg = vit_torch.get_config(preset, **SMALL, **overrides)
    model = vit_torch.create_model(preset, **SMALL, **overrides)
    weights = perturb(vit_torch.to_canonical(model), seed=2)
    save_npz(tmp_path / "mine.npz", weights, cfg)
    convert(tmp_path / "mine.npz", tmp_path / "out", "--to", "hf")
    hf, info = cls.from_pretrained(tmp_path / "out", output_loading_info=True, attn_implementation="eager")
    assert not any(info.values()), info
    images = random_images(cfg, 2)
    theirs = hf_outputs(hf.eval(), images, "pooler")
    ours = run_torch(vit_torch.create_model(checkpoint=tmp_path / "mine.npz"), images)
    assert max(rel_error(a, b) for a, b in zip(ours.hidden_states, theirs["hidden"], strict=True)) <= FLOAT32_TOL
    back = read_checkpoint(tmp_path / "out")
    # A transformers folder runs other sizes by transformers' interpolation rule (docs/any-size.md).
    assert back.config.pos_embed_interp.startswith("transformers")
    assert back.config.replace(pos_embed_interp=cfg.pos_embed_interp) == cfg
    assert all(np.array_equal(back.weights[k], weights[k]) for k in weights) and back.weights.keys() == weights.keys()


@pytest.mark.parametrize("preset, overrides, message", [
    ("vit_base_patch16_224", dict(global_pool="avg"),
     r"ViTModel / ViTForImageClassification cannot hold this model: global_pool='avg'"),
    ("vit_base_patch16_224", dict(representation_size=48), r"no representation layer"),
    ("vit_small_patch14_dinov2", dict(num_classes=10), r"Dinov2Model cannot hold this model: num_classes=10"),
    ("vit_base_patch16_clip_224", dict(num_classes=0, qkv_bias=False), r"CLIPVisionModel .*qkv_bias=False"),
    ("eva02_tiny_patch14_224", {}, r"transformers has no EVA-02"),
])
def test_what_transformers_cannot_hold_is_refused_by_name(preset, overrides, message, tmp_path, capsys):
    model = vit_torch.create_model(preset, **{**SMALL, "patch_size": 8}, **overrides)
    save_npz(tmp_path / "mine.npz", vit_torch.to_canonical(model), model.cfg)
    assert vit_convert.main([str(tmp_path / "mine.npz"), str(tmp_path / "out"), "--to", "hf"]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
