"""Forward parity: logits, pooled features, every hidden state and attention map (and every Swin
stage's output), both directions, for ViT, DeiT and Swin."""
import numpy as np
import pytest

import vit_jax
import vit_torch
from parity_tests.grid import SMALL_GRID, SWIN_GRID, small
from parity_tests.harness import (
    FLOAT32_TOL, build_pair, compare, failures, non_finite, random_images, rel_error, run_jax, run_torch,
)

DIRECTIONS = ["torch", "jax"]  # the twin that initialises; the other receives converted weights


def _check(record, label, preset, overrides, source, batch, pair=build_pair):
    tm, jm, _ = pair(preset, source, **overrides)
    images = random_images(tm.cfg, batch)
    out_torch, out_jax = run_torch(tm, images), run_jax(jm, images)
    # The receiving twin is measured against the initialising one.
    errors = compare(out_jax, out_torch) if source == "torch" else compare(out_torch, out_jax)
    record(label, f"{source}->{'jax' if source == 'torch' else 'torch'}", errors)
    assert len(out_torch.hidden_states) == tm.cfg.depth and len(out_torch.attentions) == tm.cfg.depth
    if tm.cfg.arch == "swin":
        assert len(out_torch.stages) == tm.cfg.num_stages
    unfinite = {twin: names for twin, out in (("torch", out_torch), ("jax", out_jax)) if (names := non_finite(out))}
    bad = failures(errors, FLOAT32_TOL)
    assert not bad and not unfinite, (f"{label} ({source} init): errors above {FLOAT32_TOL}: {bad}; "
                                      f"NaN or inf in: {unfinite or 'none'}")


@pytest.mark.parametrize("source", DIRECTIONS)
@pytest.mark.parametrize("name", [*SMALL_GRID, *SWIN_GRID])
def test_small_config(record, name, source):
    _check(record, name, *small(name), source, batch=3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rel_error_is_infinite_on_a_non_finite_side(bad):
    a = np.zeros((2, 3), np.float32)
    b = a.copy()
    b[1, 2] = bad
    assert rel_error(a, b) == np.inf and rel_error(b, a) == np.inf and rel_error(b, b) == np.inf
    assert failures({"x": rel_error(a, b), "y": 0.0, "z": float("nan")}, FLOAT32_TOL).keys() == {"x", "z"}


POISONED = "Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"  # the MLP of block 1, after its attention


@pytest.mark.parametrize("source", DIRECTIONS)
def test_a_twin_emitting_nan_fails_the_check_naming_the_tensor(source):
    """A receiving twin with one NaN weight outputs NaN from block 1's hidden state on. Measured
    as `nan > tol`, that once passed; the check must fail and say where the NaN appears."""
    def poisoned_pair(*args, **kwargs):
        tm, jm, weights = build_pair(*args, **kwargs)
        weights = {k: v.copy() for k, v in weights.items()}
        weights[POISONED][0] = np.nan
        if source == "torch":
            vit_jax.load_canonical_(jm, weights)
        else:
            vit_torch.load_canonical_(tm, weights)
        return tm, jm, weights

    # batch 3, as the grid's "token" row: the same shapes, so JAX reuses that row's compiled forward.
    with pytest.raises(AssertionError) as failed:  # (a no-op record keeps it out of the parity table)
        _check(lambda *_: None, "token", *small("token"), source, batch=3, pair=poisoned_pair)
    receiver = "jax" if source == "torch" else "torch"
    message = str(failed.value)
    assert f"NaN or inf in: {{'{receiver}': ['block 1 hidden', 'pooled', 'logits']}}" in message
    for kind in ("hidden", "pooled", "logits"):
        assert f"'{kind}': inf" in message
    assert "'attention': inf" not in message  # block 1's attention runs before the poisoned MLP
