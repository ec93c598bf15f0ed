"""vit-parity: clean table and exit 0 on a faithful checkpoint, exit 1 when a twin is off."""
import numpy as np
import pytest
from PIL import Image

import torch
from vit_common import get_config, save_npz
from parity_tests.parity_cli import main as parity
from tests.checkpoint_factories import random_canonical

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)


@pytest.fixture
def checkpoint(tmp_path):
    cfg = get_config("deit_tiny_distilled_patch16_224", **TINY)
    save_npz(path := tmp_path / "model.npz", random_canonical(cfg), cfg)
    return path


def test_clean_table_on_random_inputs(checkpoint, capsys):
    assert parity([str(checkpoint), "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert "block  1 attention" in out and "logits" in out
    assert "top-1 agreement jax vs torch: 100%" in out and "-> PASS" in out


def test_images_from_a_folder_and_bfloat16(checkpoint, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    assert parity([str(checkpoint), "--images", str(folder)]) == 0
    assert f"2 images from {folder}" in capsys.readouterr().out
    assert parity([str(checkpoint), "--dtype", "bfloat16"]) == 0
    assert "tolerance 1e-02" in capsys.readouterr().out


def test_a_twin_that_is_off_fails(checkpoint, tmp_path, monkeypatch, capsys):
    # Quiet tokens (as in real checkpoints' small-variance channels) make LayerNorm's eps matter.
    cfg = get_config("deit_tiny_distilled_patch16_224", **TINY)
    w = random_canonical(cfg)
    for k in ("embedding/kernel", "embedding/bias", "cls", "dist", "Transformer/posembed_input/pos_embedding"):
        w[k] = w[k] * 1e-3
    save_npz(quiet := tmp_path / "quiet.npz", w, cfg)
    # PyTorch's default eps in the torch twin's LayerNorms: the classic bug.
    layer_norm = torch.nn.functional.layer_norm
    monkeypatch.setattr(torch.nn.LayerNorm, "forward",
                        lambda self, x: layer_norm(x, self.normalized_shape, self.weight, self.bias, 1e-5))
    assert parity([str(quiet)]) == 1
    assert "-> FAIL" in capsys.readouterr().out


def test_a_twin_emitting_nan_fails_naming_the_tensor(checkpoint, monkeypatch, capsys):
    import parity_tests.parity_cli as cli

    real = cli.run_torch

    def nan_logits(*args, **kwargs):
        out = real(*args, **kwargs)
        out.logits[1, 0] = np.nan  # the last row of the table: a NaN there once lost to finite rows
        return out

    monkeypatch.setattr(cli, "run_torch", nan_logits)
    assert parity([str(checkpoint), "--batch", "2"]) == 1
    lines = capsys.readouterr().out.splitlines()
    worst = next(line for line in lines if line.startswith("worst:"))
    assert worst.startswith("worst: logits inf") and worst.endswith("-> FAIL"), worst
    assert "torch outputs NaN or inf in: logits -> FAIL" in lines
    assert not any(line.startswith("jax outputs") for line in lines)
    assert next(line for line in lines if line.startswith("block  1 hidden")).endswith("yes")


def test_bad_input_exits_2(tmp_path, capsys):
    assert parity([str(tmp_path / "missing.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_pretrained_name_from_the_hub_cache(tmp_path, monkeypatch, capsys):
    from tests.hub_cache import cache_repo, register_tiny_presets, safetensors_bytes, use_hub
    from vit_common import TIMM

    register_tiny_presets(monkeypatch)
    use_hub(monkeypatch, tmp_path / "hub")
    cfg = get_config("test_vit_tiny")
    cache_repo(tmp_path / "hub", "timm/test_vit_tiny.test_in1k",
               {"model.safetensors": safetensors_bytes(TIMM.export(random_canonical(cfg), cfg))})
    assert parity(["timm:test_vit_tiny", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint timm:test_vit_tiny (timm state dict)" in out and "-> PASS" in out


def test_a_google_npz_shows_its_activation_and_the_gap_to_timms(tmp_path, capsys):
    """No config, no name: Google's tanh GELU, said so; --act-gap shows how far exact GELU lands
    (the gap a port that mixes them carries) and --act-layer runs timm's choice instead."""
    cfg = get_config("vit_base_patch16_224", **TINY)
    w = random_canonical(cfg)
    for k in [k for k in w if k.endswith("MlpBlock_3/Dense_0/kernel")]:
        w[k] = w[k] * 10  # pre-activations of order 1, where the two GELUs part (by up to ~5e-4)
    np.savez(google := tmp_path / "google.npz", **w)  # as Google releases them: no config
    assert parity([str(google), "--act-gap", "gelu"]) == 0
    out = capsys.readouterr().out
    assert "act_layer=gelu_tanh" in out and "note: act_layer='gelu_tanh'" in out
    assert "activation gap: act_layer=gelu_tanh (the checkpoint's) vs gelu" in out
    gap = float(out.split("activation gap")[1].split("last hidden")[1].split()[0])  # its max abs error
    assert gap > 1e-5 and "-> PASS" in out  # shown, not judged: the twins still agree with each other
    assert parity([str(google), "--act-layer", "gelu"]) == 0
    out = capsys.readouterr().out
    assert "act_layer=gelu," in out and "gelu_tanh" not in out
