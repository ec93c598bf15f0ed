"""What every deployment artifact shares, whichever twin writes it: the formats and their files,
the inputs an artifact is checked on, the error it is judged by, and the JSON sidecar that tells
a server how to feed it. Framework-free: the twins' export.py modules write the artifacts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

TOLERANCE = 1e-5  # the project's float32 contract: max|a-b| / max(1, max|b|)
CHECK_BATCHES = (1, 3)  # 1, and a size other than the one the export was traced with (2)
TRACE_BATCH = 2  # batch of the example input: not 1, which tracers may specialise as a constant
INPUT_NAME = "pixel_values"


@dataclass(frozen=True)
class Format:
    name: str
    framework: str  # which twin writes it: "torch" or "jax"
    suffix: str
    layout: str  # of the input images
    runtime: str  # what serves (and checks) the artifact
    needs: tuple[str, ...]  # modules its export and check import


FORMATS = {f.name: f for f in (
    Format("onnx", "torch", ".onnx", "NCHW", "onnxruntime", ("torch", "onnx", "onnxscript", "onnxruntime")),
    Format("torch-export", "torch", ".pt2", "NCHW", "torch.export.load", ("torch",)),
    Format("jax-export", "jax", ".jax", "NHWC", "jax.export.deserialize", ("jax", "flax", "flatbuffers")),
)}
ONNX_MAX_BYTES = 2 ** 31 - 1  # one protobuf message; larger models need external data files


def sidecar_path(artifact: Path) -> Path:
    """The JSON beside an artifact: its file name with .json added (model.onnx -> model.onnx.json)."""
    return artifact.with_name(artifact.name + ".json")


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max|a-b| / max(1, max|b|); inf where either side holds NaN or inf, so that never passes a check."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"the artifact returned shape {a.shape}, its twin {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b))))) if a.size else 0.0


def check_images(cfg, batch: int, seed: int = 0) -> np.ndarray:
    """(batch, H, W, C) float32 inputs in a normalised image's range, the same for both twins."""
    rng = np.random.default_rng(seed + batch)
    return rng.standard_normal((batch, cfg.img_size, cfg.img_size, cfg.in_chans)).astype(np.float32)


def output_name(cfg) -> str:
    """A classifier's artifact returns logits; a feature model's (num_classes=0) its pooled features."""
    return "logits" if cfg.num_classes else "features"


def output_width(cfg) -> int:
    return cfg.num_classes or cfg.num_features


def input_shape(cfg, layout: str) -> list:
    hw = [cfg.img_size, cfg.img_size]
    return ["batch", cfg.in_chans, *hw] if layout == "NCHW" else ["batch", *hw, cfg.in_chans]


def sidecar(fmt: Format, artifact_name: str, cfg, preprocess: Mapping[str, Any], preprocess_source: str,
            preprocess_text: str, class_names, exported_with: Mapping[str, str], check: Mapping[str, Any] | None,
            source: str) -> dict[str, Any]:
    """What a server needs to feed the artifact and read its output, as one JSON-able dict."""
    out = output_name(cfg)
    return {
        "format": fmt.name,
        "artifact": artifact_name,
        "source": source,
        "runtime": fmt.runtime,
        "input": {"name": INPUT_NAME, "layout": fmt.layout, "dtype": "float32", "shape": input_shape(cfg, fmt.layout),
                  "dynamic": ["batch"]},
        "output": {"name": out, "dtype": "float32", "shape": ["batch", output_width(cfg)],
                   "meaning": ("class logits (softmax gives probabilities)" if out == "logits"
                               else "pooled features (the embedding; the model has no classification head)")},
        "image_size": [cfg.img_size, cfg.img_size],
        "preprocess": {**preprocess, "source": preprocess_source, "description": preprocess_text},
        "class_names": None if class_names is None else list(class_names),
        "config": cfg.to_dict(),
        "exported_with": dict(exported_with),
        "check": None if check is None else dict(check),
    }
