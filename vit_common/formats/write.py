"""Write a Checkpoint in any writable format: the mirror of read.py. Each format's Layout holds its
writer and the suffixes it writes (detect.writable_layouts); this module only picks the layout and
refuses a path the format cannot take."""
from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError
from .base import Layout
from .detect import writable_layouts
from .read import Checkpoint

# The format a destination gets when none is named (vit-convert without --to), by its suffix.
BY_SUFFIX = {".npz": "canonical", ".safetensors": "timm", ".pt": "timm", ".pth": "timm", "": "run"}
FILE_SUFFIXES = (".npz", ".safetensors", ".pt", ".pth", ".bin", ".msgpack")
NPZ_LAYOUTS = ("canonical", "linen", "big_vision")  # vit-convert --layout, for .npz output


def output_formats() -> list[str]:
    """The --to names, the suffix defaults first."""
    names = list(writable_layouts())
    defaults = [name for name in ("canonical", "linen", "big_vision", "timm", "run") if name in names]
    return defaults + [name for name in names if name not in defaults]


def output_layout(dst: str | Path, to: str | None = None, layout: str = "canonical") -> Layout:
    """The Layout that writes `dst`: the one named `to`, else the one for its suffix (an .npz in
    `layout`); a path it cannot write is refused here, before anything is read."""
    dst, writers = Path(dst), writable_layouts()
    if to is None:
        if dst.suffix not in BY_SUFFIX:
            raise CheckpointError(f"{dst}: cannot write {dst.suffix!r}; choose one of .npz, .safetensors, .pt, .pth, "
                                  "or a folder (no suffix)")
        if layout != "canonical" and dst.suffix != ".npz":
            raise CheckpointError(f"--layout {layout} is for .npz files, not {dst.suffix or 'folders'}")
        to = layout if dst.suffix == ".npz" else BY_SUFFIX[dst.suffix]
    if to not in writers:
        raise CheckpointError(f"--to {to}: unknown output format; choose one of {output_formats()}")
    chosen = writers[to]
    folder = "" in chosen.suffixes and dst.suffix not in FILE_SUFFIXES  # a folder's name may hold a dot
    if dst.suffix not in chosen.suffixes and not folder:
        names = [s or "a folder (no suffix)" for s in chosen.suffixes]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise CheckpointError(f"--to {to} writes {listed}, not {dst.suffix or 'a folder'}")
    return chosen


def write_checkpoint(ckpt: Checkpoint, dst: str | Path, layout: str = "canonical", to: str | None = None,
                     model: str | None = None) -> None:
    """Write `ckpt` to `dst` in the format `to` (default: by dst's suffix: .npz canonical, or
    Google's `layout`; .safetensors / .pt / .pth timm's names; no suffix a train.py run folder).
    The class names and the preprocessing travel with it (the record, else the family's default;
    `model`: the preset the weights were read as)."""
    from ..predict.defaults import resolve_preprocess  # the one table of families' preprocessing

    writer = output_layout(dst, to, layout)
    meta = {k: v for k, v in ckpt.meta.items() if k == "class_names"}
    meta["preprocess"] = resolve_preprocess(ckpt.meta, ckpt.config, model)[0]
    writer.write(ckpt.weights, ckpt.config, meta, Path(dst))
