"""vit_jax.create_model(NAME, pretrained=True), one test per naming form, from a Hugging Face
cache laid out on disk and read offline: the model holds exactly the file's weights."""
import dataclasses
import json

import numpy as np
import pytest

import vit_jax
from tests.checkpoint_factories import as_hf, random_canonical
from tests.hub_cache import cache_repo, register_tiny_presets, safetensors_bytes, timm_config_json, use_hub
from vit_common import TIMM, CheckpointError, get_config


@pytest.fixture
def hub(tmp_path, monkeypatch):
    register_tiny_presets(monkeypatch)
    use_hub(monkeypatch, tmp_path / "hub")
    return tmp_path / "hub"


def timm_file(name: str, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(canonical weights, the same as a state dict in timm's names)."""
    cfg = get_config(name)
    w = random_canonical(cfg, seed)
    return w, TIMM.export(w, cfg)


def assert_holds(model, weights: dict[str, np.ndarray], skip: str = "-") -> None:
    """The model's canonical weights are `weights`, except entries starting with `skip`."""
    got = {k: v for k, v in vit_jax.to_canonical(model).items() if not k.startswith(skip)}
    assert got.keys() == {k for k in weights if not k.startswith(skip)}
    for k, v in got.items():
        np.testing.assert_array_equal(np.asarray(v), weights[k], err_msg=k)


def test_bare_name_loads_the_default_tag(hub):
    # A tiny preset: building a model compiles its shapes, slow for full size here (the real
    # vit_tiny_patch16_224 row is read in test_hub_torch.py and by vit-convert in test_hub.py).
    w, sd = timm_file("test_vit_tiny")
    cache_repo(hub, "timm/test_vit_tiny.test_in1k", {"model.safetensors": safetensors_bytes(sd)})
    model = vit_jax.create_model("test_vit_tiny", pretrained=True)
    assert model.cfg == get_config("test_vit_tiny")
    assert_holds(model, w)


def test_name_and_tag(hub):
    # A ViT (test_hub_torch.py reads a Swin this way; building a Swin in JAX costs seconds, and
    # test_transformers_reference.py loads one from the Hub cache into JAX already).
    w, sd = timm_file("test_vit_tiny", seed=1)
    cache_repo(hub, "timm/test_vit_tiny.other", {
        "model.safetensors": safetensors_bytes(sd),
        "config.json": timm_config_json("test_vit_tiny", 10, tag="other", img_size=32)})
    assert_holds(vit_jax.create_model("test_vit_tiny.other", pretrained=True), w)


def test_hf_hub_timm_repository(hub):
    w, sd = timm_file("test_vit_tiny", seed=2)
    cache_repo(hub, "timm/test_vit_tiny.test_in1k", {
        "model.safetensors": safetensors_bytes(sd),
        "config.json": timm_config_json("test_vit_tiny", 10, tag="test_in1k", img_size=32)})
    assert_holds(vit_jax.create_model("hf-hub:timm/test_vit_tiny.test_in1k", pretrained=True), w)


def test_hf_hub_transformers_repository(hub):
    cfg = get_config("test_vit_tiny", distilled=True)
    w = random_canonical(cfg, seed=3)
    config = dict(model_type="deit", num_attention_heads=3, image_size=32, hidden_size=48, patch_size=8,
                  layer_norm_eps=1e-6)  # transformers' default is 1e-12
    cache_repo(hub, "someone/deit-tiny", {"model.safetensors": safetensors_bytes(as_hf(w, cfg)),
                                           "config.json": json.dumps(config).encode()})
    model = vit_jax.create_model("hf-hub:someone/deit-tiny", pretrained=True)
    # A transformers repository's config is read, not stored, so its models run other sizes by
    # transformers' interpolation rule (Source.derived).
    assert model.cfg == dataclasses.replace(cfg, pos_embed_interp="transformers")
    assert_holds(model, w)


def test_a_new_class_count_gets_a_zero_head(hub):
    w, sd = timm_file("test_vit_tiny", seed=4)
    cache_repo(hub, "timm/test_vit_tiny.test_in1k", {"model.safetensors": safetensors_bytes(sd)})
    model = vit_jax.create_model("test_vit_tiny", pretrained=True, num_classes=4, drop_path_rate=0.1)
    assert model.cfg.num_classes == 4 and model.cfg.drop_path_rate == 0.1
    head = vit_jax.to_canonical(model)
    assert head["head/kernel"].shape == (48, 4) and not np.any(head["head/kernel"]) and not np.any(head["head/bias"])
    assert_holds(model, w, skip="head")


def test_pretrained_needs_a_name_and_no_checkpoint(hub, tmp_path):
    with pytest.raises(ValueError, match="not both"):
        vit_jax.create_model("test_vit_tiny", tmp_path / "x.npz", pretrained=True)
    with pytest.raises(ValueError, match="needs a model name"):
        vit_jax.create_model(pretrained=True)
    with pytest.raises(CheckpointError, match="timm/test_vit_tiny.test_in1k/model.safetensors: not in the"):
        vit_jax.create_model("test_vit_tiny", pretrained=True)


def test_vit_predict_takes_a_pretrained_name(hub, tmp_path, capsys):
    from PIL import Image

    from vit_common.cli.vit_predict import main as predict

    _, sd = timm_file("test_vit_tiny", seed=5)
    cache_repo(hub, "timm/test_vit_tiny.test_in1k", {
        "model.safetensors": safetensors_bytes(sd),
        "config.json": timm_config_json("test_vit_tiny", 10, tag="test_in1k", img_size=32, crop_pct=1.0,
                                        label_names=[f"label {i}" for i in range(10)])})
    Image.fromarray(np.full((40, 48, 3), 128, np.uint8)).save(image := tmp_path / "x.png")
    assert predict([str(image), "--checkpoint", "timm:test_vit_tiny", "--framework", "jax", "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "preprocessing (recorded in the checkpoint)" in out and "(crop_pct 1.0)" in out
    assert out.count("  label ") == 2
