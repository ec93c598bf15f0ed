"""Scanned blocks in JAX (scan_layers, big_vision's scan=True): the same function, gradients and
canonical weights as the unrolled model, and a scanned train.py run resumes bit-exactly."""
import shutil

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from tests.in_process import train_py  # noqa: E402
from tests.train_runs import TINY, copy_finished_run, final_weights, saved_steps, train_losses  # noqa: E402
from vit_common import get_config  # noqa: E402
from vit_jax.models import build_model  # noqa: E402
from vit_jax.models.blocks import DropRate  # noqa: E402
from vit_jax.weights import grads_to_canonical, load_canonical_, to_canonical  # noqa: E402

FAMILIES = {
    # Depth 2: a stack of more than one block is what the scan adds; deeper stacks repeat it.
    "vit": ("vit_tiny_patch16_224", dict(embed_dim=32, depth=2, num_heads=2, img_size=16, patch_size=8)),
    "eva": ("eva02_tiny_patch14_224", dict(embed_dim=32, depth=2, num_heads=2, img_size=16, patch_size=8)),
}
intermediates = nnx.jit(lambda m, x: m.forward_intermediates(x))  # compiled: eager NNX is slow to test
features = nnx.jit(lambda m, x: m.forward_features(x))


def _cfg(family, **kw):
    name, base = FAMILIES[family]
    return get_config(name, **{**base, "num_classes": 5, **kw})


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.isfinite(a).all()
    return np.abs(a - b).max() / max(1.0, np.abs(b).max())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_scanned_blocks_equal_unrolled_ones(family):
    cfg = _cfg(family)
    unrolled = build_model(cfg, rngs=nnx.Rngs(0))
    scanned = build_model(cfg, rngs=nnx.Rngs(0), scan_layers=True)
    # One stacked array per block parameter, the same initial weights as the unrolled model's.
    assert scanned.blocks.norm1.scale[...].shape == (cfg.depth, cfg.embed_dim)
    want = to_canonical(unrolled)
    got = to_canonical(scanned)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)

    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    w = jax.random.normal(jax.random.key(2), (2, 5))
    with jax.default_matmul_precision("highest"):
        for m in (unrolled, scanned):
            m.eval()
        a, b = intermediates(unrolled, x), intermediates(scanned, x)
        assert _rel(b.logits, a.logits) <= 1e-6
        assert len(b.hidden_states) == len(b.attentions) == cfg.depth
        for i in range(cfg.depth):
            assert _rel(b.hidden_states[i], a.hidden_states[i]) <= 1e-6
            assert _rel(b.attentions[i], a.attentions[i]) <= 1e-6

        loss = lambda m: jnp.sum(m(x) * w)  # noqa: E731
        for m in (unrolled, scanned):
            m.train()
        g_unrolled = grads_to_canonical(nnx.jit(nnx.grad(loss))(unrolled), cfg)
        g_scanned = grads_to_canonical(nnx.jit(nnx.grad(loss))(scanned), cfg)
        scanned.set_grad_checkpointing(True, "dots")  # remat and scan combine
        g_both = grads_to_canonical(nnx.jit(nnx.grad(loss))(scanned), cfg)
    assert g_scanned.keys() == g_unrolled.keys()
    for k in g_unrolled:
        # float32: the scan body is the same block, compiled once instead of per layer
        assert _rel(g_scanned[k], g_unrolled[k]) <= 1e-6, k
        assert _rel(g_both[k], g_unrolled[k]) <= 1e-6, k


def test_canonical_weights_load_into_a_scanned_model():
    cfg = _cfg("vit")
    rng = np.random.default_rng(0)
    weights = {k: (v + 0.02 * rng.standard_normal(v.shape)).astype(np.float32)
               for k, v in to_canonical(build_model(cfg, rngs=nnx.Rngs(0))).items()}
    unrolled = load_canonical_(build_model(cfg, rngs=nnx.Rngs(1)), weights)
    scanned = load_canonical_(build_model(cfg, rngs=nnx.Rngs(2), scan_layers=True), weights)
    back = to_canonical(scanned)
    for k in weights:
        np.testing.assert_array_equal(back[k], weights[k], err_msg=k)
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    unrolled.eval(), scanned.eval()
    with jax.default_matmul_precision("highest"):
        assert _rel(scanned(x), unrolled(x)) <= 1e-6


def test_scanned_stochastic_depth_keeps_each_layers_rate():
    cfg = _cfg("vit", depth=4, drop_path_rate=0.3)
    model = build_model(cfg, rngs=nnx.Rngs(0), scan_layers=True)
    rates = [v[...] for _, v in nnx.to_flat_state(nnx.state(model, DropRate))]
    assert len(rates) == 2  # drop_path1 and drop_path2, each stacked over the blocks
    for r in rates:
        np.testing.assert_allclose(np.asarray(r), cfg.drop_path_rates(), rtol=1e-6)
    x = jax.random.normal(jax.random.key(1), (8, 16, 16, 3))
    model.train()
    trained = features(model, x)
    model.eval()
    assert _rel(trained, features(model, x)) > 1e-3  # paths dropped in training only


def run_train(monkeypatch, capsys, workdir, *extra):
    """train.py in this process (tests/in_process.py; the runs are about scanning and resuming, not
    the process: a run starts from its config and workdir alone, as a resumed process does): its stdout."""
    capsys.readouterr()
    assert train_py(monkeypatch, *TINY, "--workdir", workdir, *extra) == 0
    return capsys.readouterr().out


def test_a_scanned_run_trains_as_the_unrolled_one_and_resumes_bit_exactly(tmp_path, monkeypatch, capsys):
    args = ["--epochs", "1", "--drop-path-rate", "0"]
    scanned = tmp_path / "scanned"
    run_train(monkeypatch, capsys, scanned, *args, "--scan-layers", "true")
    unrolled = tmp_path / "unrolled"
    run_train(monkeypatch, capsys, unrolled, *args)
    want, got = train_losses(unrolled), train_losses(scanned)
    assert want.keys() == got.keys()
    for step in want:  # float32; the same operations, compiled as one scanned body
        assert abs(got[step] - want[step]) / max(1.0, abs(want[step])) <= 1e-5, step
    w_unrolled, w_scanned = final_weights(unrolled), final_weights(scanned)  # canonical, per block
    assert w_unrolled.keys() == w_scanned.keys()
    for k in w_unrolled:
        if k.endswith("/key/bias"):  # zero true gradient (softmax ignores it): under Adam it follows rounding noise
            continue
        np.testing.assert_allclose(w_scanned[k], w_unrolled[k], rtol=0, atol=1e-4, equal_nan=False, err_msg=k)

    # The orbax checkpoints of the scanned run: resume from step 20, finish identically.
    resumed = copy_finished_run(scanned, tmp_path / "resumed")
    assert saved_steps(resumed) == [20, 40, 44]
    for step in (40, 44):
        shutil.rmtree(resumed / "checkpoints" / str(step))
    out = run_train(monkeypatch, capsys, resumed, *args, "--scan-layers", "true")
    assert "resumed from step 20" in out
    want = final_weights(scanned)
    got = final_weights(resumed)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert train_losses(resumed) == train_losses(scanned)
