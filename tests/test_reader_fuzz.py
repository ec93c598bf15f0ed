"""Issue 24 (4): every reader survives hostile files. A seeded mutator (the same cases every run,
bounded time) damages valid files of every format read_checkpoint takes: truncations, bit flips,
headers claiming terabytes or wrong dtypes, nested and malicious pickles. Each case must end in a
correct read or one of the project's errors (CheckpointError and its kin: one clear message),
never another exception, a hang, or an allocation beyond a small multiple of the file's size."""
import io
import json
import os
import pickle
import random
import shutil
import signal
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.checkpoint_factories import random_canonical
from vit_common.config import get_config
from vit_common.errors import CheckpointError, ConfigError, WeightsMismatchError
from vit_common.formats import read_checkpoint, save_npz, save_safetensors, save_torch
from vit_common.formats.flax_msgpack import save_msgpack
from vit_common.weights import TIMM

CASES_PER_FILE = 40  # x 9 files: ~30 s on 2 loaded cores
CLEAN_ERRORS = (CheckpointError, ConfigError, WeightsMismatchError)
TERA = 2**40


def cfg():
    return get_config("vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                      num_classes=3)


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("originals")
    c = cfg()
    w = random_canonical(c)
    save_npz(root / "m.npz", w, c)
    save_safetensors(root / "m.safetensors", TIMM.export(w, c), c)
    save_torch(root / "m.pt", TIMM.export(w, c), c)
    save_torch(root / "m.pth", TIMM.export(w, c))
    save_msgpack(root / "m.msgpack", {k: v for k, v in w.items()})
    from vit_common.cli import vit_convert

    assert vit_convert.main([str(root / "m.npz"), str(root / "hf"), "--to", "hf"]) == 0
    assert vit_convert.main([str(root / "m.npz"), str(root / "run")]) == 0
    return root


def read_bounded(path: Path, size: int) -> str:
    """Read `path`; 'ok' or 'error'. Fails on any other exception, a read over 20 s, or a peak
    allocation over 64 x the file's size + 32 MiB."""
    def timeout(*_):
        raise TimeoutError(f"reading {path} hung")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    tracemalloc.start()
    try:
        read_checkpoint(path)
        outcome = "ok"
    except CLEAN_ERRORS as e:
        assert str(e).strip(), path
        outcome = "error"
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert peak <= 64 * size + 32 * 2**20, f"{path}: peak allocation {peak / 2**20:.0f} MiB for a {size}-byte file"
    return outcome


def mutate(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(("truncate", "flip", "flip", "splice"))
    if kind == "truncate":
        return data[:rng.randrange(len(data))]
    if kind == "splice":  # a run of random bytes somewhere
        at = rng.randrange(len(data))
        return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))) + data[at + 64:]
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


@pytest.mark.parametrize("name", ["m.npz", "m.safetensors", "m.pt", "m.pth", "m.msgpack", "hf/model.safetensors",
                                  "hf/config.json", "run/config.json", "run/*"])
def test_mutated_files_read_or_fail_cleanly(originals, tmp_path, name):
    rng = random.Random(f"fuzz-{name}")
    outcomes = []
    for i in range(CASES_PER_FILE if name != "run/*" else 12):  # an orbax read costs ~0.4 s
        case = tmp_path / f"case{i}"
        top = name.split("/")[0]
        shutil.copytree(originals / top, case / top) if "/" in name else (case.mkdir(), shutil.copy(originals / name,
                                                                                                   case / name))
        target = case / name
        if name == "run/*":  # any file of the orbax checkpoint: its metadata, manifests, data chunks
            target = rng.choice(sorted(p for p in (case / "run").rglob("*") if p.is_file()))
        target.write_bytes(mutate(target.read_bytes(), rng))
        read_path = case / top if "/" in name else target
        size = sum(p.stat().st_size for p in Path(read_path).rglob("*") if p.is_file()) if read_path.is_dir() \
            else read_path.stat().st_size
        outcomes.append(read_bounded(read_path, max(size, 1)))
    assert "error" in outcomes  # the mutations do damage


def _safetensors_with_header(header: dict, payload: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + payload


def test_hostile_headers_claiming_terabytes_or_wrong_dtypes(tmp_path):
    cases = {
        "huge_shape.safetensors": _safetensors_with_header(
            {"cls_token": {"dtype": "F32", "shape": [TERA, TERA], "data_offsets": [0, 16]}}, b"\0" * 16),
        "huge_header.safetensors": struct.pack("<Q", TERA) + b"{}",
        "offsets_past_end.safetensors": _safetensors_with_header(
            {"cls_token": {"dtype": "F32", "shape": [4], "data_offsets": [0, TERA]}}, b"\0" * 16),
        "int_weights.safetensors": _safetensors_with_header(
            {"cls_token": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}}, b"\0" * 16),
        "string_dtype.safetensors": _safetensors_with_header(
            {"cls_token": {"dtype": "STR", "shape": [2], "data_offsets": [0, 16]}}, b"\0" * 16),
    }
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "<f4", "fortran_order": False, "shape": (TERA, TERA)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("cls.npy", npy.getvalue() + b"\0" * 64)
    cases["huge_shape.npz"] = buf.getvalue()
    obj_npy = io.BytesIO()
    np.save(obj_npy, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("cls.npy", obj_npy.getvalue())
    cases["object_array.npz"] = buf.getvalue()  # np.load must not unpickle it
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert read_bounded(tmp_path / name, len(data)) == "error", name


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickles_never_run_code(tmp_path, monkeypatch):
    """torch.load stays weights_only: a pickle calling os.system, or one nested in another, is refused."""
    monkeypatch.chdir(tmp_path)
    import torch

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": _Boom()}, f)
    with open(tmp_path / "nested.pth", "wb") as f:
        pickle.dump({"state_dict": {"w": pickle.dumps(_Boom())}}, f)
    buf = io.BytesIO()
    torch.save({"state_dict": {"cls_token": torch.zeros(1, 1, 32)}, "extra": pickle.dumps(_Boom())}, buf)
    (tmp_path / "bytes_inside.pt").write_bytes(buf.getvalue())
    for name in ("evil.pt", "nested.pth", "bytes_inside.pt"):
        assert read_bounded(tmp_path / name, (tmp_path / name).stat().st_size) == "error", name
    assert not (tmp_path / "PWNED").exists()
