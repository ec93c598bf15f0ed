"""Running vit-export's artifacts where a server would: one fresh Python process per runtime,
importing only that runtime (onnxruntime, torch, jax) and numpy, never this project, so an
artifact that still needed the project's code or weights outside it would fail here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

PROJECT = ("vit_common", "vit_torch", "vit_jax", "vit_data", "parity_tests", "tests")

# Each script reads {"jobs": [[artifact, inputs.npz, outputs.npz], ...]}, runs every array of each
# inputs file through the artifact, and checks that it imported nothing it should not.
_SCRIPTS = {
    "onnxruntime": """
import onnxruntime
def run(path, x):
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]
FORBIDDEN = ("torch", "jax", "flax")
""",
    "torch.export.load": """
import torch
def run(path, x):
    with torch.inference_mode():
        return torch.export.load(path).module()(torch.from_numpy(x)).numpy()
FORBIDDEN = ("jax", "flax", "onnxruntime")
""",
    "jax": """
import jax
def run(path, x):
    with open(path, "rb") as f:
        return jax.export.deserialize(bytearray(f.read())).call(x)
FORBIDDEN = ("torch", "flax", "onnxruntime")
""",
}
_MAIN = """
import json, sys
import numpy as np
for artifact, inputs, outputs in json.loads(sys.argv[1])["jobs"]:
    with np.load(inputs) as xs:
        np.savez(outputs, **{k: np.asarray(run(artifact, xs[k]), np.float32) for k in xs.files})
loaded = {m.split(".")[0] for m in sys.modules}
wrong = sorted(loaded & set(FORBIDDEN + PROJECT))
assert not wrong, f"the runtime process imported {wrong}"
"""


def run_fresh(runtime: str, jobs: list[tuple[Path, dict[str, np.ndarray]]], workdir: Path) -> list[dict[str, np.ndarray]]:
    """Each artifact's outputs for its named inputs, computed in one new process for `runtime`."""
    listed = []
    for i, (artifact, inputs) in enumerate(jobs):
        src, dst = workdir / f"{runtime}-{i}-in.npz", workdir / f"{runtime}-{i}-out.npz"
        np.savez(src, **inputs)
        listed.append([str(artifact), str(src), str(dst)])
    code = _SCRIPTS[runtime] + f"PROJECT = {PROJECT!r}\n" + _MAIN
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of the project on the path
    done = subprocess.run([sys.executable, "-c", code, json.dumps({"jobs": listed})], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{runtime} process failed:\n{done.stderr[-3000:]}"
    outputs = []
    for _, _, dst in listed:
        with np.load(dst) as out:
            outputs.append({k: out[k] for k in out.files})
    return outputs
