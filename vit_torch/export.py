"""Deployment artifacts of a PyTorch model (twin of vit_jax/export.py): an ONNX graph or a
torch.export program, batch dimension dynamic, image size the model's; each checked in the
runtime that serves it (onnxruntime, torch.export.load) against the model itself.

torch.jit.script is not offered: it cannot compile these models (the first stop is PatchEmbed's
shape check, a list whose size TorchScript cannot infer; NamedTuple outputs and Optional modules
follow) and PyTorch has deprecated it in favour of torch.export, which the .pt2 format is."""
from __future__ import annotations

import io
import logging

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from vit_common.export import FORMATS, INPUT_NAME, TRACE_BATCH, check_images, output_name

from .models import Model

OPSET = 18  # the lowest opset torch's torch.export-based ONNX exporter writes


def _example(model: Model) -> torch.Tensor:
    return torch.from_numpy(check_images(model.cfg, TRACE_BATCH).transpose(0, 3, 1, 2).copy())


def _dynamic_batch() -> tuple[dict[int, torch.export.Dim]]:
    return ({0: torch.export.Dim("batch", min=1)},)


def export_program(model: Model) -> torch.export.ExportedProgram:
    """torch.export of the model in eval mode, batch dimension symbolic."""
    model.eval()
    with torch.no_grad():
        return torch.export.export(model, (_example(model),), dynamic_shapes=_dynamic_batch())


def serialize(model: Model, fmt: str, opset: int = OPSET) -> bytes:
    """The artifact's bytes: a .pt2 (torch.export.save) or an ONNX model (weights inside)."""
    if fmt == "torch-export":
        buffer = io.BytesIO()
        torch.export.save(export_program(model), buffer)
        return buffer.getvalue()
    if fmt == "onnx":
        return _onnx(model, opset)
    raise ValueError(f"the PyTorch twin writes {sorted(f for f, v in FORMATS.items() if v.framework == 'torch')}, "
                     f"not {fmt!r}")


def _onnx(model: Model, opset: int) -> bytes:
    # The exporter logs a warning per torchvision operator it cannot register (torchvision is not used here).
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        # The math attention kernel while tracing: with the fused CPU kernel, the traced graph views
        # attention's output with strides that the exporter's decomposition of it does not keep
        # ("Cannot view a tensor ... as a tensor with shape", Swin's masked windows). ONNX opset 18
        # has no fused attention op, so the graph is the same arithmetic either way.
        with sdpa_kernel(SDPBackend.MATH):
            program = torch.onnx.export(model.eval(), (_example(model),), dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=[output_name(model.cfg)],
                                        dynamic_shapes=_dynamic_batch(), external_data=False, verbose=False)
    finally:
        registration.setLevel(level)
    return program.model_proto.SerializeToString()


def reference(model: Model, images_nhwc: np.ndarray) -> np.ndarray:
    """What the twin computes for NHWC images: the values the artifact must reproduce."""
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy())).float().numpy()


def run_artifact(blob: bytes, fmt: str, images_nhwc: np.ndarray) -> np.ndarray:
    """The artifact's output, computed by its own runtime from its bytes alone."""
    x = np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
        return session.run(None, {INPUT_NAME: x})[0]
    program = torch.export.load(io.BytesIO(blob))
    with torch.inference_mode():
        return program.module()(torch.from_numpy(x)).numpy()


def versions(fmt: str, opset: int = OPSET) -> dict[str, str]:
    """The libraries that wrote the artifact (recorded in its sidecar)."""
    out = {"torch": torch.__version__}
    if fmt == "onnx":
        import onnx
        import onnxscript

        out.update(onnx=onnx.__version__, onnxscript=onnxscript.__version__, opset=str(opset))
    return out


def runtime_version(fmt: str) -> str:
    if fmt == "onnx":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    return f"torch.export.load (torch {torch.__version__})"
