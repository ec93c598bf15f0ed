"""The jitted train and eval steps, with explicit shardings over a device mesh."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


# XLA:CPU runs OptimizationBarrierExpander ("cse_barrier_expander") early in its pipeline: it drops
# the opt-barriers through which jax.checkpoint (nnx.remat, prevent_cse=True) keeps a block's
# backward recomputation apart from its forward, so later passes merge the two again and schedule
# the recomputation early. Activation checkpointing of unrolled blocks then saves nothing and costs
# extra buffers (ViT-B/16 train step at batch 32: XLA temp 6.88 -> 7.74 GiB, docs/large-models.md).
# Keeping the barriers (they are no-ops at run time) restores the saving; without remat the step
# has no barriers and compiles the same. Other backends keep theirs until scheduling.
CPU_COMPILER_OPTIONS = {"xla_disable_hlo_passes": "cse_barrier_expander"}


def compiler_options(devices) -> dict | None:
    """The XLA options of the jitted train step on these devices (CPU_COMPILER_OPTIONS on CPUs)."""
    return CPU_COMPILER_OPTIONS if all(d.platform == "cpu" for d in devices) else None


def make_mesh() -> Mesh:
    """All devices (of all hosts) on one 'data' axis, host by host: host k's devices then hold the
    k-th part of every global batch, the part its loader reads."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), ("data",))


def state_shardings(mesh: Mesh, state, fsdp: bool):
    """Replicated (data parallel), or FSDP: each array split over the devices along its largest
    axis that divides evenly (small or indivisible arrays stay replicated)."""
    n = mesh.devices.size

    def spec(x):
        if not fsdp or n == 1 or np.ndim(x) == 0 or np.size(x) < 2**14:
            return NamedSharding(mesh, P())
        axes = sorted(range(np.ndim(x)), key=lambda a: -np.shape(x)[a])
        axis = next((a for a in axes if np.shape(x)[a] % n == 0), None)
        if axis is None:
            return NamedSharding(mesh, P())
        return NamedSharding(mesh, P(*[("data" if a == axis else None) for a in range(np.ndim(x))]))

    return jax.tree.map(spec, state)


def _is_key(x) -> bool:
    return jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def keys_to_data(tree):
    """Typed PRNG keys -> raw uint32 key data, so checkpoints hold plain arrays."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def initial_state(params, rest_template, tx, ema: bool = False) -> dict:
    """The train state the step takes: step, parameters, the rest (RNG keys as data), optimizer
    state, the non-finite run counter (see Steps.train_fn) and, with EMA, the averaged weights."""
    state = dict(step=jnp.int32(0), params=params, rest=keys_to_data(rest_template), opt_state=tx.init(params),
                 bad_run=jnp.int32(0))
    if ema:
        state["ema"] = jax.tree.map(jnp.copy, params)
    return state


def data_to_keys(tree, template):
    return jax.tree.map(lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x,
                        tree, template)


def soft_cross_entropy(logits, targets):
    return -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1)


@dataclasses.dataclass
class Steps:
    """train(state, batch) -> (state, metrics) and evaluate(state, batch) -> metrics, jitted."""

    graphdef: Any
    tx: optax.GradientTransformation
    accum: int
    ema_decay: float | None
    rest_template: Any  # the model's non-parameter state (RNG streams), with typed keys
    teacher: Any = None  # graphdef of a teacher model for DeiT hard distillation

    def loss(self, params, rest, teacher_state, images, labels, targets):
        model = nnx.merge(self.graphdef, params, rest)
        out = model(images)
        if isinstance(out, tuple):  # distilled model in training: (class logits, distillation logits)
            cls_logits, dist_logits = out
            if self.teacher is not None:  # DeiT hard distillation: the teacher's argmax is the label
                teacher = nnx.merge(self.teacher, teacher_state)
                hard = jax.nn.one_hot(jnp.argmax(teacher(images), -1), dist_logits.shape[-1])
                loss = 0.5 * soft_cross_entropy(cls_logits, targets) + 0.5 * soft_cross_entropy(dist_logits, hard)
            else:
                loss = 0.5 * (soft_cross_entropy(cls_logits, targets) + soft_cross_entropy(dist_logits, targets))
            logits = (cls_logits + dist_logits) / 2
        else:
            logits = out
            loss = soft_cross_entropy(logits, targets)
        correct = jnp.sum(jnp.argmax(logits, -1) == labels)
        return jnp.mean(loss), (correct, nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.Param))))

    # Both are speed choices on XLA:CPU with the same numbers within rounding (docs/benchmarks.md);
    # tests flip them to compare against the plain formulation.
    scan_single_batch = False  # lax.scan over micro-batches even when there is one
    softmax_custom_jvp = True  # differentiate softmax by its custom JVP rule, not through its ops

    def train_fn(self, state, batch, teacher_state):
        with jax.softmax_custom_jvp(self.softmax_custom_jvp):
            return self._train_fn(state, batch, teacher_state)

    def _train_fn(self, state, batch, teacher_state):
        grad_fn = jax.value_and_grad(self.loss, has_aux=True)

        def micro_step(carry, mb):
            grads, loss_sum, correct, rest = carry
            (loss, (c, rest)), g = grad_fn(state["params"], rest, teacher_state, mb["image"], mb["label"], mb["target"])
            return (jax.tree.map(jnp.add, grads, g), loss_sum + loss, correct + c, rest), None

        zeros = jax.tree.map(jnp.zeros_like, state["params"])
        rest = data_to_keys(state["rest"], self.rest_template)
        init = (zeros, jnp.float32(0), jnp.int32(0), rest)
        if self.accum == 1 and not self.scan_single_batch:  # a loop-free step: XLA:CPU fuses it better
            (grads, loss_sum, correct, rest), _ = micro_step(init, batch)
        else:
            micro = jax.tree.map(lambda x: x.reshape(self.accum, -1, *x.shape[1:]), batch)
            (grads, loss_sum, correct, rest), _ = jax.lax.scan(micro_step, init, micro)
        rest = keys_to_data(rest)
        grads = jax.tree.map(lambda g: g / self.accum, grads)
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        # The guard counts every step on the device (no host sync); the loop reads bad_run at log
        # steps, so a run of bad steps that ends between two log steps is still seen.
        bad_run = jnp.maximum(state["bad_run"], opt_state.notfinite_count)
        new = dict(state, step=state["step"] + 1, params=params, rest=rest, opt_state=opt_state, bad_run=bad_run)
        if self.ema_decay is not None:
            d = self.ema_decay
            new["ema"] = jax.tree.map(lambda e, p: d * e + (1 - d) * p, state["ema"], params)
        metrics = dict(loss=loss_sum / self.accum, correct=correct, grad_norm=optax.tree.norm(grads),
                       bad_steps=opt_state.notfinite_count, bad_run=bad_run, finite=opt_state.last_finite)
        return new, metrics

    def eval_fn(self, params, rest, batch):
        model = nnx.merge(self.graphdef, params, data_to_keys(rest, self.rest_template))
        model.eval()
        logits = model(batch["image"])
        loss = soft_cross_entropy(logits, jax.nn.one_hot(batch["label"], logits.shape[-1]))
        mask = batch["mask"]
        return dict(loss_sum=jnp.sum(jnp.where(mask, loss, 0.0)),
                    correct=jnp.sum(jnp.where(mask, jnp.argmax(logits, -1) == batch["label"], False)),
                    count=jnp.sum(mask))

    def compile(self, state_sharding, batch_sharding, replicated):
        """Jitted steps with explicit shardings; the train state's buffers are donated."""
        train = jax.jit(self.train_fn, in_shardings=(state_sharding, batch_sharding, replicated),
                        out_shardings=(state_sharding, replicated), donate_argnums=0,
                        compiler_options=compiler_options(batch_sharding.mesh.devices.flat))
        evaluate = jax.jit(self.eval_fn, in_shardings=(state_sharding["params"], state_sharding["rest"], batch_sharding),
                           out_shardings=replicated)
        return train, evaluate
