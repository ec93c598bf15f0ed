"""vit-predict: top-k classes of images, or their embeddings, with attention heatmaps, in either twin
(ViT, Swin or Eva).

    vit-predict --checkpoint PATH [--model NAME] [--num-heads H] [--framework jax|torch] [--top-k 5]
                [--attention-map DIR] [--save-features OUT.npy] [--overwrite] IMAGE...

A feature model (num_classes=0: DINOv2, DINOv3, SigLIP, AIMv2, the CLIP towers) prints each image's
embedding (its width, L2 norm and first values) instead of classes; --save-features writes the
embeddings of all images, in the order given, as one (N, F) float32 .npy (for a classifier, the
pooled features that feed its head).

The checkpoint is any file vit-convert reads, or pretrained weights on the Hugging Face Hub:
timm:NAME[.TAG] (e.g. timm:vit_base_patch16_224.augreg2_in21k_ft_in1k; a bare NAME takes timm's
default tag) or hf-hub:ORG/REPO, read from the Hugging Face cache or downloaded into it
(HF_HUB_OFFLINE=1: the cache only). Class names come from its metadata, and so does
the preprocessing (colour mode, resize rule, crop_pct, interpolation, mean/std) when the
checkpoint records it (train.py runs and vit-convert outputs do); else its family's documented
preprocessing (vit_common/predict/defaults.py). The first line printed says which was applied
and where it came from. Only the chosen framework is imported.
Attention maps show where the model reads the image from: its class token, or its MAP probe
(SigLIP). A model that averages its patch tokens (global average pooling: AIMv2, SigLIP GAP)
has neither; its maps show the mean attention of all patch queries, and vit-predict says so.
For Swin models the attention maps cover the last stage (rollout over its blocks, each head's
mean attention over all its tokens), upsampled from its grid (7x7 at 224 pixels) to the image.
--attention-map takes a folder (made if missing) and writes DIR/<image stem>.png per image
(<stem>-<position>.png where two images share a stem). Nothing given is ever written over: an
output that is one of the inputs is refused, and an existing output file is refused unless
--overwrite is given. Every file is written atomically (a temporary file, then a rename).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..config.vit import ACT_LAYERS
from ..errors import ArchitectureUnknown, CheckpointError, ConfigError, WeightsMismatchError
from ..formats import read_checkpoint
from ..formats.hub import checkpoint_argument, is_pretrained_name, name_hint
from ..atomic import atomic_write
from ..predict.attention_maps import (
    attention_rollout, last_layer_cls_attention, map_query, save_attention_png, swin_last_stage_attention,
)
from ..predict.defaults import resolve_preprocess
from ..predict.preprocess import (
    IMAGE_SUFFIXES, ImageError, check_color_mode, describe, load_image, resize_and_crop, to_array,
)

BATCH = 32  # images per forward pass; keeps memory flat for long image lists


class UsageError(ValueError):
    """Bad input from the user: reported in one line, exit code 2."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="vit-predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (anything Pillow reads)")
    parser.add_argument("--checkpoint", required=True, type=checkpoint_argument, metavar="PATH",
                        help=".npz, .safetensors, .pt or .pth weights, a train.py run folder, or pretrained "
                             "weights: timm:NAME[.TAG] or hf-hub:ORG/REPO")
    parser.add_argument("--model", metavar="NAME",
                        help="preset that pins the architecture (needed when the checkpoint carries no config "
                             "and its shapes cannot say, e.g. the number of heads)")
    parser.add_argument("--num-heads", type=int, metavar="H",
                        help="heads, where the weights cannot say (timm, transformers and released files of a "
                             "width no preset has)")
    parser.add_argument("--act-layer", choices=ACT_LAYERS,
                        help="run with this MLP activation instead of the checkpoint's (a Google .npz without a config "
                             "or --model runs gelu_tanh, as Google's code does)")
    parser.add_argument("--framework", choices=("jax", "torch"), default="jax", help="which twin runs (default: jax)")
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="classes to print per image (default: 5)")
    parser.add_argument("--attention-map", type=Path, metavar="DIR",
                        help="a folder (made if missing) that receives, per image, DIR/<image stem>.png: the input, "
                             "its attention rollout and the last layer's per-head maps (<stem>-<position>.png where "
                             "two images share a stem)")
    parser.add_argument("--save-features", type=Path, metavar="OUT.npy",
                        help="write the features of all images, in the order given, as one float32 .npy: "
                             "(N, F) pooled embeddings, or (N, H', W', C) patch features with --features patch")
    parser.add_argument("--features", choices=("pooled", "patch"), default="pooled",
                        help="what --save-features writes: the pooled features that feed the head (default), or "
                             "the last block's patch tokens after the final norm, on the patch grid (ViT and Eva; "
                             "dense prediction, retrieval on patches)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (never an input)")
    args = parser.parse_args(argv)
    if args.save_features is not None and args.save_features.suffix != ".npy":
        parser.error(f"--save-features writes a .npy file, not {args.save_features.name!r}")
    if args.attention_map is not None and args.attention_map.suffix.lower() in IMAGE_SUFFIXES:
        parser.error(f"--attention-map takes a folder that receives one PNG per image, not a file name "
                     f"({str(args.attention_map)!r}); e.g. --attention-map maps")
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if args.features != "pooled" and args.save_features is None:
        parser.error("--features chooses what --save-features writes: give --save-features OUT.npy too")
    return args


def map_paths(folder: Path, images: Sequence[Path]) -> list[Path]:
    """DIR/<stem>.png per image, made unique (<stem>-<position>.png) where stems repeat."""
    stems = [p.stem for p in images]
    return [folder / f"{stem}{'' if stems.count(stem) == 1 else f'-{i + 1}'}.png" for i, stem in enumerate(stems)]


def check_outputs(args) -> list[Path]:
    """The attention-map paths; refuses, before anything is read, an output that is an input (even
    with --overwrite), an existing output file without --overwrite, and a map folder that is a file."""
    inputs = {p.resolve() for p in args.images}
    if isinstance(args.checkpoint, Path):
        inputs.add(args.checkpoint.resolve())
    outputs = []
    if args.attention_map is not None:
        if args.attention_map.exists() and not args.attention_map.is_dir():
            raise UsageError(f"--attention-map {args.attention_map} is a file; it takes a folder that receives one "
                             "PNG per image (e.g. --attention-map maps)")
        outputs = map_paths(args.attention_map, args.images)
    for out in outputs + ([args.save_features] if args.save_features is not None else []):
        if out.resolve() in inputs:
            raise UsageError(f"{out} is one of the inputs; refusing to write over it (choose another "
                             f"{'--attention-map folder' if out in outputs else '--save-features path'})")
        if out.exists() and not args.overwrite:
            raise UsageError(f"{out} exists; pass --overwrite to replace it, or choose another "
                             f"{'--attention-map folder' if out in outputs else '--save-features path'}")
    return outputs


def class_labels(meta: dict, num_classes: int) -> list[str]:
    names = meta.get("class_names")
    if names is not None and len(names) != num_classes:
        print(f"vit-predict: warning: the checkpoint names {len(names)} classes but its head has {num_classes}; "
              "printing class numbers", file=sys.stderr)
        names = None
    return list(names) if names is not None else [f"class {i}" for i in range(num_classes)]


def load_twin(framework: str):
    """The chosen twin's predict module, imported only now so the other framework is never loaded."""
    try:
        return importlib.import_module(f"vit_{framework}.predict")
    except ImportError as e:
        other = "torch" if framework == "jax" else "jax"
        raise UsageError(f"--framework {framework} needs {e.name or framework} installed "
                         f"(pip install 'twin-vit[{framework}]'), or use --framework {other}") from e


def run(args) -> None:
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:  # before the (slower) model load
        raise UsageError(f"image not found: {', '.join(missing)}")
    map_outputs = check_outputs(args)
    if not is_pretrained_name(args.checkpoint) and not args.checkpoint.exists():  # a file, or a run folder
        raise UsageError(f"checkpoint {args.checkpoint} does not exist{name_hint(args.checkpoint)}")
    try:
        overrides = {k: v for k, v in (("num_heads", args.num_heads), ("act_layer", args.act_layer)) if v}
        ckpt = read_checkpoint(args.checkpoint, args.model, **overrides)
    except ArchitectureUnknown as e:  # readable weights whose shapes leave the architecture open
        if args.model is not None or is_pretrained_name(args.checkpoint):  # a name's repository says its architecture
            raise
        raise UsageError(f"{e}\n  if the file carries no config, pass --model NAME to pin the architecture "
                         "(a preset, e.g. vit_base_patch16_224)") from e
    cfg = ckpt.config
    origin = "recorded in the checkpoint"
    try:  # a bad record fails here, before the model is built or any image read
        options, origin = resolve_preprocess(ckpt.meta, cfg, args.model)
        crop_options = {k: options.pop(k) for k in ("crop_pct", "interpolation", "resize") if k in options}
        mode = check_color_mode(options.pop("color_mode", None), cfg.in_chans)
        blank = Image.new(mode, (cfg.img_size, cfg.img_size))
        to_array([resize_and_crop(blank, cfg.img_size, **crop_options)], in_chans=cfg.in_chans, **options)
    except (ValueError, TypeError) as e:
        raise UsageError(f"{args.checkpoint}: its preprocessing ({origin}) cannot be applied: {e}") from e
    applied = describe(dict(options, **crop_options, color_mode=mode), cfg.img_size, cfg.in_chans)
    twin = load_twin(args.framework)
    model = twin.load_model(ckpt)
    labels = class_labels(ckpt.meta, cfg.num_classes) if cfg.num_classes else None
    print(f"preprocessing ({origin}): {applied}")
    for note in ckpt.meta.get("notes", []):
        print(f"note: {note}")
    if labels is None:
        print("the model has no classification head (num_classes=0): printing each image's embedding")
    want_maps = args.attention_map is not None
    outputs = map_outputs if want_maps else [None] * len(args.images)
    swin = cfg.arch == "swin"
    query = map_query(cfg)
    if swin:  # window attention, shown for the last stage only (see vit_common.attention_maps)
        prefix, grid, query = 0, cfg.stage_resolution(cfg.num_stages - 1), "mean of all tokens, last stage"
    else:
        prefix, grid = cfg.num_prefix_tokens, cfg.grid_size
        if want_maps and query == "mean of all tokens":
            print(f"attention maps: this model pools by averaging its patch tokens (global_pool={cfg.global_pool!r}); "
                  "no class token or MAP probe reads the image, so the maps show the mean attention of all patch "
                  "queries")
    k = min(args.top_k, cfg.num_classes)
    features = []

    for start in range(0, len(args.images), BATCH):
        paths = args.images[start:start + BATCH]
        crops = [resize_and_crop(load_image(p, mode), cfg.img_size, **crop_options) for p in paths]
        out = twin.run(model, to_array(crops, in_chans=cfg.in_chans, **options), want_maps)
        if args.features == "patch":
            if swin:
                raise UsageError("--features patch needs a ViT or Eva model; Swin merges its tokens per stage")
            features.append(twin.patch_features(model, to_array(crops, in_chans=cfg.in_chans, **options)))
        else:
            features.append(out.features)
        if want_maps:
            attentions = swin_last_stage_attention(out.attentions, cfg) if swin else out.attentions
            average = query != "class token" and out.pool_attention is None
            rollout = attention_rollout(attentions, prefix, grid, out.pool_attention, average)
            per_head = last_layer_cls_attention(attentions, prefix, grid, out.pool_attention, average)
        for i, path in enumerate(paths):
            print(f"{path}:")
            if labels is not None:
                p = out.probs[i]
                top = np.argsort(-p, kind="stable")[:k]
                for c in top:
                    print(f"  {p[c]:.4f}  {labels[c]}")
                title = f"{path.name}: {labels[top[0]]} ({p[top[0]]:.1%})"
            else:
                print(f"  {describe_features(out.features[i])}")
                title = f"{path.name}: features"
            if want_maps:
                save_attention_png(np.asarray(crops[i]), rollout[i], per_head[i], outputs[start + i], query=query,
                                   title=title)
                print(f"  attention map: {outputs[start + i]}")
    if args.save_features is not None:
        stacked = np.concatenate(features).astype(np.float32)
        atomic_write(args.save_features, lambda f: np.save(f, stacked))
        what = "patch features (N, H', W', C)" if args.features == "patch" else "features"
        print(f"{what}: {' x '.join(map(str, stacked.shape))} float32 saved to {args.save_features} "
              "(one row per image, in the order given)")


def describe_features(vector: np.ndarray, shown: int = 4) -> str:
    """An embedding on one line: its shape, L2 norm and first values."""
    flat = np.asarray(vector, np.float64).reshape(-1)
    first = ", ".join(f"{v:+.4f}" for v in flat[:shown])
    return (f"features {tuple(vector.shape)}: L2 norm {np.linalg.norm(flat):.4f}, first [{first}"
            f"{', ...' if flat.size > shown else ''}]")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (UsageError, ImageError, CheckpointError, ConfigError, WeightsMismatchError) as e:
        print(f"vit-predict: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
