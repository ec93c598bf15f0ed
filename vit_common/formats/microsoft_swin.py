"""Microsoft's Swin-Transformer state dicts (and timm's before 0.9), read to timm's names."""
from __future__ import annotations

import re

from ..errors import CheckpointError
from ..weights import Weights
from .base import Layout, is_swin
from .timm import drop_swin_buffers, swin_implies


def _microsoft_swin(keys) -> bool:
    """Microsoft's Swin (and timm's before 0.9): the patch merging ends stage i instead of starting
    stage i+1, so stage 0 has one; with a single stage, only the plain `head` tells."""
    merging = {int(m.group(1)) for k in keys if (m := re.match(r"^layers\.(\d+)\.downsample\.", k))}
    return 0 in merging if merging else "head.weight" in keys


def microsoft_swin_to_timm(raw: Weights) -> Weights:
    """Microsoft's Swin state dict -> timm's names: the patch merging that ends stage i
    (`layers.{i}.downsample`) starts stage i+1 in timm, `head` becomes `head.fc`, and the saved
    `relative_position_index` / `attn_mask` buffers are dropped."""
    if "absolute_pos_embed" in raw:
        raise CheckpointError("this Swin checkpoint has an absolute position embedding (ape=True), which neither "
                              "timm's Swin nor these twins have")
    out: Weights = {}
    for name, value in drop_swin_buffers(raw).items():
        if m := re.match(r"^layers\.(\d+)\.downsample\.(.+)$", name):
            name = f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"
        elif name.startswith("head.") and not name.startswith("head.fc."):
            name = f"head.fc.{name[len('head.'):]}"
        out[name] = value
    return out


LAYOUT = Layout("swin_ms", "Microsoft Swin-Transformer state dict (or timm before 0.9)", "layers.N.downsample...",
                lambda keys: "patch_embed.proj.weight" in keys and is_swin(keys) and _microsoft_swin(keys),
                microsoft_swin_to_timm, names="timm", family="swin", implies=swin_implies)
LAYOUTS = (LAYOUT,)
