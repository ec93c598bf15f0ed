"""vit-export: a deployment artifact of any checkpoint vit-convert reads, with a dynamic batch
dimension, checked in the runtime that serves it.

    vit-export SRC OUT [--format onnx|torch-export|jax-export] [--model NAME] [--num-heads H]
               [--act-layer A] [--opset N] [--platforms cpu,cuda] [--overwrite] [--no-verify]

SRC: any file or folder vit-convert and vit-predict read (.npz, .safetensors, .pt, .pth, a
transformers folder, a train.py run folder) or pretrained weights, timm:NAME[.TAG] or hf-hub:ORG/REPO.
The format comes from --format, else from OUT's suffix:

    onnx          OUT.onnx  from the PyTorch twin (torch.onnx, opset 18+); input NCHW float32
                  'pixel_values'; output 'logits' (a feature model: 'features'). Runs in onnxruntime.
    torch-export  OUT.pt2   from the PyTorch twin (torch.export); NCHW. torch.export.load(OUT).module()
                  runs it in any process with torch, no project code.
    jax-export    OUT.jax   from the Flax twin (jax.export, weights inside as constants); NHWC.
                  jax.export.deserialize(bytearray(open(OUT, 'rb').read())).call(x) runs it with jax alone.

The batch dimension is dynamic; the image size is the model's (as built or as --model / the
checkpoint's config says). Beside OUT, OUT.json (the sidecar) says how to feed it: input name,
layout and shape, the preprocessing recorded for the model (else its family's), class names, the
config, and the check. Unless --no-verify, the artifact is run by its runtime at batch 1 and 3 on
random images before anything is written, and must match its twin within 1e-5
(max|a-b| / max(1, max|b|)); the error is printed. Neither file is written over without --overwrite;
both are written atomically. torchscript is refused: torch.jit.script cannot compile these models;
--format torch-export replaces it.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path

from ..atomic import atomic_write
from ..config.vit import ACT_LAYERS
from ..errors import CheckpointError, ConfigError, WeightsMismatchError
from ..export import CHECK_BATCHES, FORMATS, INPUT_NAME, ONNX_MAX_BYTES, TOLERANCE, check_images, output_name, \
    output_width, relative_error, sidecar, sidecar_path
from ..formats import LAYOUT_NAMES, read_checkpoint
from ..formats.hub import checkpoint_argument, is_pretrained_name, name_hint
from ..predict.defaults import resolve_preprocess
from ..predict.preprocess import check_color_mode, describe as describe_preprocess
from ..weights import count_params
from .vit_convert import describe

REFUSED = {
    "torchscript": "torch.jit.script cannot compile these models (it needs list sizes it can infer, and the models "
                   "check input shapes, return NamedTuples and hold optional modules), and PyTorch deprecates "
                   "TorchScript for torch.export: use --format torch-export (a .pt2 that torch.export.load runs "
                   "without this project) or --format onnx",
}
EXTRA = "pip install 'twin-vit[export]'"
# vit_common.predict.preprocess's defaults for entries a record leaves out (mean = std = 0.5: pixels in [-1, 1]).
SPELLED_OUT = {"resize": "shorter_side", "crop_pct": 0.875, "interpolation": "bicubic", "mean": 0.5, "std": 0.5}


class UsageError(ValueError):
    """Bad input from the user: reported in one line, exit code 2."""


class CheckFailed(RuntimeError):
    """The artifact does not compute what its twin computes: nothing written, exit code 1."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="vit-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=checkpoint_argument, metavar="SRC",
                        help="checkpoint file or folder, train.py run folder, timm:NAME[.TAG] or hf-hub:ORG/REPO")
    parser.add_argument("out", type=Path, metavar="OUT", help="the artifact to write (.onnx, .pt2 or .jax)")
    parser.add_argument("--format", choices=[*FORMATS, *REFUSED],
                        help="default: from OUT's suffix (.onnx onnx, .pt2 torch-export, .jax jax-export)")
    parser.add_argument("--model", metavar="NAME",
                        help="preset that pins the architecture (needed when the checkpoint carries no config "
                             "and its shapes cannot say, e.g. the number of heads)")
    parser.add_argument("--num-heads", type=int, metavar="H", help="heads, where the weights cannot say")
    parser.add_argument("--act-layer", choices=ACT_LAYERS, help="the MLP activation, where the weights cannot say")
    parser.add_argument("--opset", type=int, default=18, metavar="N", help="ONNX opset (18 or later; default 18)")
    parser.add_argument("--platforms", metavar="P[,P]",
                        help="jax-export: platforms to lower for, e.g. cpu,cuda (default: this machine's backend)")
    parser.add_argument("--overwrite", action="store_true", help="write over OUT and OUT.json if they exist")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip running the artifact in its runtime before writing it")
    return parser.parse_args(argv)


def choose_format(args) -> str:
    by_suffix = {f.suffix: name for name, f in FORMATS.items()}
    if args.format in REFUSED:
        raise UsageError(f"--format {args.format} is not offered: {REFUSED[args.format]}")
    fmt = args.format or by_suffix.get(args.out.suffix)
    if fmt is None:
        raise UsageError(f"{args.out}: cannot tell the format from {args.out.suffix or 'no suffix'!r}; pass --format "
                         f"({', '.join(FORMATS)}) or name OUT .onnx, .pt2 or .jax")
    if args.out.suffix != FORMATS[fmt].suffix:
        raise UsageError(f"{args.out}: {fmt} artifacts are written as {FORMATS[fmt].suffix}; name OUT "
                         f"{args.out.with_suffix(FORMATS[fmt].suffix).name}")
    if fmt == "onnx" and args.opset < 18:
        raise UsageError(f"--opset {args.opset}: torch's ONNX exporter writes opset 18 or later")
    if args.platforms is not None and fmt != "jax-export":
        raise UsageError("--platforms applies to --format jax-export only")
    return fmt


def check_paths(args) -> None:
    """Before the (slow) read and export: never write over the source, or over a file unasked."""
    if not is_pretrained_name(args.src) and not args.src.exists():
        raise UsageError(f"checkpoint {args.src} does not exist{name_hint(args.src)}")
    if isinstance(args.src, Path) and args.out.resolve() == args.src.resolve():
        raise UsageError(f"refusing to write over the source {args.src}; choose another OUT")
    for path in (args.out, sidecar_path(args.out)):
        if path.is_dir():
            raise UsageError(f"{path} is a folder; OUT names the artifact file")
        if path.exists() and not args.overwrite:
            raise UsageError(f"{path} exists; pass --overwrite to replace it, or choose another OUT")


def load_exporter(fmt: str, verify: bool):
    """The writing twin's export module, after checking that what the format needs is installed."""
    spec = FORMATS[fmt]
    needed = [m for m in spec.needs if verify or m != "onnxruntime"]
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"--format {fmt} needs {', '.join(missing)} installed ({EXTRA}; the {spec.framework} twin "
                         f"also needs 'twin-vit[{spec.framework}]')")
    return importlib.import_module(f"vit_{spec.framework}.export"), importlib.import_module(f"vit_{spec.framework}.predict")


def read(args):
    overrides = {k: v for k, v in (("num_heads", args.num_heads), ("act_layer", args.act_layer)) if v}
    try:
        return read_checkpoint(args.src, args.model, **overrides)
    except CheckpointError as e:
        if args.model is not None or is_pretrained_name(args.src):
            raise
        raise UsageError(f"{e}\n  if the file carries no config, pass --model NAME to pin the architecture "
                         "(a preset, e.g. vit_base_patch16_224)") from e


def preprocessing(ckpt, model_name):
    """(options, where they came from, one line describing them), as vit-predict applies them."""
    cfg = ckpt.config
    try:
        options, origin = resolve_preprocess(ckpt.meta, cfg, model_name)
        # Every entry spelled out (a server has no defaults to fall back on): the ones vit-predict applies.
        options = {**SPELLED_OUT, **options, "color_mode": check_color_mode(options.get("color_mode"), cfg.in_chans)}
    except (ValueError, TypeError) as e:
        raise UsageError(f"its preprocessing cannot be applied: {e}") from e
    return options, origin, describe_preprocess(options, cfg.img_size, cfg.in_chans)


def check(exporter, model, blob: bytes, fmt: str) -> float:
    """The artifact, run by its runtime from its bytes, against the twin at each check batch size."""
    errors = []
    for batch in CHECK_BATCHES:
        images = check_images(model.cfg, batch)
        errors.append(relative_error(exporter.run_artifact(blob, fmt, images), exporter.reference(model, images)))
    worst = max(errors)
    if worst > TOLERANCE:
        raise CheckFailed(f"the {fmt} artifact differs from its twin by {worst:.3g} (max|a-b| / max(1, max|b|), "
                          f"tolerance {TOLERANCE:g}); nothing written")
    return worst


def run(args) -> None:
    fmt = choose_format(args)
    check_paths(args)
    exporter, twin = load_exporter(fmt, args.verify)
    ckpt = read(args)
    cfg = ckpt.config
    if fmt == "onnx" and 4 * count_params(cfg) > ONNX_MAX_BYTES:
        raise UsageError(f"{count_params(cfg):,} float32 parameters do not fit one ONNX file (2 GiB protobuf limit); "
                         "use --format torch-export or --format jax-export")
    options, origin, applied = preprocessing(ckpt, args.model)
    print(f"read    {args.src} ({LAYOUT_NAMES[ckpt.meta['source_layout']]})")
    print(f"model   {describe(cfg)} ({count_params(cfg):,} parameters)")
    model = twin.load_model(ckpt)
    layout = FORMATS[fmt].layout
    settings = {"opset": args.opset} if fmt == "onnx" else {}
    if fmt == "jax-export":
        settings["platforms"] = tuple(args.platforms.split(",")) if args.platforms else None
    start = time.perf_counter()
    blob = exporter.serialize(model, fmt, **settings)
    print(f"export  {fmt} in {time.perf_counter() - start:.1f} s: input {INPUT_NAME!r} (batch, "
          f"{'C, H, W' if layout == 'NCHW' else 'H, W, C'}) = (batch, "
          f"{', '.join(map(str, _shape(cfg, layout)))}) float32, output {output_name(cfg)!r} "
          f"(batch, {output_width(cfg)}), batch dynamic")
    result = None
    if args.verify:
        error = check(exporter, model, blob, fmt)
        runtime = exporter.runtime_version(fmt)
        result = {"runtime": runtime, "batches": list(CHECK_BATCHES), "max_relative_error": error,
                  "tolerance": TOLERANCE}
        print(f"check   {runtime}, batch {' and '.join(map(str, CHECK_BATCHES))}: max|a-b| / max(1, max|b|) = "
              f"{error:.2e} against the {FORMATS[fmt].framework} twin (tolerance {TOLERANCE:g})")
    record = sidecar(FORMATS[fmt], args.out.name, cfg, options, origin, applied, _class_names(ckpt.meta, cfg),
                     exporter.versions(fmt, **settings), result, str(args.src))
    atomic_write(args.out, lambda f: f.write(blob))
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(sidecar_path(args.out), lambda f: f.write(text.encode()))
    print(f"wrote   {args.out} ({len(blob) / 2**20:.1f} MiB) and {sidecar_path(args.out).name}")


def _shape(cfg, layout: str) -> tuple[int, int, int]:
    return (cfg.in_chans, cfg.img_size, cfg.img_size) if layout == "NCHW" else (cfg.img_size, cfg.img_size, cfg.in_chans)


def _class_names(meta, cfg):
    names = meta.get("class_names")
    return list(names) if names is not None and len(names) == cfg.num_classes else None


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (UsageError, CheckpointError, ConfigError, WeightsMismatchError) as e:
        print(f"vit-export: error: {e}", file=sys.stderr)
        return 2
    except CheckFailed as e:
        print(f"vit-export: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
