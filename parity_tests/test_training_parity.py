"""Training-trajectory parity: the two training loops, from the same initial weights and the
same batches (dropout and drop path off, float32), take the same steps.

Both loops run for real (`train()` of each twin, on digits at 8x8) with MixUp, CutMix, label
smoothing, gradient accumulation, clipping and the warmup/cosine schedule all active, so any
difference in the recipe's semantics shows in the loss curves and the checkpoints; once more with
layer-wise learning-rate decay (--layer-decay)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import vit_jax
import vit_torch
from parity_tests.harness import FLOAT32_TOL, rel_error
from vit_common import get_config, read_checkpoint, save_npz
from vit_common.formats.run_folder import run_checkpoint_steps
from vit_common.train.recipe import parse_train_args

RECIPE = ["--img-size", "8", "--batch-size", "64", "--epochs", "1", "--lr", "2e-3",
          "--warmup-epochs", "0.25", "--clip-grad-norm", "1.0", "--grad-accum-steps", "2", "--label-smoothing", "0.1",
          "--mixup-alpha", "0.8", "--cutmix-alpha", "1.0", "--log-every", "1", "--checkpoint-every", "1",
          "--keep-checkpoints", "100", "--drop-rate", "0", "--drop-path-rate", "0", "--weight-decay", "0.05",
          "--pad-crop", "0"]  # fixed here, not inherited from the digits preset, which may be retuned
# Tiny models of each family at 8x8 px. Swin: a 4x4 grid of 2x2 windows with shifted windows and
# their mask in stage 0, a patch merging, then one window in stage 1.
ARCHS = {
    "vit": ["--model", "vit_tiny_patch16_224", "--patch-size", "4",
            "--model-args", '{"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "global_pool": "token"}'],
    "swin": ["--model", "swin_tiny_patch4_window7_224", "--patch-size", "2",
             "--model-args", '{"embed_dim": 16, "depths": [2, 2], "num_heads": [2, 2], "window_size": 2, "mlp_ratio": 2.0}'],
}


# The trajectory cases: an architecture and the flags added to the recipe. Each architecture and
# each optimiser (plain AdamW, layer-wise decay) runs the whole loop once: a third run (ViT with
# layer decay, or Swin without) took the same path through both. Swin takes layer decay for its
# stage-wise layer ids, the harder mapping (test_layer_decay_scales_each_parameters_first_step
# checks each parameter's factor for both architectures).
CASES = {"vit": ("vit", []), "swin_layer_decay": ("swin", ["--layer-decay", "0.75"])}


def _config(workdir, *extra, arch="vit"):
    return parse_train_args(RECIPE + ARCHS[arch] + ["--workdir", str(workdir), *extra])


def _losses(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def _jax_params(workdir, step):
    return read_checkpoint(workdir / "checkpoints" / str(step)).weights


def _torch_params(workdir, step, cfg):
    model = vit_torch.build_model(cfg)
    model.load_state_dict(torch.load(run_checkpoint_steps(workdir / "checkpoints")[step], weights_only=True)["model"])
    return vit_torch.to_canonical(model)


@pytest.fixture(scope="module", params=sorted(CASES))
def runs(request, tmp_path_factory):
    from vit_jax.train import train as train_jax
    from vit_torch.train import train as train_torch

    arch, extra = CASES[request.param]
    tmp = tmp_path_factory.mktemp(f"trajectory_{request.param}")
    cfg = _config(tmp, arch=arch).model_config().replace(num_classes=10, in_chans=1)
    init = tmp / "init.npz"
    save_npz(init, vit_jax.to_canonical(vit_jax.build_model(cfg, rngs=nnx.Rngs(7))), cfg)
    train_jax(_config(tmp / "jax", "--init", str(init), *extra, arch=arch), show_progress=False)
    train_torch(_config(tmp / "torch", "--framework", "torch", "--init", str(init), *extra, arch=arch),
                show_progress=False)
    for twin in ("jax", "torch"):  # the runs really had the case's recipe, and saved it
        saved = json.loads((tmp / twin / "config.json").read_text())["train"]
        assert saved["layer_decay"] == (0.75 if "--layer-decay" in extra else None), (request.param, twin)
    return tmp, cfg


def test_loss_curves_agree_step_by_step(runs):
    tmp, _ = runs
    jax_losses, torch_losses = _losses(tmp / "jax"), _losses(tmp / "torch")
    assert len(jax_losses) == 22 and jax_losses.keys() == torch_losses.keys()  # 1,437 images / 64
    worst = np.max([abs(jax_losses[s] - torch_losses[s]) / abs(jax_losses[s]) for s in jax_losses])  # NaN propagates
    # Measured 6.8e-7 (2-core Xeon, 2026-12-07): float32 sums in another order, compounded over 22
    # steps of AdamW. The float32 contract's 1e-5 leaves ~15x for other CPUs' orders of summation.
    assert worst <= FLOAT32_TOL, worst


@pytest.mark.parametrize("step", [1, 2, 3])
def test_parameters_after_the_first_steps_agree(runs, step):
    # Step 1 applies update 0, which the warmup runs at lr 0 (as optax and big_vision do): its
    # parameters equal the initial ones in both twins. Steps 2 and 3 are the first real moves.
    tmp, cfg = runs
    ours, theirs = _jax_params(tmp / "jax", step), _torch_params(tmp / "torch", step, cfg)
    assert ours.keys() == theirs.keys()
    errors = {k: rel_error(ours[k], theirs[k]) for k in ours}
    assert max(errors.values()) <= FLOAT32_TOL, sorted(errors.items(), key=lambda kv: -kv[1])[:3]
    if step == 1:
        with np.load(tmp / "init.npz") as init:
            for k in ours:
                np.testing.assert_array_equal(ours[k], init[k], err_msg=k)
    else:
        with np.load(tmp / "init.npz") as init:
            assert any(not np.array_equal(ours[k], init[k]) for k in ours)


def test_the_schedules_are_the_same_numbers():
    from vit_jax.train.optim import learning_rate_schedule as jax_schedule
    from vit_torch.train.optim import learning_rate_schedule as torch_schedule

    for extra in ([], ["--warmup-epochs", "0"], ["--warmup-epochs", "3", "--epochs", "4", "--min-lr", "0"]):
        config = parse_train_args(RECIPE + ARCHS["vit"] + extra)
        ours, theirs = jax_schedule(config, 22), torch_schedule(config, 22)
        for count in range(config.epochs * 22 + 3):
            assert abs(float(ours(count)) - theirs(count)) <= 1e-6 * config.lr, (extra, count)


@pytest.mark.parametrize("name, model_args", [
    ("vit_tiny_patch16_224", {"embed_dim": 32, "depth": 2, "num_heads": 2}),
    ("vit_tiny_patch16_224", {"embed_dim": 32, "depth": 1, "num_heads": 2, "global_pool": "map", "representation_size": 16}),
    ("swin_tiny_patch4_window7_224", {"embed_dim": 16, "depths": [2, 2], "num_heads": [2, 2], "window_size": 2}),
])
def test_weight_decay_falls_on_the_same_parameters(name, model_args):
    from vit_jax.train.optim import decay_mask
    from vit_torch.train.optim import decayed_parameters

    cfg = get_config(name, img_size=8, patch_size=2, num_classes=10, **model_args)
    # Each parameter filled with 1.0 where it is decayed, 0.0 where not, then read in canonical names.
    jax_model = vit_jax.build_model(cfg, rngs=nnx.Rngs(0))
    params = nnx.state(jax_model, nnx.Param)
    flags = jax.tree.map(lambda p, m: np.full(np.shape(p), float(m), np.float32),
                         nnx.to_pure_dict(params), decay_mask(nnx.to_pure_dict(params)))
    nnx.replace_by_pure_dict(params, flags)
    nnx.update(jax_model, params)
    jax_flags = vit_jax.to_canonical(jax_model)
    torch_model = vit_torch.build_model(cfg)
    decayed = {id(p) for p in decayed_parameters(torch_model)[0]}
    with torch.no_grad():
        for p in torch_model.parameters():
            p.fill_(float(id(p) in decayed))
    torch_flags = vit_torch.to_canonical(torch_model)
    assert jax_flags.keys() == torch_flags.keys()
    for k in jax_flags:
        np.testing.assert_array_equal(jax_flags[k], torch_flags[k], err_msg=k)
    assert {k for k, v in jax_flags.items() if v.all()} == {k for k in jax_flags if k.endswith("kernel")}


LAYER_DECAY_MODELS = {  # every kind of parameter: tokens, blocks, pooling heads, Swin's stages and merging
    "vit": ("vit_tiny_patch16_224", {"embed_dim": 32, "depth": 3, "num_heads": 2}),
    "vit_map": ("vit_tiny_patch16_224", {"embed_dim": 32, "depth": 1, "num_heads": 2, "global_pool": "map",
                                         "representation_size": 16}),
    "deit": ("deit_tiny_distilled_patch16_224", {"embed_dim": 32, "depth": 2, "num_heads": 2}),
    "swin": ("swin_tiny_patch4_window7_224",
             {"embed_dim": 16, "depths": [2, 2], "num_heads": [2, 2], "window_size": 2}),
}


def _first_moves(cfg, config, grads):
    """Each twin's parameter moves, in canonical names, over its first two AdamW updates from zero
    weights with the same gradients both times. Update 0 runs at lr 0 (the warmup) and only fills
    the moments; update 1 then moves each weight by -lr * scale * g / (|g| + eps): Adam's first
    step is sign-like, and zero weights take no weight decay."""
    import optax

    from vit_common.weights import FLAX
    from vit_jax.train.optim import learning_rate_schedule as jax_schedule, make_optimizer as jax_optimizer, path_name
    from vit_torch.train.optim import (learning_rate_schedule as torch_schedule, make_optimizer as torch_optimizer,
                                       set_learning_rate)

    zeros = {k: np.zeros_like(v) for k, v in grads.items()}
    # The JAX model's own parameter tree (its shapes only: nothing to initialise), filled by name.
    tree = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: vit_jax.build_model(cfg, rngs=nnx.Rngs(0))), nnx.Param))

    def fill(weights):
        flat = FLAX.export(weights, cfg)
        return jax.tree_util.tree_map_with_path(lambda p, _: jnp.asarray(flat[path_name(p)]), tree)

    jax_grads, params = fill(grads), fill(zeros)
    tx = jax_optimizer(config, steps_per_epoch=22)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        updates, opt_state = tx.update(jax_grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(2):
        params, opt_state = step(params, opt_state)
    jax_moves = FLAX.import_({path_name(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(params)}, cfg)

    torch_model = vit_torch.load_canonical_(vit_torch.build_model(cfg), zeros)
    torch_grads = vit_torch.load_canonical_(vit_torch.build_model(cfg), grads)
    for p, g in zip(torch_model.parameters(), torch_grads.parameters()):
        p.grad = g.detach().clone()
    optimizer, schedule = torch_optimizer(torch_model, config), torch_schedule(config, 22)
    for update in range(2):  # as the train step does
        set_learning_rate(optimizer, schedule(update))
        optimizer.step()
    assert float(jax_schedule(config, 22)(1)) == pytest.approx(schedule(1), rel=1e-6)
    return jax_moves, vit_torch.to_canonical(torch_model), schedule(1)


@pytest.mark.parametrize("model", sorted(LAYER_DECAY_MODELS))
def test_layer_decay_scales_each_parameters_first_step(model):
    from vit_common.train.layer_decay import layer_scales
    from vit_common.weights.canonical import canonical_shapes, links

    name, model_args = LAYER_DECAY_MODELS[model]
    cfg = get_config(name, img_size=8, patch_size=2, num_classes=10, mlp_ratio=2.0, **model_args)
    rng = np.random.default_rng(0)  # |g| in [0.5, 1.5]: g / (|g| + 1e-8) is sign(g) within 2e-8
    grads = {k: (rng.choice([-1.0, 1.0], s) * rng.uniform(0.5, 1.5, s)).astype(np.float32)
             for k, s in canonical_shapes(cfg).items()}
    base = RECIPE + ["--clip-grad-norm", "none"]  # clipping is in JAX's optimizer but PyTorch's train step
    plain = _first_moves(cfg, parse_train_args(base), grads)
    decayed = _first_moves(cfg, parse_train_args(base + ["--layer-decay", "0.75"]), grads)
    # The expected factor of each canonical entry, from the module the link table ties it to.
    module_scale = layer_scales([link.module for link in links(cfg)], 0.75)
    expected = {k: module_scale[link.module] for link in links(cfg) for k in link.canonical_shapes()}
    assert expected.keys() == grads.keys() and len(set(expected.values())) >= 3  # the factors really differ
    lr = plain[2]
    for twin, moves_plain, moves_decayed in (("jax", plain[0], decayed[0]), ("torch", plain[1], decayed[1])):
        for k, g in grads.items():
            # Sign-like within the precision of Adam's bias correction: optax computes 1 - 0.999**2
            # in float32, good to 3e-5 (the PyTorch twin computes it in float64).
            sign_like = np.max(np.abs(moves_plain[k] / (-lr * np.sign(g)) - 1))  # NaN fails the asserts
            ratio = np.max(np.abs(moves_decayed[k] / moves_plain[k] / expected[k] - 1))
            assert sign_like <= 1e-4 and ratio <= 1e-6, (twin, k, sign_like, ratio)


def _draws(tm, jm, draws: int, seed: int = 3):
    """Logits of one image repeated `draws` times in training mode: every copy draws its own masks."""
    from parity_tests.harness import nhwc_to_nchw, random_images

    image = np.repeat(random_images(jm.cfg, 1, seed=seed), draws, axis=0)
    tm.train()
    jm.train()
    torch.manual_seed(0)
    with torch.no_grad():
        torch_logits = tm(torch.from_numpy(nhwc_to_nchw(image))).numpy().astype(np.float64)
    jax_logits = np.asarray(nnx.jit(lambda m, x: m(x))(jm, image), np.float64)
    return jax_logits, torch_logits


TINY_STOCHASTIC = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2, num_classes=10)


def test_drop_path_outcomes_have_the_same_law():
    """Drop path keeps or drops whole residual branches, so one image's logits take one of a few
    values, one per pattern of dropped branches. Depth 3 at rate 0.5 gives the blocks rates
    0, 0.25, 0.5: four random branches, 16 patterns. Each pattern's frequency must be the same in
    both twins, and equal to its probability."""
    from parity_tests.harness import build_pair

    tm, jm, _ = build_pair("vit_tiny_patch16_224", "jax", drop_path_rate=0.5, **TINY_STOCHASTIC)
    draws = 8192
    jax_logits, torch_logits = _draws(tm, jm, draws)

    def frequencies(logits):
        keys, counts = np.unique(np.round(logits[:, :3], 3), axis=0, return_counts=True)
        return {tuple(k): c / draws for k, c in zip(keys, counts)}

    ours, theirs = frequencies(jax_logits), frequencies(torch_logits)
    assert len(ours) == 16 and ours.keys() == theirs.keys()
    expected = sorted(a * b * c * d for a in (0.75, 0.25) for b in (0.75, 0.25) for c in (0.5, 0.5) for d in (0.5, 0.5))
    for name, freq in (("jax", ours), ("torch", theirs)):
        got = sorted(freq.values())
        assert all(abs(g - e) <= 5 * np.sqrt(e * (1 - e) / draws) for g, e in zip(got, expected)), (name, got, expected)
    for key in ours:
        p = (ours[key] + theirs[key]) / 2
        assert abs(ours[key] - theirs[key]) <= 5 * np.sqrt(2 * p * (1 - p) / draws), key


DROPOUTS = {  # timm's fields: before the head, after the position embedding, after attention's
    # projection and in the MLPs, on the attention probabilities; then all four at once.
    "drop_rate": dict(drop_rate=0.2),
    "pos_drop_rate": dict(pos_drop_rate=0.2),
    "proj_drop_rate": dict(proj_drop_rate=0.2),
    "attn_drop_rate": dict(attn_drop_rate=0.2),
    "all": dict(drop_rate=0.2, pos_drop_rate=0.2, proj_drop_rate=0.2, attn_drop_rate=0.2),
}


@pytest.mark.parametrize("dropout", list(DROPOUTS))
def test_dropout_has_the_same_statistics(dropout):
    """Element-wise dropout draws different masks in the two frameworks, so the twins agree in
    law: over many draws for one image, each logit's mean and spread must match, for each of
    timm's dropout fields alone and for all together. (MixUp and CutMix come from the shared
    loader: the trajectory tests above feed both twins the very same mixed batches.)"""
    from parity_tests.harness import build_pair

    tm, jm, _ = build_pair("vit_tiny_patch16_224", "jax", **DROPOUTS[dropout], **TINY_STOCHASTIC)
    draws = 8192
    jax_logits, torch_logits = _draws(tm, jm, draws)
    standard_error = np.sqrt(jax_logits.var(0) / draws + torch_logits.var(0) / draws)
    z = np.abs(jax_logits.mean(0) - torch_logits.mean(0)) / standard_error
    assert z.max() < 5, z
    # The spread's standard error is about 1/sqrt(2 * draws) = 0.8% relative.
    spread_ratio = jax_logits.std(0) / torch_logits.std(0)
    assert np.all(np.abs(spread_ratio - 1) < 0.04), spread_ratio
    assert np.all(torch_logits.std(0) > 0.01)  # the regulariser really is on
