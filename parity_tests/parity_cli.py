"""vit-parity's work (parity_args.py holds its usage and arguments): both twins on one checkpoint,
the report and the verdict."""
from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import vit_jax
import vit_torch
from vit_common import CheckpointError, ConfigError, WeightsMismatchError, count_params, read_checkpoint
from vit_common.cli.vit_convert import describe
from vit_common.formats import LAYOUT_NAMES
from parity_tests.parity_args import parse_args
from parity_tests.harness import (
    FLOAT32_TOL, MEASURE, Outputs, bf16_tolerance, decided, full_precision, non_finite, random_images, rel_error, run_jax,
    run_torch,
)
from parity_tests.report import first_over, format_report, tolerance_text

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def load_images(folder: Path, cfg, meta: dict, batch: int) -> tuple[np.ndarray, str]:
    from vit_common.predict.preprocess import load_image, options_from_meta, preprocess

    if not folder.is_dir():
        raise CheckpointError(f"--images {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:batch]
    if not files:
        raise CheckpointError(f"--images {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    x = preprocess([load_image(p) for p in files], cfg.img_size, in_chans=cfg.in_chans, **options_from_meta(meta))
    return x, f"{len(files)} images from {folder}"


def main(argv=None) -> int:
    return run(parse_args(argv))


def run(args) -> int:
    overrides = {k: v for k, v in (("num_heads", args.num_heads), ("act_layer", args.act_layer)) if v}
    try:
        ckpt = read_checkpoint(args.checkpoint, args.model, **overrides)
        cfg = ckpt.config
        if args.images is not None:
            images, source = load_images(args.images, cfg, ckpt.meta, args.batch)
        else:
            images, source = random_images(cfg, args.batch, args.seed), f"{args.batch} random images in [-1, 1] (seed {args.seed})"
    except (CheckpointError, ConfigError, WeightsMismatchError, ValueError) as e:
        print(f"vit-parity: error: {e}", file=sys.stderr)
        return 2
    bf16 = args.dtype == "bfloat16"
    model_t = vit_torch.load_canonical_(vit_torch.build_model(cfg), ckpt.weights).eval()
    model_j = vit_jax.load_canonical_(
        vit_jax.build_model(cfg, dtype=jnp.bfloat16 if bf16 else jnp.float32, rngs=nnx.Rngs(0)), ckpt.weights)
    model_j.eval()
    if args.act_gap and cfg.arch != "vit":
        print(f"vit-parity: error: --act-gap applies to ViTs; this {cfg.arch} model's MLP activation is fixed by "
              "its architecture", file=sys.stderr)
        return 2
    print(f"checkpoint {args.checkpoint} ({LAYOUT_NAMES[ckpt.meta['source_layout']]}): {describe(cfg)}, "
          f"{count_params(cfg):,} parameters")
    for note in ckpt.meta.get("notes", []):
        print(f"note: {note}")
    print(f"inputs: {source}; {args.dtype} ({'bf16 compute, float32 parameters' if bf16 else 'full precision'})\n")
    with full_precision():
        out_t = run_torch(model_t, images, dtype=torch.bfloat16 if bf16 else None)
        out_j = run_jax(model_j, images)
        reference = run_torch(model_t, images, attention=False) if bf16 else out_t
    depth = len(out_t.hidden_states)
    if bf16:
        tol, judged = bf16_tolerance(depth), ("logits",) if out_t.logits is not None else ("pooled",)
        table, ok = format_report(out_j, out_t, tol=tol, judged=judged, tol_note=f" (bfloat16, the bound at depth {depth})")
    else:
        tol, judged = FLOAT32_TOL, None
        table, ok = format_report(out_j, out_t, tol=tol)
    print(table)
    broken = [(twin, names) for twin, out in (("jax", out_j), ("torch", out_t)) if (names := non_finite(out))]
    for twin, names in broken:
        print(f"{twin} outputs NaN or inf in: {', '.join(names)} -> FAIL")
    top1_off, clear = 0, None
    if bf16 and out_t.logits is not None:
        clear = decided(reference.logits, tol)
        preds = [out.logits.argmax(-1)[clear] for out in (out_j, out_t, reference)]
        top1_off = int(np.sum((preds[0] != preds[1]) | (preds[0] != preds[2])))
        print(f"top-1 judged on {int(clear.sum())} of {len(clear)} images (float32 leads the runner-up by more "
              f"than bf16 resolves): {top1_off} differ between jax, torch and float32")
    if args.act_gap:
        print(act_gap(cfg, ckpt.weights, images, out_t, args.act_gap))
    ok = ok and not broken and not top1_off
    print(verdict(ok, bf16, depth, tol, judged, first_over(out_j, out_t, tol) if judged is None else None,
                  broken, top1_off, None if clear is None else int(clear.sum())))
    return 0 if ok else 1


def verdict(ok: bool, bf16: bool, depth: int, tol: float, judged, first, broken, top1_off: int,
            clear: int | None) -> str:
    """The one line the report ends with: the outcome, and what to do about it."""
    if broken:
        twin, names = broken[0]
        return (f"FAIL: the {twin} twin outputs NaN or inf (first in {names[0]}); check the checkpoint's weights "
                "(vit-convert refuses non-finite ones) and the inputs (--images)")
    if bf16:
        bound = f"{tolerance_text(tol)}, the bound at depth {depth}"
        if ok and clear == 0:
            return (f"PASS: in bfloat16 the twins agree: {judged[0]} within {bound}; no image had a top-1 clear enough "
                    "to compare (give real images: --images DIR)")
        if ok:
            return (f"PASS: in bfloat16 the twins agree: {judged[0]} within {bound}"
                    + ("" if clear is None else ", and the same top-1 on every clear image")
                    + "; hidden states and attention are shown, not judged")
        reason = f"top-1 differs on {top1_off} clear images" if top1_off else f"{judged[0]} over {bound}"
        return (f"FAIL: in bfloat16, {reason}; rerun with --dtype float32: if that passes, the gap is bf16 rounding in "
                "this model (serve it in float32, or check top-1 on your own images with --images DIR)")
    if ok:
        return f"PASS: the twins compute the same function on this checkpoint (every tensor within {tolerance_text(tol)})"
    name, rel = first
    return (f"FAIL: the twins part at {name} ({rel:.1e} > {tolerance_text(tol)}); in float32 that is a bug in a twin, not in "
            "the checkpoint: report this output, and meanwhile serve it with the twin it was trained or released in")


def act_gap(cfg, weights, images: np.ndarray, out: Outputs, other: str) -> str:
    """How far the PyTorch twin's last hidden state, pooled features and logits move when its
    activation is `other` instead of the checkpoint's (float32, the same weights and images)."""
    model = vit_torch.load_canonical_(vit_torch.build_model(cfg.replace(act_layer=other)), weights).eval()
    with full_precision():
        moved = run_torch(model, images)
    rows = [("last hidden", out.hidden_states[-1], moved.hidden_states[-1]), ("pooled", out.pooled, moved.pooled)]
    if out.logits is not None:
        rows.append(("logits", out.logits, moved.logits))
    lines = [f"\nactivation gap: act_layer={cfg.act_layer} (the checkpoint's) vs {other} (torch, float32)",
             f"a = {other}, b = {cfg.act_layer}; rel err = {MEASURE} (shown, not judged)",
             f"{'tensor':<22} {'max|a-b|':>12} {'rel err':>10}", "-" * 46]
    lines += [f"{name:<22} {float(np.abs(a - b).max()):12.2e} {rel_error(b, a):10.2e}" for name, a, b in rows]
    if out.logits is not None:
        agree = float(np.mean(out.logits.argmax(-1) == moved.logits.argmax(-1)))
        lines.append(f"top-1 agreement {cfg.act_layer} vs {other}: {agree:.0%}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
