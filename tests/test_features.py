"""Training features checked against what they promise: the EMA of the weights (both twins), JAX
bf16 mixed precision, DeiT hard distillation (both twins), FSDP sharding (JAX).

The runs are real train() calls on digits at 8x8 (the tiny model of tests/train_runs.py); one
float32 JAX run serves as the bf16 baseline and, with its head permuted, as the teacher."""
import copy
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.train_runs import ROOT, TINY, train_env
from vit_common import read_checkpoint, save_npz
from vit_common.train.recipe import parse_train_args

# One block (TINY has two): half the compile time. Checkpoints at epoch ends only.
FAST = ["--checkpoint-every", "1000", "--model-args", '{"embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}']


def _config(workdir, *extra):
    return parse_train_args(TINY + FAST + ["--workdir", str(workdir), *extra])


def _train_jax(workdir, *extra):
    from vit_jax.train import train

    return train(_config(workdir, *extra), show_progress=False)


def _train_losses(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return np.array([r["loss"] for r in rows if r["kind"] == "train"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A float32 and a bf16 JAX run of the same recipe (2 epochs, 88 steps)."""
    tmp = tmp_path_factory.mktemp("features")
    summaries = {dtype: _train_jax(tmp / dtype, "--dtype", dtype) for dtype in ("float32", "bfloat16")}
    return tmp, summaries


# --- EMA: ema_t = d * ema_{t-1} + (1 - d) * p_t, ema_0 = p_0 ------------------------------------

DECAY, EMA_STEPS = 0.7, 5


def _batches(n=EMA_STEPS, batch=8):
    rng = np.random.default_rng(0)
    for _ in range(n):
        labels = rng.integers(0, 10, batch)
        yield dict(image=rng.uniform(-1, 1, (batch, 8, 8, 1)).astype(np.float32), label=labels.astype(np.int32),
                   target=np.eye(10, dtype=np.float32)[labels], mask=np.ones(batch, bool))


def _closed_form_ema(history):
    """d^T p_0 + sum_t (1 - d) d^(T - t) p_t in float64, for the parameters p_0..p_T."""
    t_last = len(history) - 1
    weights = [DECAY ** t_last] + [(1 - DECAY) * DECAY ** (t_last - t) for t in range(1, t_last + 1)]
    return {k: sum(w * np.asarray(h[k], np.float64) for w, h in zip(weights, history)) for k in history[0]}


def _assert_ema(ema, history):
    want = _closed_form_ema(history)
    assert ema.keys() == want.keys()
    moved = 0.0
    for k in want:
        np.testing.assert_allclose(ema[k], want[k], rtol=1e-6, atol=1e-8, equal_nan=False, err_msg=k)
        moved = max(moved, float(np.max(np.abs(ema[k] - history[-1][k]))))
    assert moved > 1e-3  # the EMA really lags the weights: comparing to them would fail


def _ema_config():
    # A high lr so the weights move; dropout and drop path off; 4 steps per epoch.
    return parse_train_args(TINY + FAST + ["--ema-decay", str(DECAY), "--lr", "0.05", "--warmup-epochs", "0.25",
                                           "--drop-path-rate", "0", "--epochs", "3"])


def test_jax_ema_is_the_closed_form_average():
    import jax.numpy as jnp
    from flax import nnx

    from vit_common.weights import flatten_params
    from vit_jax.models import build_model
    from vit_jax.train.optim import make_optimizer
    from vit_jax.train.step import Steps, initial_state

    config = _ema_config()
    model = build_model(config.model_config().replace(num_classes=10, in_chans=1), rngs=nnx.Rngs(params=0, dropout=1))
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # as vit_jax/train/loop.py builds the state
    rest_template, params = nnx.to_pure_dict(rest), nnx.to_pure_dict(params)
    tx = make_optimizer(config, steps_per_epoch=4)
    state = initial_state(params, rest_template, tx, ema=True)
    train_step = jax.jit(Steps(graphdef, tx, 1, config.ema_decay, rest_template).train_fn)
    flat = lambda tree: flatten_params(jax.device_get(tree))
    history = [flat(state["params"])]
    for batch in _batches():
        state, _ = train_step(state, batch, {})
        history.append(flat(state["params"]))
    _assert_ema(flat(state["ema"]), history)


def test_torch_ema_is_the_closed_form_average():
    import torch

    from vit_torch.models import build_model
    from vit_torch.train.optim import learning_rate_schedule, make_optimizer
    from vit_torch.train.step import Steps, to_torch

    config = _ema_config()
    torch.manual_seed(0)
    model = build_model(config.model_config().replace(num_classes=10, in_chans=1))
    ema = copy.deepcopy(model).requires_grad_(False)
    steps = Steps(model, make_optimizer(model, config), learning_rate_schedule(config, 4), 1, config.clip_grad_norm,
                  None, ema=ema, ema_decay=config.ema_decay)
    flat = lambda m: {k: v.detach().numpy().copy() for k, v in m.named_parameters()}
    history = [flat(model)]
    for batch in _batches():
        steps.train(to_torch(batch, torch.device("cpu")))
        history.append(flat(model))
    _assert_ema(flat(ema), history)


# --- bf16 mixed precision (JAX) ------------------------------------------------------------------

def test_jax_bf16_keeps_float32_state_and_trains_like_float32(runs):
    import orbax.checkpoint as ocp

    tmp, summaries = runs
    step = tmp / "bfloat16" / "checkpoints" / "88" / "state"
    meta = ocp.StandardCheckpointer().metadata(step)
    tree = getattr(getattr(meta, "item_metadata", meta), "tree", meta)
    dtypes = {jax.tree_util.keystr(path): np.dtype(leaf.dtype) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
    floats = {k: d for k, d in dtypes.items() if np.issubdtype(d, np.floating) or d == jax.numpy.bfloat16}
    params = [k for k in floats if k.startswith("['params']")]
    moments = [k for k in floats if "['mu']" in k or "['nu']" in k]
    assert len(params) == 20 and len(moments) == 2 * 20  # the one-block ViT, and AdamW's two moments of each
    assert all(d == np.float32 for d in floats.values()), {k: d for k, d in floats.items() if d != np.float32}

    losses = _train_losses(tmp / "bfloat16")
    assert len(losses) == 88 and np.all(np.isfinite(losses))
    assert losses[-20:].mean() < losses[:10].mean() - 0.5  # from ln 10 = 2.30 to about 1.3
    fp32, bf16 = (read_checkpoint(tmp / d / "final.npz").weights for d in ("float32", "bfloat16"))
    assert max(float(np.max(np.abs(fp32[k] - bf16[k]))) for k in fp32) > 1e-3  # bf16 really computed in bf16
    accuracy = {d: s["test_accuracy"] for d, s in summaries.items()}
    assert accuracy["float32"] > 0.6 and abs(accuracy["bfloat16"] - accuracy["float32"]) <= 0.05, accuracy


# --- DeiT hard distillation ----------------------------------------------------------------------
# The teacher is the float32 run with its head columns rolled by one: it predicts (its class + 1)
# mod 10, which no label says. The distillation head can only agree with it by learning from it;
# the class head, trained on the labels, keeps disagreeing.

def _shifted_teacher(runs):
    tmp, _ = runs
    path = tmp / "teacher_shifted.npz"
    if not path.exists():
        ckpt = read_checkpoint(tmp / "float32" / "final.npz")
        weights = dict(ckpt.weights, **{k: np.roll(ckpt.weights[k], 1, axis=-1) for k in ("head/kernel", "head/bias")})
        save_npz(path, weights, ckpt.config)
    return path


def _test_images():
    from vit_data import load_source, make_loader

    batch = next(make_loader(load_source("digits", "test"), img_size=8, in_chans=1, batch_size=400, seed=0,
                             train=False))
    return batch["image"][batch["mask"]]


def _head_predictions(model, images):
    """(class head, distillation head) argmax of a distilled model, or the head's for a plain one."""
    pooled = model.pool(model.forward_features(images))
    if model.head_dist is None:
        return np.asarray(model.head(pooled).argmax(-1))
    return np.asarray(model.head(pooled[:, 0]).argmax(-1)), np.asarray(model.head_dist(pooled[:, 1]).argmax(-1))


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_deit_distillation_head_learns_the_teacher(runs, tmp_path, framework):
    from flax import nnx

    import vit_jax

    teacher_path = _shifted_teacher(runs)
    args = ["--model", "deit_tiny_distilled_patch16_224", "--teacher", str(teacher_path), "--framework", framework]
    config = _config(tmp_path, *args)
    if framework == "torch":
        from vit_torch.train import train
    else:
        from vit_jax.train import train
    train(config, show_progress=False)

    images = _test_images()
    teacher = _head_predictions(vit_jax.create_model(checkpoint=teacher_path), images)
    labels_like = (teacher - 1) % 10  # what the unshifted teacher says
    before = vit_jax.build_model(config.model_config().replace(num_classes=10, in_chans=1), rngs=nnx.Rngs(0))
    before.eval()
    _, dist_before = _head_predictions(before, images)
    cls_after, dist_after = _head_predictions(vit_jax.create_model(checkpoint=tmp_path / "final.npz"), images)
    agree = lambda a, b: float(np.mean(a == b))
    assert agree(dist_before, teacher) < 0.3  # a zero head: chance
    assert agree(dist_after, teacher) > 0.5, agree(dist_after, teacher)  # labels alone would give < 0.3
    assert agree(cls_after, teacher) < 0.3 and agree(cls_after, labels_like) > 0.5  # the class head follows labels


# --- FSDP: parameters and optimizer moments really split over the devices -----------------------

FSDP_SCRIPT = r"""
import json, jax, jax.numpy as jnp, numpy as np
from flax import nnx
from vit_common.train.recipe import parse_train_args
from vit_jax.models import build_model
from vit_jax.train.optim import make_optimizer
from vit_jax.train.step import initial_state, make_mesh, state_shardings
config = parse_train_args(["--sharding", "fsdp", "--img-size", "8", "--patch-size", "4", "--batch-size", "8",
                           "--model-args", '{"embed_dim": 128, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}'])
model = build_model(config.model_config().replace(num_classes=10, in_chans=1), rngs=nnx.Rngs(0))
model.train()
graphdef, params, rest = nnx.split(model, nnx.Param, ...)
rest_template, params = nnx.to_pure_dict(rest), nnx.to_pure_dict(params)
tx = make_optimizer(config, 4)
state = initial_state(params, rest_template, tx)
mesh = make_mesh()
state = jax.device_put(state, state_shardings(mesh, state, fsdp=True))  # as vit_jax/train/loop.py does
out = {}
for path, x in jax.tree_util.tree_leaves_with_path(dict(params=state["params"], opt_state=state["opt_state"])):
    out[jax.tree_util.keystr(path)] = dict(shape=list(x.shape), nbytes=x.nbytes,
                                           per_device=sorted(s.data.nbytes for s in x.addressable_shards))
print("RESULT" + json.dumps(dict(devices=jax.device_count(), leaves=out)))
"""


def test_fsdp_splits_every_large_array_over_the_devices():
    n = 4
    result = subprocess.run([sys.executable, "-c", FSDP_SCRIPT], cwd=ROOT, env=train_env(devices=n),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("RESULT", 1)[1])
    assert report["devices"] == n
    sharded = 0
    for name, leaf in report["leaves"].items():
        size, shape = int(np.prod(leaf["shape"])), leaf["shape"]
        assert len(leaf["per_device"]) == n, name
        if size >= 2**14 and any(d % n == 0 for d in shape):  # large and divisible: an exact n-th each
            assert leaf["per_device"] == [leaf["nbytes"] // n] * n, (name, leaf)
            sharded += 1
        else:  # small or indivisible: replicated
            assert leaf["per_device"] == [leaf["nbytes"]] * n, (name, leaf)
    # qkv, proj, fc1, fc2 kernels of the one block, as parameters and as AdamW's mu and nu.
    assert sharded == 4 * 3, sharded
