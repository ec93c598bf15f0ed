"""vit-export's artifacts of the full-size ViT-B/16, DeiT-S distilled, Swin-T and EVA-02-T (random
weights), each run in its own runtime in a fresh process that does not import the project
(onnxruntime, torch.export.load, jax alone), within 1e-5 of its twin at batch 1 and 3.

Each keeps its family's width, heads, patch, 224 px, head and parts (DeiT's distillation token and
second head, Swin's four stages with shifted windows, masks and patch merging, EVA's rotary tables
and SwiGLU) so the exporters trace the real shapes, but only 2 blocks per stack (Swin: 2 per stage,
its third stage's 6 down to 2), for the suite's time: the ONNX exporter's cost grows with the graph
(its rewriter tries every rule on every node), and the full depths took ~200 CPU seconds here, the
suite's heaviest item. Their blocks are the same block repeated, so 2 of them trace every operator
and the hand-over from one block to the next. At full depth the artifacts measured, on 2026-12-07
on a 2-core Intel Xeon @ 2.80GHz: onnxruntime 1.4e-6 (ViT-B/16, `vit-export` of
`vit_base_patch16_224`, see docs/deployment.md), 1.3e-6 (DeiT-S), 6.0e-7 (Swin-T) and 4.2e-7
(EVA-02-T) (this module without the depth overrides); torch.export and jax.export 0 for all four.
Each family is exported once per format (module fixture) and each runtime runs all twelve artifacts
in one process."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flax import nnx

import vit_jax
import vit_torch
from parity_tests.export_runtimes import run_fresh
from parity_tests.harness import FLOAT32_TOL, perturb, rel_error
from vit_common import get_config, read_checkpoint, save_npz
from vit_common.cli.vit_export import main as vit_export
from vit_common.export import CHECK_BATCHES, check_images

FAMILIES = ("vit_base_patch16_224", "deit_small_distilled_patch16_224", "swin_tiny_patch4_window7_224",
            "eva02_tiny_patch14_224")
REDUCED = {"vit_base_patch16_224": {"depth": 2}, "deit_small_distilled_patch16_224": {"depth": 2},  # see the docstring
           "swin_tiny_patch4_window7_224": {"depths": (2, 2, 2, 2)}, "eva02_tiny_patch14_224": {"depth": 2}}
RUNTIMES = {"onnx": "onnxruntime", "torch-export": "torch.export.load", "jax-export": "jax"}
SUFFIX = {"onnx": ".onnx", "torch-export": ".pt2", "jax-export": ".jax"}


def _inputs(cfg, layout: str) -> dict[str, np.ndarray]:
    images = {f"batch{b}": check_images(cfg, b, seed=7) for b in CHECK_BATCHES}
    return {k: np.ascontiguousarray(v.transpose(0, 3, 1, 2)) if layout == "NCHW" else v for k, v in images.items()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (artifacts by format, each twin's outputs on the check images)."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for name in FAMILIES:
        torch.manual_seed(0)
        weights = perturb(vit_torch.to_canonical(vit_torch.create_model(name, **REDUCED.get(name, {}))), seed=0)
        src = root / f"{name}.npz"
        save_npz(src, weights, get_config(name, **REDUCED.get(name, {})))
        artifacts = {}
        for fmt in RUNTIMES:
            artifacts[fmt] = root / f"{name}{SUFFIX[fmt]}"
            # --no-verify: the fresh processes below are the check (the in-process one is test_export_cli's)
            assert vit_export([str(src), str(artifacts[fmt]), "--no-verify"]) == 0
        ckpt = read_checkpoint(src)
        tm = vit_torch.load_canonical_(vit_torch.build_model(ckpt.config), ckpt.weights).eval()
        jm = vit_jax.load_canonical_(vit_jax.build_model(ckpt.config, rngs=nnx.Rngs(0)), ckpt.weights)
        jm.eval()
        with torch.inference_mode():
            want_torch = {k: tm(torch.from_numpy(x)).numpy() for k, x in _inputs(ckpt.config, "NCHW").items()}
        want_jax = {k: np.asarray(nnx.jit(lambda m, x: m(x))(jm, x)) for k, x in _inputs(ckpt.config, "NHWC").items()}
        out[name] = (ckpt.config, artifacts, {"torch": want_torch, "jax": want_jax})
    return out


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    """format -> name -> outputs, each runtime in one fresh process for all families."""
    work = tmp_path_factory.mktemp("runtimes")
    results = {}
    for fmt, runtime in RUNTIMES.items():
        layout = "NHWC" if fmt == "jax-export" else "NCHW"
        jobs = [(artifacts[fmt], _inputs(cfg, layout)) for cfg, artifacts, _ in exported.values()]
        results[fmt] = dict(zip(exported, run_fresh(runtime, jobs, work)))
    return results


@pytest.mark.parametrize("fmt", list(RUNTIMES))
@pytest.mark.parametrize("name", FAMILIES)
def test_artifact_matches_twin_in_fresh_runtime(exported, served, fmt, name, record):
    cfg, artifacts, want = exported[name]
    twin = "jax" if fmt == "jax-export" else "torch"
    errors = {}
    for batch in CHECK_BATCHES:
        got, ref = served[fmt][name][f"batch{batch}"], want[twin][f"batch{batch}"]
        assert got.shape == (batch, cfg.num_classes or cfg.num_features)
        assert np.abs(ref).max() > 0.1  # random weights: an all-zero output would prove nothing
        errors[batch] = rel_error(got, ref)
        assert errors[batch] <= FLOAT32_TOL, (name, fmt, batch, errors[batch])
    record(name, f"{fmt} in {RUNTIMES[fmt]}", {"logits" if cfg.num_classes else "pooled": max(errors.values())})
    sidecar = json.loads(artifacts[fmt].with_name(artifacts[fmt].name + ".json").read_text())
    assert sidecar["input"]["shape"][0] == "batch" and sidecar["image_size"] == [cfg.img_size] * 2
