"""Find and open any checkpoint (a file in any layout, a transformers folder, a train.py run,
pretrained weights by name) as a Source: its weights, raw names, Layout, stored config, metadata."""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..errors import CheckpointError
from ..weights import Weights
from ..weights.infer import summarize
from .base import Implied, Layout
from .containers import existing, read_file
from .detect import detect_layout, layouts
from .hub import PretrainedFiles, fetch_pretrained, is_pretrained_name, name_hint
from .hub_configs import repo_config, repo_meta
from .huggingface import is_hf_folder, model_config, read_folder
from .run_folder import read_training_run
from .timm_hub import folder_files, is_timm_folder


@dataclasses.dataclass
class Source:
    """A checkpoint as found, before its config is settled."""
    weights: Weights  # in the names its layout reads to (canonical, or timm's)
    keys: set[str]  # the names as the file holds them
    layout: Layout
    config: ModelConfig | None  # the config it carries (a Hub repository's config.json says it for pretrained names)
    meta: dict[str, Any]
    derived: bool = False  # the config was read off another project's config.json, not stored by this one

    @functools.cached_property
    def implied(self) -> Implied:
        return self.layout.facts(self.weights, self.keys)

    def summary(self, family: str):
        return summarize(self.weights, family, self.layout.names == "timm")


def open_checkpoint(path: str | os.PathLike) -> Source:
    if is_pretrained_name(path):
        return _repository(fetch_pretrained(path))
    path = Path(path)
    if not path.exists() and (hint := name_hint(path)):
        raise CheckpointError(f"checkpoint {path} does not exist{hint}")
    if path.is_dir() and is_timm_folder(path):  # timm's Hub layout, on disk
        src = _repository(folder_files(path))
        src.meta["source"] = str(path)
        return src
    if path.is_dir() and is_hf_folder(path):  # transformers' save_pretrained folder
        weights, keys, layout, hf_config, meta = read_folder(path)
        src = Source(weights, keys, layout, None, meta, derived=True)
        src.config = model_config(hf_config, *src.summary(src.implied.family), str(path))
        return src
    if path.is_dir():
        weights, stored, meta = read_training_run(path)  # already canonical
        return Source(weights, set(weights), layouts()[meta.pop("layout")], stored, meta)
    raw, stored, meta = read_file(existing(path))
    layout = layouts()[detect_layout(raw)]
    return Source(layout.read(raw), set(raw), layout, stored, meta)


def _repository(files: PretrainedFiles) -> Source:
    """A Hub repository's weights with what its config.json says (timm's or transformers')."""
    src = open_checkpoint(files.weights)
    config = repo_config(files, *src.summary(src.implied.family))
    return Source(src.weights, src.keys, src.layout, config, {**src.meta, **repo_meta(files)}, derived=True)
