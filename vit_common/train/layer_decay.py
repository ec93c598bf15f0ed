"""Layer-wise learning-rate decay (BEiT, MAE and DeiT III fine-tuning), shared by both twins'
optimizers: which layer each parameter belongs to, and the factor its learning rate is scaled by.

Names are timm's, '.'-joined; the leaf's own name (weight, kernel, scale) does not matter, so a
Flax parameter path and the PyTorch name of the same parameter get the same layer:

- 0: the embeddings: `patch_embed.*`, `stem.*`, `norm_pre`, and every top-level `*_token(s)` or
  `*_embed` (`cls_token`, `dist_token`, `reg_token`, `pos_embed`, `absolute_pos_embed`...);
- 1 .. depth: the transformer blocks in order: `blocks.N` -> N + 1. Swin's `layers.S.blocks.N` are
  counted across the stages, and a stage's patch merging (`layers.S.downsample`, anything else
  under `layers.S`) goes with the stage's first block, as timm's Swin groups them;
- depth + 1: everything after the blocks: the final `norm`, `fc_norm`, `head`, `head_dist`,
  `attn_pool`, `pre_logits`, and any top-level name not listed above (a module this code does
  not know trains at the full rate rather than a silently decayed one).

The scale is rate ** (depth + 1 - layer): the head at the full learning rate, each block `rate`
times the one above it, the embeddings lowest. The final norm sits with the head, as in BEiT's and
MAE's fine-tuning code; timm's group matchers put it with the last block instead (one factor of
`rate` lower). depth is counted from the names themselves, so a new family needs no entry here
as long as its blocks are named `blocks.N` or `layers.S.blocks.N`.
"""
from __future__ import annotations

import re
from typing import Iterable

from ..errors import ConfigError

_BLOCK = re.compile(r"blocks\.(\d+)(?:\.|$)")
_STAGE = re.compile(r"(?:layers|stages)\.(\d+)(?:\.blocks\.(\d+))?(?:\.|$)")


def _block_key(name: str) -> tuple[int, int] | None:
    """(stage, block) for a parameter inside the blocks, None outside them."""
    if m := _BLOCK.match(name):
        return 0, int(m[1])
    if m := _STAGE.match(name):
        return int(m[1]), int(m[2] or 0)
    return None


def _is_embedding(name: str) -> bool:
    top = name.split(".", 1)[0]
    return top in ("patch_embed", "stem", "norm_pre") or top.endswith(("_token", "_tokens", "_embed"))


def layer_ids(names: Iterable[str]) -> tuple[dict[str, int], int]:
    """({name: layer id}, depth) for a model's parameter names."""
    names = list(names)
    keys = {name: _block_key(name) for name in names}
    order = sorted({k for k in keys.values() if k is not None})
    if not order:
        raise ConfigError(f"layer decay needs transformer blocks named blocks.N or layers.S.blocks.N; none among "
                          f"the parameters ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    block_layer = {k: i + 1 for i, k in enumerate(order)}
    depth = len(order)
    ids = {name: block_layer[k] if k is not None else 0 if _is_embedding(name) else depth + 1
           for name, k in keys.items()}
    return ids, depth


def layer_scales(names: Iterable[str], rate: float) -> dict[str, float]:
    """{name: learning-rate factor}: rate ** (depth + 1 - layer id)."""
    ids, depth = layer_ids(names)
    return {name: rate ** (depth + 1 - i) for name, i in ids.items()}
