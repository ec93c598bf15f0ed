"""timm's Eva (EVA-02, DINOv3) in both twins: each option against the float64 reference
(parity_tests/reference_eva.py) and the twins against each other, forward (logits, pooled
features, every hidden state and attention map) and gradients; one full-size model of each
family."""
import numpy as np
import pytest

import vit_jax
import vit_torch
from parity_tests import reference_eva
from parity_tests.grid import DINOV3, EVA02, EVA_GRID, sharpen, small
from parity_tests.harness import (
    FLOAT32_TOL, build_pair, compare, compare_weights, failures, jax_grads, labels_for, non_finite, random_images,
    rel_error, run_jax, run_torch, torch_grads,
)



def source_of(name: str) -> str:
    """The twin that initialises a row, alternating down the grid. One direction per row: pair()
    loads the same canonical weights into both twins either way, so the other direction would
    only change which twin exported them, and test_roundtrip.py pins both exports bit-exact."""
    return ("torch", "jax")[list(EVA_GRID).index(name) % 2]


def pair(name: str, source: str):
    """(torch model, jax model, canonical weights) of a tiny config, initialised in `source`,
    perturbed and sharpened, loaded into both twins."""
    preset, overrides = small(name)
    tm, jm, weights = build_pair(preset, source, **overrides)
    weights = sharpen(weights, tm.cfg)
    vit_torch.load_canonical_(tm, weights)
    vit_jax.load_canonical_(jm, weights)
    return tm, jm, weights


def _errors_vs_reference(out, ref) -> dict[str, float]:
    logits, pooled, hidden, maps = ref
    errors = {"pooled": rel_error(out.pooled, pooled),
              "hidden": float(np.max([rel_error(a, b) for a, b in zip(out.hidden_states, hidden, strict=True)])),
              "attention": float(np.max([rel_error(a, b) for a, b in zip(out.attentions, maps, strict=True)]))}
    if logits is not None:
        errors["logits"] = rel_error(out.logits, logits)
    return errors


@pytest.mark.parametrize("name", EVA_GRID)
def test_small_config(record, name):
    source = source_of(name)
    tm, jm, weights = pair(name, source)
    images = random_images(tm.cfg, 3)
    out_t, out_j = run_torch(tm, images), run_jax(jm, images)
    assert len(out_t.hidden_states) == len(out_t.attentions) == tm.cfg.depth
    receiver = "jax" if source == "torch" else "torch"
    errors = compare(out_j, out_t) if source == "torch" else compare(out_t, out_j)
    record(name, f"{source}->{receiver}", errors)
    ref = reference_eva.forward(weights, tm.cfg, images)
    against_ref = {twin: _errors_vs_reference(out, ref) for twin, out in (("torch", out_t), ("jax", out_j))}
    for twin, errs in against_ref.items():
        record(name, f"ref64->{twin}", errs)
    unfinite = {twin: names for twin, out in (("torch", out_t), ("jax", out_j)) if (names := non_finite(out))}
    bad = {k: v for k, v in {**failures(errors, FLOAT32_TOL),
                             **{f"{t} vs ref {k}": v for t, e in against_ref.items()
                                for k, v in failures(e, FLOAT32_TOL).items()}}.items()}
    assert not bad and not unfinite, f"{name}: errors above {FLOAT32_TOL}: {bad}; NaN or inf in: {unfinite or 'none'}"


def test_reference_sees_each_option():
    """The options change the reference's output (a twin that ignored one would fail above):
    turning each off on the same weights moves the attention maps or the pooled features by
    over 100x the tolerance."""
    def moved(name, changes):
        tm, _, weights = pair(name, "torch")
        images = random_images(tm.cfg, 2)
        _, pooled, _, maps = reference_eva.forward(weights, tm.cfg, images)
        for change in changes:
            _, pooled2, _, maps2 = reference_eva.forward(weights, tm.cfg.replace(**change), images)
            shift = max(rel_error(pooled2, pooled), *(rel_error(a, b) for a, b in zip(maps2, maps)))
            assert shift > 100 * FLOAT32_TOL, (name, change, shift)

    moved("eva02-packed-swiglu", [dict(ref_feat_shape=None), dict(use_rot_pos_emb=False), dict(rope_grid_offset=1.0)])
    moved("dinov3", [dict(rope_rotate_half=False), dict(global_pool="token"), dict(rope_temperature=10.0),
                     dict(norm_eps=1e-6)])


# The rows whose options change the backward pass's parameters: fused qkv with q/v biases and
# packed SwiGLU; q/k/v projections, split SwiGLU and its LayerNorm; DINOv3's rotary embedding,
# registers and LayerScale. (dinov3-qkvb-swiglu, once here, holds no parameter kind these lack.)
GRAD_GRID = ["eva02-packed-swiglu", "eva02-split-qkv", "dinov3"]


@pytest.mark.parametrize("name", GRAD_GRID)
def test_gradients(record, name):
    source = source_of(name)
    tm, jm, _ = pair(name, source)
    images, labels = random_images(tm.cfg, 4), labels_for(tm.cfg, 4)
    loss_t, grads_t = torch_grads(tm, images, labels)
    loss_j, grads_j = jax_grads(jm, images, labels)
    assert max(np.abs(grads_t[k]).max() for k in grads_t if k.startswith("blocks_0/")) > 1e-4
    errors = compare_weights(grads_j, grads_t) if source == "torch" else compare_weights(grads_t, grads_j)
    record(name, f"{source}->{'jax' if source == 'torch' else 'torch'}", {"grads": max(errors.values())})
    assert rel_error(loss_j, loss_t) <= FLOAT32_TOL
    assert not failures(errors, FLOAT32_TOL)
    for k in grads_t:  # each tensor against its own scale, so a mis-mapped small one cannot hide
        own = np.abs(grads_t[k] - grads_j[k]).max() / max(np.abs(grads_t[k]).max(), 1e-30)
        assert own < 1e-4, f"{name}: {k} differs by {own:.1e} of its own scale"


@pytest.mark.parametrize("preset,source", [(EVA02, "torch"), (DINOV3, "jax")])
def test_full_size(record, preset, source):
    tm, jm, _ = build_pair(preset, source)
    images = random_images(tm.cfg, 2)
    out_t, out_j = run_torch(tm, images), run_jax(jm, images)
    errors = compare(out_j, out_t) if source == "torch" else compare(out_t, out_j)
    record(preset, f"{source}->{'jax' if source == 'torch' else 'torch'}", errors)
    assert not failures(errors, FLOAT32_TOL) and not non_finite(out_t) and not non_finite(out_j), errors
