"""The file containers weights travel in: .npz, .safetensors and PyTorch pickles, each with the model's config and metadata."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..atomic import atomic_write
from ..config import ModelConfig, config_from_dict
from ..errors import CheckpointError, ConfigError
from ..weights import Weights

CONFIG_KEY = "__config__"  # npz entry / safetensors metadata key holding the model config as JSON
META_KEY = "__meta__"  # JSON: class names, the preprocessing the weights expect, where they came from
STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def save_npz(path: str | os.PathLike, weights: Mapping[str, np.ndarray], config: ModelConfig | None = None,
             meta: Mapping[str, Any] | None = None) -> None:
    """Save canonical weights (and the config, so loading needs no flags) as a plain .npz."""
    arrays = {k: np.asarray(v) for k, v in weights.items()}
    if config is not None:
        arrays[CONFIG_KEY] = np.array(config.to_json())
    if meta:
        arrays[META_KEY] = np.array(json.dumps(dict(meta), sort_keys=True))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_npz(path: str | os.PathLike) -> tuple[Weights, ModelConfig | None]:
    """Canonical weights and the stored config (None if the file carries none)."""
    weights, config, _ = read_npz(path)
    return weights, config


def read_npz(path) -> tuple[Weights, ModelConfig | None, dict]:
    path = existing(path)
    if not zipfile.is_zipfile(path):  # np.load would take other bytes for a pickle and suggest unpickling
        raise CheckpointError(f"{path}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as data:
            weights = {k: void_to_bfloat16(data[k]) for k in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{path}: not a readable .npz file ({e})") from e
    config = weights.pop(CONFIG_KEY, None)
    config = embedded_config(path, str(config)) if config is not None else None
    meta = weights.pop(META_KEY, None)
    meta = embedded_json(path, str(meta), "metadata") if meta is not None else {}
    for prefix in ("opt/target/",):  # vision_transformer's optimizer-wrapped checkpoints
        if weights and all(k.startswith(prefix) for k in weights):
            weights = {k[len(prefix):]: v for k, v in weights.items()}
    return weights, config, meta


def void_to_bfloat16(a: np.ndarray) -> np.ndarray:
    """np.save writes bfloat16 (no numpy type) as 2-byte void, as in big_vision's bf16 checkpoints
    (its loader views them back the same way); other arrays pass as they are."""
    if a.dtype.kind != "V" or a.dtype.itemsize != 2 or a.dtype.names is not None:
        return a
    from ml_dtypes import bfloat16

    return a.view(bfloat16)


def save_state_dict(path: str | os.PathLike, state_dict: Mapping[str, np.ndarray], config: ModelConfig | None = None,
                    meta: Mapping[str, Any] | None = None, *, wrapper: str | None = "state_dict",
                    metadata: Mapping[str, str] | None = None, safetensors: bool | None = None) -> None:
    """The one way a state dict is saved, by the suffix: .safetensors (the config and metadata in
    its string metadata, beside `metadata`), or a torch pickle (.pt / .pth / .bin): {wrapper: the
    state dict, 'config', 'meta'}, or the state dict alone (wrapper None, no config or meta).
    Without config or meta, no entry of this project's rides along (a project's own loader may
    load strictly). `safetensors` forces the container whatever the suffix."""
    path = Path(path)
    arrays = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
    if path.suffix == ".safetensors" if safetensors is None else safetensors:
        from safetensors.numpy import save

        strings = dict(metadata or {})
        if config is not None:
            strings[CONFIG_KEY] = config.to_json()
        if meta:
            strings[META_KEY] = json.dumps(dict(meta), sort_keys=True)
        blob = save(arrays, metadata=strings or None)
        atomic_write(path, lambda f: f.write(blob))
        return
    import torch

    tensors = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
    obj: dict[str, Any] = {wrapper: tensors} if wrapper else tensors
    if config is not None:
        obj["config"] = config.to_dict()
    if meta:
        obj["meta"] = dict(meta)
    atomic_write(path, lambda f: torch.save(obj, f))


def save_safetensors(path: str | os.PathLike, state_dict: Mapping[str, np.ndarray], config: ModelConfig | None = None,
                     meta: Mapping[str, Any] | None = None) -> None:
    save_state_dict(path, state_dict, config, meta, safetensors=True)


def load_state_dict(path: str | os.PathLike) -> tuple[Weights, ModelConfig | None]:
    """A PyTorch state dict as numpy arrays, from .safetensors (no torch needed) or a pickle."""
    weights, config, _ = read_state_dict(path)
    return weights, config


def read_state_dict(path) -> tuple[Weights, ModelConfig | None, dict]:
    path = existing(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(f"{path}: reading PyTorch pickles needs torch; use .safetensors or .npz") from e
    if is_torchscript(path):
        raise CheckpointError(
            f"{path}: a TorchScript archive (as OpenAI released CLIP), not read: loading one runs the code inside. "
            "Trusting it, save its weights first: torch.save(torch.jit.load(PATH, map_location='cpu').state_dict(), "
            "'weights.pt'), and convert that")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        # Not torch's text: it advises weights_only=False (unpickling arbitrary code) for any damage.
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}; damaged, or not "
                              "written by torch.save)") from e
    config = meta = None
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict):  # written by vit-convert
        try:
            config, meta = config_from_dict(obj["config"]), obj.get("meta") or {}
        except (ConfigError, TypeError):  # another program's 'config' (a training recipe): not a model config
            config = meta = None
        if config is not None and not isinstance(meta, dict):
            raise CheckpointError(f"{path}: its metadata is damaged (a {type(meta).__name__}, not a dict)")
    for wrapper in ("state_dict", "model", "model_state"):  # training checkpoints wrap the weights
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):  # saved from DistributedDataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return {k: tensor_to_numpy(v) for k, v in obj.items()}, config, meta or {}


def is_torchscript(path: Path) -> bool:
    """torch.jit.save's zip holds the module's code (<archive>/code/__torch__/...); torch.save's does not."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            return any("/code/__torch__/" in name for name in z.namelist())
    except (zipfile.BadZipFile, ValueError, OSError):  # a damaged directory (e.g. a name not UTF-8): torch.load says
        return False


def read_safetensors(path: Path) -> tuple[Weights, ModelConfig | None, dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({e})") from e
    config = embedded_config(path, metadata[CONFIG_KEY]) if CONFIG_KEY in metadata else None
    meta = embedded_json(path, metadata[META_KEY], "metadata") if META_KEY in metadata else {}
    return weights, config, meta


def embedded_json(path, text: str, what: str) -> dict:
    """A JSON object stored inside a checkpoint; damage is the file's fault, so the error names the file."""
    try:
        value = json.loads(text)
    except ValueError as e:  # json.JSONDecodeError, and bad unicode escapes
        raise CheckpointError(f"{path}: its embedded {what} is damaged (not valid JSON: {e})") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: its embedded {what} is damaged (a JSON {type(value).__name__}, not an object)")
    return value


def embedded_config(path, text: str) -> ModelConfig:
    try:
        return config_from_dict(embedded_json(path, text, "config"))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: its embedded config is damaged ({e})") from e


def save_torch(path: str | os.PathLike, state_dict: Mapping[str, np.ndarray], config: ModelConfig | None = None,
               meta: Mapping[str, Any] | None = None) -> None:
    """A PyTorch pickle {'state_dict', 'config', 'meta'}; loads with torch.load(weights_only=True)."""
    save_state_dict(path, state_dict, config, meta, safetensors=False)


def tensor_to_numpy(t) -> np.ndarray:
    """Same dtype, so the reader can state a cast (read_checkpoint widens half precision).
    numpy has no bfloat16: ml_dtypes' (which safetensors and jax use) holds it, else float32."""
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        try:
            from ml_dtypes import bfloat16
        except ImportError:
            return t.float().numpy()  # widening is exact
        return t.view(torch.int16).numpy().view(bfloat16)
    return t.numpy()


def read_file(path: str | os.PathLike) -> tuple[Weights, ModelConfig | None, dict]:
    """(raw weights, the config the file carries or None, its metadata) of a checkpoint file, by its suffix."""
    path = existing(path)
    if path.suffix == ".npz":
        return read_npz(path)
    if path.suffix in STATE_DICT_SUFFIXES:
        return read_state_dict(path)
    if path.suffix == ".msgpack":  # Flax's serialization (AIMv2's JAX release)
        from .flax_msgpack import read_msgpack

        return read_msgpack(path), None, {}
    raise CheckpointError(f"{path}: unknown checkpoint format {path.suffix!r}; expected .npz, .msgpack or one of "
                          f"{STATE_DICT_SUFFIXES}")


def existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path
