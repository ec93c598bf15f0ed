"""vit_torch.create_model(NAME, pretrained=True), one test per naming form, from a Hugging Face
cache laid out on disk and read offline: the model holds exactly the file's weights."""
import dataclasses
import json

import numpy as np
import pytest
import torch

import vit_torch
from tests.checkpoint_factories import as_hf, random_canonical
from tests.hub_cache import cache_repo, register_tiny_presets, safetensors_bytes, timm_config_json, use_hub
from vit_common import TIMM, CheckpointError, get_config


@pytest.fixture
def hub(tmp_path, monkeypatch):
    register_tiny_presets(monkeypatch)
    use_hub(monkeypatch, tmp_path / "hub")
    return tmp_path / "hub"


def timm_file(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A state dict in timm's names, as this twin writes it: a randomised model's."""
    torch.manual_seed(seed)
    model = vit_torch.create_model(name)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def assert_holds(model, state_dict: dict[str, np.ndarray], skip: str = "-") -> None:
    """The model's state dict is `state_dict`, except entries starting with `skip`."""
    got = {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
    assert got.keys() == {k for k in state_dict if not k.startswith(skip)}
    for k, v in got.items():
        np.testing.assert_array_equal(v.numpy(), state_dict[k], err_msg=k)


def test_bare_name_loads_timms_default_tag(hub):
    sd = timm_file("vit_tiny_patch16_224")  # the real preset, full size (5.7M parameters)
    cache_repo(hub, "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", {"model.safetensors": safetensors_bytes(sd)})
    model = vit_torch.create_model("vit_tiny_patch16_224", pretrained=True)
    assert not model.training and model.cfg == get_config("vit_tiny_patch16_224")
    assert_holds(model, sd)


def test_name_and_tag(hub):
    sd = timm_file("swin_test_tiny", seed=1)
    cache_repo(hub, "timm/swin_test_tiny.other", {
        "model.safetensors": safetensors_bytes(sd),
        "config.json": timm_config_json("swin_test_tiny", 10, tag="other", img_size=32)})
    assert_holds(vit_torch.create_model("swin_test_tiny.other", pretrained=True), sd)


def test_hf_hub_timm_repository(hub):
    sd = timm_file("test_vit_tiny", seed=2)
    cache_repo(hub, "timm/test_vit_tiny.test_in1k", {
        "model.safetensors": safetensors_bytes(sd),
        "config.json": timm_config_json("test_vit_tiny", 10, tag="test_in1k", img_size=32)})
    assert_holds(vit_torch.create_model("hf-hub:timm/test_vit_tiny.test_in1k", pretrained=True), sd)


def test_hf_hub_transformers_repository(hub):
    cfg = get_config("test_vit_tiny", distilled=True)
    w = random_canonical(cfg, seed=3)
    config = dict(model_type="deit", num_attention_heads=3, image_size=32, hidden_size=48, patch_size=8,
                  layer_norm_eps=1e-6)  # transformers' default is 1e-12
    cache_repo(hub, "someone/deit-tiny", {"model.safetensors": safetensors_bytes(as_hf(w, cfg)),
                                           "config.json": json.dumps(config).encode()})
    model = vit_torch.create_model("hf-hub:someone/deit-tiny", pretrained=True)
    # A transformers repository's config is read, not stored, so its models run other sizes by
    # transformers' interpolation rule (Source.derived).
    assert model.cfg == dataclasses.replace(cfg, pos_embed_interp="transformers")
    assert_holds(model, TIMM.export(w, cfg))


def test_a_new_class_count_gets_a_zero_head(hub):
    sd = timm_file("test_vit_tiny", seed=4)
    cache_repo(hub, "timm/test_vit_tiny.test_in1k", {"model.safetensors": safetensors_bytes(sd)})
    model = vit_torch.create_model("test_vit_tiny", pretrained=True, num_classes=4, drop_path_rate=0.1)
    assert model.cfg.num_classes == 4 and model.cfg.drop_path_rate == 0.1
    assert model.head.weight.shape == (4, 48) and not model.head.weight.any() and not model.head.bias.any()
    assert_holds(model, sd, skip="head")


def test_pretrained_needs_a_name_and_no_checkpoint(hub, tmp_path):
    with pytest.raises(ValueError, match="not both"):
        vit_torch.create_model("test_vit_tiny", tmp_path / "x.npz", pretrained=True)
    with pytest.raises(ValueError, match="needs a model name"):
        vit_torch.create_model(pretrained=True)
    with pytest.raises(CheckpointError, match="timm/test_vit_tiny.test_in1k/model.safetensors: not in the"):
        vit_torch.create_model("test_vit_tiny", pretrained=True)


def test_vit_predict_takes_a_pretrained_name(hub, tmp_path, capsys):
    from PIL import Image

    from vit_common.cli.vit_predict import main as predict

    sd = timm_file("test_vit_tiny", seed=5)
    cache_repo(hub, "timm/test_vit_tiny.test_in1k", {
        "model.safetensors": safetensors_bytes(sd),
        "config.json": timm_config_json("test_vit_tiny", 10, tag="test_in1k", img_size=32, crop_pct=1.0,
                                        label_names=[f"label {i}" for i in range(10)])})
    Image.fromarray(np.full((40, 48, 3), 128, np.uint8)).save(image := tmp_path / "x.png")
    assert predict([str(image), "--checkpoint", "timm:test_vit_tiny", "--framework", "torch", "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "preprocessing (recorded in the checkpoint)" in out and "(crop_pct 1.0)" in out
    assert out.count("  label ") == 2
