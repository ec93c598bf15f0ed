"""vit-convert: any supported ViT, Swin or Eva (EVA-02, DINOv3) checkpoint -> canonical .npz, .safetensors or .pt.

    vit-convert SRC DST [--model NAME] [--img-size N] [--patch-size P] [--num-classes K]
                [--num-heads H] [--window-size W] [--posemb-method zoom|bilinear|bicubic]

SRC may also name pretrained weights on the Hugging Face Hub: timm:NAME[.TAG] (timm's repository
timm/NAME.TAG; a bare NAME takes timm's default tag, e.g. timm:vit_base_patch16_224 is
timm/vit_base_patch16_224.augreg2_in21k_ft_in1k) or hf-hub:ORG/REPO[@REVISION] (a timm or a
transformers repository). They are read from the Hugging Face cache
(HF_HUB_CACHE or HF_HOME), downloaded there when missing; HF_HUB_OFFLINE=1 reads the cache only.

Reads Google's .npz files (vision_transformer before and after Linen, big_vision, scanned or
not), timm-named state dicts (.safetensors, .pt, .pth, wrapped in 'state_dict' / 'model' /
'module.' or not), HuggingFace transformers state dicts and model folders (config.json +
model.safetensors: ViT, DeiT, Swin, DINOv2, CLIP / SigLIP / AIMv2 vision, DINOv3; --to hf writes
one that from_pretrained loads), and Swin Transformers: timm's state dicts,
Microsoft's released checkpoints ({'model': ...}, patch merging at the end of each stage) and
canonical Swin .npz files, and timm's Eva (EVA-02, DINOv3): timm state dicts and canonical Eva
.npz files. Image-text models give their image tower: big_vision's (SigLIP, LiT: params/img/...;
--to big_vision_img writes it back) and OpenAI CLIP / OpenCLIP's (visual.*; --to openclip), their
text towers left behind. The architecture is inferred from the weights unless --model pins it
(what no weight says, such as OpenCLIP's activation, --act-layer gives);
the config travels inside DST, so loading it needs no flags. It also reads and writes train.py
run folders (orbax). DST is written atomically and is never SRC; an existing DST file is
replaced only with --overwrite (an existing folder never: remove it first).

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
from ..formats import LAYOUT_NAMES, read_checkpoint
from ..formats.hub import checkpoint_argument
from ..formats.write import NPZ_LAYOUTS, output_formats, output_layout, write_checkpoint  # noqa: F401 (API)
from ..weights import count_params


def describe(cfg: ModelConfig) -> str:
    """The architecture on one line, as vit-convert prints it."""
    if cfg.arch == "eva":
        rope = f"rope={cfg.rope_type}" if cfg.use_rot_pos_emb else "rope=none"
        return (f"eva embed_dim={cfg.embed_dim} depth={cfg.depth} num_heads={cfg.num_heads} patch_size={cfg.patch_size} "
                f"img_size={cfg.img_size} num_classes={cfg.num_classes} global_pool={cfg.global_pool} "
                f"mlp={cfg.mlp_kind} {rope} reg_tokens={cfg.num_reg_tokens} abs_pos_emb={cfg.use_abs_pos_emb}")
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
                             "the preset's, else the format's: gelu_tanh for big_vision image towers and for a Google "
                             ".npz with neither, as Google's code computes it; quick_gelu for OpenAI's CLIP; an "
                             "OpenCLIP file needs this or --model)")
    parser.add_argument("--window-size", type=int,
                        help="Swin: resample the relative position bias tables to this window (bicubic)")
    parser.add_argument("--to", metavar="FORMAT",
                        help=f"output format: {', '.join(output_formats())} (default: from DST's suffix: "
                             ".npz canonical, .safetensors/.pt/.pth timm, no suffix a train.py run folder); --to timm "
                             "with a folder writes timm's Hub layout (timm.create_model('local-dir:DST')), --to hf "
                             "a transformers folder")
    parser.add_argument("--layout", default="canonical", choices=NPZ_LAYOUTS,
                        help="for .npz output: Google's pre-Linen names (canonical, default), Linen names, or big_vision")
    parser.add_argument("--posemb-method", default="zoom", choices=("zoom", "bilinear", "bicubic"),
                        help="zoom: bilinear with corners aligned, as Google's code (default); "
                             "bilinear / bicubic: timm's (corners not aligned)")
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it is an existing file (never SRC)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = {k: v for k, v in (("img_size", args.img_size), ("patch_size", args.patch_size),
                                   ("num_classes", args.num_classes), ("num_heads", args.num_heads),
                                   ("window_size", args.window_size), ("act_layer", args.act_layer)) if v is not None}
    try:
        output_layout(args.dst, args.to, args.layout)  # a destination it cannot write fails before the (slow) read
        if isinstance(args.src, Path) and (args.dst.resolve() == args.src.resolve()
                                           or args.src.is_dir() and args.src.resolve() in args.dst.resolve().parents):
            raise CheckpointError(f"refusing to overwrite the source {args.src} ({args.dst} is it or lies inside it); "
                                  "choose another DST")
        if args.dst.is_file() and not args.overwrite:
            raise CheckpointError(f"{args.dst} exists; pass --overwrite to replace it, or choose another DST")
        ckpt = read_checkpoint(args.src, args.model, posemb_method=args.posemb_method, **overrides)
        write_checkpoint(ckpt, args.dst, args.layout, args.to, args.model)
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
