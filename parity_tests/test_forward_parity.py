"""Forward parity: logits, pooled features, every hidden state and attention map (and every Swin
stage's output), both directions, for ViT, DeiT and Swin."""
import pytest

from parity_tests.grid import FULL_SIZE, SMALL_GRID, SWIN_GRID, small
from parity_tests.harness import FLOAT32_TOL, build_pair, compare, random_images, run_jax, run_torch

DIRECTIONS = ["torch", "jax"]  # the twin that initialises; the other receives converted weights


def _check(record, label, preset, overrides, source, batch):
    tm, jm, _ = build_pair(preset, source, **overrides)
    images = random_images(tm.cfg, batch)
    out_torch, out_jax = run_torch(tm, images), run_jax(jm, images)
    # The receiving twin is measured against the initialising one.
    errors = compare(out_jax, out_torch) if source == "torch" else compare(out_torch, out_jax)
    record(label, f"{source}->{'jax' if source == 'torch' else 'torch'}", errors)
    assert len(out_torch.hidden_states) == tm.cfg.depth and len(out_torch.attentions) == tm.cfg.depth
    if tm.cfg.arch == "swin":
        assert len(out_torch.stages) == tm.cfg.num_stages
    bad = {k: v for k, v in errors.items() if v > FLOAT32_TOL}
    assert not bad, f"{label} ({source} init): errors above {FLOAT32_TOL}: {bad}"


@pytest.mark.parametrize("source", DIRECTIONS)
@pytest.mark.parametrize("name", [*SMALL_GRID, *SWIN_GRID])
def test_small_config(record, name, source):
    _check(record, name, *small(name), source, batch=3)


@pytest.mark.parametrize("source", DIRECTIONS)
@pytest.mark.parametrize("preset", FULL_SIZE)
def test_full_size(record, preset, source):
    _check(record, preset, preset, {}, source, batch=2)
