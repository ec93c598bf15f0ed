"""vit-convert: any supported ViT or Swin checkpoint -> canonical .npz, .safetensors or .pt.

    vit-convert SRC DST [--model NAME] [--img-size N] [--patch-size P] [--num-classes K]
                [--num-heads H] [--window-size W] [--posemb-method zoom|bilinear|bicubic]

SRC may also name pretrained weights on the Hugging Face Hub: timm:NAME[.TAG] (timm's repository
timm/NAME.TAG; a bare NAME takes timm's default tag, e.g. timm:vit_base_patch16_224 is
timm/vit_base_patch16_224.augreg2_in21k_ft_in1k) or hf-hub:ORG/REPO[@REVISION] (a timm or a
transformers ViT / DeiT / Swin repository). They are read from the Hugging Face cache
(HF_HUB_CACHE or HF_HOME), downloaded there when missing; HF_HUB_OFFLINE=1 reads the cache only.

Reads Google's .npz files (vision_transformer before and after Linen, big_vision, scanned or
not), timm-named state dicts (.safetensors, .pt, .pth, wrapped in 'state_dict' / 'model' /
'module.' or not), HuggingFace ViT/DeiT state dicts, and Swin Transformers: timm's state dicts,
Microsoft's released checkpoints ({'model': ...}, patch merging at the end of each stage) and
canonical Swin .npz files. The architecture is inferred from the weights unless --model pins it;
the config travels inside DST, so loading it needs no flags. It also reads and writes train.py
run folders (orbax). DST is written atomically and is never SRC.

Weights holding NaN or inf, or of an integer or bool dtype, are refused (exit 2, naming them);
float16 / bfloat16 weights are widened to float32 (exact), a cast printed with the other
adaptations.

Swin: --window-size (or an --img-size whose stages are smaller than the window) resamples the
relative position bias tables bicubically, as Microsoft's fine-tuning code and timm's simple
resize do.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ModelConfig, SwinConfig, ViTConfig
from ..config.vit import ACT_LAYERS
from ..errors import CheckpointError, ConfigError, WeightsMismatchError
from ..formats import LAYOUT_NAMES, Checkpoint, read_checkpoint, save_npz, save_safetensors, save_torch
from ..formats.google import canonical_to_big_vision, canonical_to_linen
from ..formats.hub import checkpoint_argument
from ..formats.run_folder import save_training_dir
from ..predict.defaults import resolve_preprocess
from ..weights import TIMM, count_params

OUTPUT_SUFFIXES = (".npz", ".safetensors", ".pt", ".pth", "")  # "": a folder laid out like a train.py run
NPZ_LAYOUTS = ("canonical", "linen", "big_vision")


def check_writable(dst: Path) -> None:
    if dst.suffix not in OUTPUT_SUFFIXES:
        raise CheckpointError(f"{dst}: cannot write {dst.suffix!r}; choose one of .npz, .safetensors, .pt, .pth, "
                              "or a folder (no suffix)")


def write_checkpoint(ckpt: Checkpoint, dst: str | Path, layout: str = "canonical", model: str | None = None) -> None:
    """.npz in a Google layout, timm-named .safetensors / .pt / .pth, or (no suffix) a folder
    laid out like a train.py run; the config and metadata always travel inside. `model`: the
    preset the weights were read as, whose family's preprocessing applies when they record none."""
    dst = Path(dst)
    check_writable(dst)
    meta = {k: v for k, v in ckpt.meta.items() if k == "class_names"}
    meta["preprocess"] = resolve_preprocess(ckpt.meta, ckpt.config, model)[0]  # the record, else the family's default
    if layout != "canonical" and dst.suffix != ".npz":
        raise CheckpointError(f"--layout {layout} is for .npz files, not {dst.suffix or 'folders'}")
    if dst.suffix == "":
        save_training_dir(dst, ckpt.weights, ckpt.config, meta)
    elif dst.suffix == ".npz":
        save_npz(dst, _google_layout(ckpt, layout), ckpt.config, meta)
    elif dst.suffix == ".safetensors":
        save_safetensors(dst, TIMM.export(ckpt.weights, ckpt.config), ckpt.config, meta)
    else:
        save_torch(dst, TIMM.export(ckpt.weights, ckpt.config), ckpt.config, meta)


def _google_layout(ckpt: Checkpoint, layout: str):
    if layout == "canonical":
        return ckpt.weights
    if isinstance(ckpt.config, SwinConfig):
        raise CheckpointError(f"Google never released Swin models, so there is no {layout} layout for them; "
                              "write --layout canonical")
    if layout == "linen":
        return canonical_to_linen(ckpt.weights)
    if ckpt.config.num_prefix_tokens and not ckpt.config.no_embed_class and ckpt.config.pos_embed == "learn":
        raise CheckpointError("big_vision adds the position embedding before the class token, but this model's "
                              "table has an entry for it (no_embed_class=False); write --layout canonical or linen")
    return canonical_to_big_vision(ckpt.weights)


def describe(cfg: ModelConfig) -> str:
    """The architecture on one line, as vit-convert prints it."""
    if isinstance(cfg, SwinConfig):
        heads = ",".join(map(str, cfg.num_heads))
        return (f"swin embed_dim={cfg.embed_dim} depths={','.join(map(str, cfg.depths))} num_heads={heads} "
                f"window_size={cfg.window_size} patch_size={cfg.patch_size} img_size={cfg.img_size} "
                f"num_classes={cfg.num_classes} global_pool={cfg.global_pool or 'none'}")
    later = " ".join(f"{f}={getattr(cfg, f)}" for f in LATER_FIELDS if getattr(cfg, f) != getattr(VIT_DEFAULTS, f))
    return (f"embed_dim={cfg.embed_dim} depth={cfg.depth} num_heads={cfg.num_heads} patch_size={cfg.patch_size} "
            f"img_size={cfg.img_size} num_classes={cfg.num_classes} global_pool={cfg.global_pool} "
            f"class_token={cfg.class_token} distilled={cfg.distilled} no_embed_class={cfg.no_embed_class} "
            f"act_layer={cfg.act_layer}" + (f" {later}" if later else ""))


# The options of the later families, printed where they differ from the 2020 ViT's.
LATER_FIELDS = ("init_values", "reg_tokens", "pre_norm", "norm_layer", "norm_eps", "mlp_layer", "proj_bias",
                "embed_norm_layer", "qkv_bias", "fc_norm")
VIT_DEFAULTS = ViTConfig()


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="vit-convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=checkpoint_argument,
                        help="a checkpoint file or run folder, or pretrained weights: timm:NAME[.TAG] or hf-hub:ORG/REPO")
    parser.add_argument("dst", type=Path)
    parser.add_argument("--model", help="preset that pins the architecture (default: inferred from the weights)")
    parser.add_argument("--img-size", type=int, help="resample the position embedding to this image size")
    parser.add_argument("--patch-size", type=int, help="PI-resize the patch embedding to this patch size")
    parser.add_argument("--num-classes", type=int, help="replace the head by a zero head with K classes (0: none)")
    parser.add_argument("--num-heads", type=int, help="heads, where the weights cannot say (timm, HF)")
    parser.add_argument("--act-layer", choices=ACT_LAYERS,
                        help="the MLP activation, where the weights cannot say (default: the recorded config's, else "
                             "the preset's; a Google .npz with neither: gelu_tanh, as Google's code computes it)")
    parser.add_argument("--window-size", type=int,
                        help="Swin: resample the relative position bias tables to this window (bicubic)")
    parser.add_argument("--layout", default="canonical", choices=NPZ_LAYOUTS,
                        help="for .npz output: Google's pre-Linen names (canonical, default), Linen names, or big_vision")
    parser.add_argument("--posemb-method", default="zoom", choices=("zoom", "bilinear", "bicubic"),
                        help="zoom: bilinear with corners aligned, as Google's code (default); "
                             "bilinear / bicubic: timm's (corners not aligned)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = {k: v for k, v in (("img_size", args.img_size), ("patch_size", args.patch_size),
                                   ("num_classes", args.num_classes), ("num_heads", args.num_heads),
                                   ("window_size", args.window_size), ("act_layer", args.act_layer)) if v is not None}
    try:
        check_writable(args.dst)  # before the (slow) read
        if isinstance(args.src, Path) and args.dst.resolve() == args.src.resolve():
            raise CheckpointError(f"refusing to overwrite the source {args.src}; choose another DST")
        ckpt = read_checkpoint(args.src, args.model, posemb_method=args.posemb_method, **overrides)
        write_checkpoint(ckpt, args.dst, args.layout, args.model)
    except (CheckpointError, ConfigError, WeightsMismatchError) as e:
        print(f"vit-convert: error: {e}", file=sys.stderr)
        return 2
    cfg = ckpt.config
    print(f"read  {args.src} ({LAYOUT_NAMES[ckpt.meta['source_layout']]})")
    print(f"model {describe(cfg)} ({count_params(cfg):,} parameters)")
    for note in ckpt.meta.get("notes", []):
        print(f"note  {note}")
    for change in ckpt.meta.get("adapted", []):
        print(f"adapt {change}")
    size = sum(p.stat().st_size for p in args.dst.rglob("*") if p.is_file()) if args.dst.is_dir() else args.dst.stat().st_size
    print(f"wrote {args.dst} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
