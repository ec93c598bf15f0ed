"""Peak memory of one training step with and without activation checkpointing (--grad-checkpointing),
in both twins, each variant in its own process: ViT-B/16 at batch 32 by default.

    python bench/memory.py                      # ViT-B/16, batch 32, float32 (minutes on a CPU)
    python bench/memory.py --dry-run            # a tiny model at batch 4 (CI runs this)
    python bench/memory.py --model vit_large_patch16_224 --batch 8 --frameworks jax

One step = each twin's own train step (forward, loss, backward, clipping, AdamW), run once to warm
up (JAX compiles ahead of time; AdamW's state is allocated), then timed and measured: on a CPU the
process's peak resident memory during that second step (Linux: VmHWM, reset through
/proc/self/clear_refs just before it) and how far it rose above the resting state (parameters,
optimizer state, the batch); on a GPU the device allocator's peak. The deterministic measures:
JAX, XLA's own buffer plan of the compiled step (compiled.memory_analysis(): temporaries,
arguments, outputs); PyTorch, the bytes one forward saves for the backward pass (saved-tensor
hooks); both, the fixed state (weights, gradients, AdamW's two moments).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def _measure(step) -> dict:
    """The second call of step(): host peak RSS during it, its rise over the resting RSS, its time."""
    step()  # warm-up: compilation, optimizer state
    rest = _status_kib("VmRSS")
    _reset_peak()
    t = time.perf_counter()
    step()
    seconds = time.perf_counter() - t
    peak = _status_kib("VmHWM")
    return dict(peak_rss_gib=peak / 2**20, rise_gib=(peak - rest) / 2**20, step_s=seconds)


def _jax_child(cfg, batch: int, remat: str | None) -> dict:
    import jax

    from bench.train_step import jax_train_setup

    train, state, data = jax_train_setup(cfg, batch, remat=remat)  # the model's own copy is freed on return
    compiled = train.lower(state, data, {}).compile()
    state_bytes = 4 * sum(x.nbytes for x in jax.tree.leaves(state["params"]))  # weights, grads, AdamW
    box = [state]

    def step():
        box[0], metrics = compiled(box[0], data, {})
        jax.block_until_ready(metrics["loss"])

    out = _measure(step)
    out["state_gib"] = state_bytes / 2**30
    analysis = compiled.memory_analysis()
    if analysis is not None:  # XLA's own buffer plan: deterministic, unlike RSS
        out["xla_temp_gib"] = analysis.temp_size_in_bytes / 2**30
        out["xla_argument_gib"] = analysis.argument_size_in_bytes / 2**30
        out["xla_output_gib"] = analysis.output_size_in_bytes / 2**30
    stats = jax.local_devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        out["device_peak_gib"] = stats["peak_bytes_in_use"] / 2**30
    return out


def _saved_for_backward_bytes(steps, data) -> int:
    """Bytes of activations one forward + loss keeps for the backward pass: every distinct tensor
    storage autograd saves (torch.autograd.graph.saved_tensors_hooks) that is not a parameter, and
    under checkpointing the blocks' inputs, which torch.utils.checkpoint keeps to run them again
    (its own hooks take over inside a checkpointed block, so the outer hook sees nothing there)."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in steps.model.parameters()}
    kept: dict[int, int] = {}

    def keep(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params and storage.device.type != "meta":
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    hooks = [block.register_forward_pre_hook(lambda _, args: [keep(args[0]), None][1]) for block in steps.model.blocks] \
        if getattr(steps.model, "grad_checkpointing", False) else []
    steps.model.train()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss, _ = steps.loss(data["image"], data["label"], data["target"])
    for hook in hooks:
        hook.remove()
    del loss
    return sum(kept.values())


def _torch_child(cfg, batch: int, remat: str | None) -> dict:
    import torch

    import vit_torch
    from bench.batch import random_batch
    from vit_common.train.recipe import TrainConfig
    from vit_torch.train.optim import learning_rate_schedule, make_optimizer
    from vit_torch.train.step import Steps, to_torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = vit_torch.build_model(cfg).to(device)
    if remat:
        model.set_grad_checkpointing(True)
    config = TrainConfig(clip_grad_norm=1.0)
    steps = Steps(model, make_optimizer(model, config), learning_rate_schedule(config, 1000), 1, 1.0, None)
    data = to_torch(random_batch(cfg, batch), device)

    def step():
        steps.train(data)
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        step()
        torch.cuda.reset_peak_memory_stats()
    out = _measure(step)
    out["saved_for_backward_gib"] = _saved_for_backward_bytes(steps, data) / 2**30
    # Fixed whatever the checkpointing: float32 weights, their gradients, AdamW's two moments.
    out["state_gib"] = 4 * sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    out["imports_jax"] = "jax" in sys.modules  # it would count in the peak: never
    if device.type == "cuda":
        out["device_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def child(framework: str, model: str, batch: int, remat: str | None, dry_run: bool) -> dict:
    from vit_common import get_config

    cfg = get_config(model, **(TINY if dry_run else {}))
    run = _jax_child if framework == "jax" else _torch_child
    return dict(run(cfg, batch, remat), framework=framework, model=model, batch=batch, remat=remat or "off")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frameworks", nargs="+", default=["jax", "torch"], choices=["jax", "torch"])
    parser.add_argument("--dry-run", action="store_true", help="a tiny model at batch 4: checks the script")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # framework,remat: one measurement, as JSON
    args = parser.parse_args(argv)
    batch = 4 if args.dry_run else args.batch
    if args.child:
        framework, remat = args.child.split(",")
        print(json.dumps(child(framework, args.model, batch, None if remat == "off" else remat, args.dry_run)))
        return []

    rows = []
    for framework in args.frameworks:
        # JAX: both remat policies; PyTorch's checkpoint recomputes whole blocks ("full").
        for remat in ("off", "full", "dots") if framework == "jax" else ("off", "full"):
            cmd = [sys.executable, __file__, "--child", f"{framework},{remat}", "--model", args.model,
                   "--batch", str(args.batch)] + (["--dry-run"] if args.dry_run else [])
            result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if result.returncode != 0:
                raise SystemExit(f"{framework} remat={remat} failed (exit {result.returncode}; -9: killed, out of "
                                 f"memory?):\n{result.stderr[-3000:]}")
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"  {framework} remat={remat}: peak RSS {rows[-1]['peak_rss_gib']:.2f} GiB", file=sys.stderr, flush=True)

    print(f"\n{args.model}{' (dry run: tiny model)' if args.dry_run else ''}, batch {batch}, float32, one train step\n")
    # The deterministic measures first: what the step keeps for the backward pass (PyTorch: bytes
    # saved for backward by one forward; JAX: XLA's temporary buffers of the compiled step, which
    # also hold gradients and optimizer temporaries); then the process's peak RSS, which adds the
    # fixed state (weights, gradients, AdamW moments), libraries and allocator caching.
    print("| twin | grad checkpointing | activations kept for backward GiB | XLA temp GiB | vs off "
          "| weights+grads+AdamW GiB | peak RSS GiB | rise during the step GiB | step s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        off = next(o for o in rows if o["framework"] == r["framework"] and o["remat"] == "off")
        key = "xla_temp_gib" if r["framework"] == "jax" else "saved_for_backward_gib"
        ratio = f"{r[key] / off[key]:.2f}x" if r.get(key) and off.get(key) else "-"
        fmt = lambda k: f"{r[k]:.2f}" if r.get(k) is not None else "-"
        print(f"| {r['framework']} | {r['remat']} | {fmt('saved_for_backward_gib')} | {fmt('xla_temp_gib')} | {ratio} "
              f"| {fmt('state_gib')} | {r['peak_rss_gib']:.2f} | {r['rise_gib']:.2f} | {r['step_s']:.1f} |")
    return rows


if __name__ == "__main__":
    main()
