"""Issue 24 (1): no tool writes over what it was given or over an existing file without --overwrite,
whatever the order of its arguments, and every write is atomic (a kill mid-write leaves the old file)."""
import hashlib
import itertools
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.checkpoint_factories import random_canonical
from vit_common.cli import vit_convert, vit_predict
from vit_common.config import get_config
from vit_common.formats import save_npz

pytest.importorskip("torch")  # the CLIs run the PyTorch twin here (no compile: quick)

TINY = dict(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=3)


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    cfg = get_config("vit_tiny_patch16_224", **TINY)
    save_npz(root / "model.npz", random_canonical(cfg), cfg, meta={"class_names": ["a", "b", "c"]})
    rng = np.random.default_rng(0)
    for name in ("circle_000.png", "circle_001.png"):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / name)
    return root


def inputs(root: Path) -> dict[str, str]:
    return {p.name: sha(p) for p in root.iterdir() if p.is_file()}


def test_attention_map_never_takes_an_image_as_its_output(setup, capsys):
    """The issue's command: the first image after --attention-map was written over. Now the option
    takes a folder, and an image file name there is refused before anything runs."""
    before = inputs(setup)
    with pytest.raises(SystemExit) as e:
        vit_predict.main(["--checkpoint", str(setup / "model.npz"), "--framework", "torch", "--attention-map",
                          str(setup / "circle_000.png"), str(setup / "circle_001.png")])
    assert e.value.code == 2
    assert "--attention-map takes a folder" in capsys.readouterr().err
    assert inputs(setup) == before


def test_map_folder_holding_the_inputs_is_refused_even_with_overwrite(setup, capsys):
    before = inputs(setup)
    argv = ["--checkpoint", str(setup / "model.npz"), "--framework", "torch", "--attention-map", str(setup),
            str(setup / "circle_000.png")]
    for extra in ([], ["--overwrite"]):
        assert vit_predict.main(argv + extra) == 2
        assert "is one of the inputs; refusing to write over it" in capsys.readouterr().err
    assert inputs(setup) == before


def test_existing_outputs_need_overwrite(setup, tmp_path, capsys):
    maps, features = tmp_path / "maps", tmp_path / "f.npy"
    argv = ["--checkpoint", str(setup / "model.npz"), "--framework", "torch", "--attention-map", str(maps),
            "--save-features", str(features), str(setup / "circle_000.png")]
    assert vit_predict.main(argv) == 0
    written = {p: sha(p) for p in (maps / "circle_000.png", features)}
    features.write_bytes(b"mine")
    assert vit_predict.main(argv) == 2  # the map exists: refused before any model is read
    assert f"{maps / 'circle_000.png'} exists; pass --overwrite" in capsys.readouterr().err
    assert features.read_bytes() == b"mine"
    (maps / "circle_000.png").unlink()
    assert vit_predict.main(argv) == 2
    assert f"{features} exists; pass --overwrite" in capsys.readouterr().err
    assert not (maps / "circle_000.png").exists() and features.read_bytes() == b"mine"
    assert vit_predict.main(argv + ["--overwrite"]) == 0
    assert sha(features) == written[features]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["circle_000.png", "f.npy", "maps"]  # no temporary left


def test_vit_convert_refuses_an_existing_file_unless_overwrite(setup, tmp_path, capsys):
    dst = tmp_path / "existing.safetensors"
    dst.write_bytes(b"someone's file")
    assert vit_convert.main([str(setup / "model.npz"), str(dst)]) == 2
    assert f"{dst} exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert dst.read_bytes() == b"someone's file"
    assert vit_convert.main([str(setup / "model.npz"), str(dst), "--overwrite"]) == 0
    assert dst.read_bytes()[:8] != b"someone'"
    capsys.readouterr()


def test_vit_convert_never_writes_inside_its_source_folder(tmp_path, capsys):
    cfg = get_config("vit_tiny_patch16_224", **TINY)
    run = tmp_path / "run"
    assert vit_convert.main([str(_npz(tmp_path, cfg)), str(run)]) == 0  # a run folder
    capsys.readouterr()
    before = {p: sha(p) for p in run.rglob("*") if p.is_file()}
    assert vit_convert.main([str(run), str(run / "config.json.npz"), "--overwrite"]) == 2
    assert "refusing to overwrite the source" in capsys.readouterr().err
    assert {p: sha(p) for p in run.rglob("*") if p.is_file()} == before


def _npz(folder, cfg):
    save_npz(folder / "w.npz", random_canonical(cfg), cfg)
    return folder / "w.npz"


def test_inputs_unchanged_under_any_argument_order(setup, tmp_path, capsys):
    """Every CLI run over shuffled argument groups (the issue's misuse included: an image given
    where an output is expected, source and destination swapped) leaves every input byte-identical."""
    before = inputs(setup)
    ckpt, img0, img1 = (str(setup / n) for n in ("model.npz", "circle_000.png", "circle_001.png"))
    groups = [["--attention-map", img0], ["--attention-map", str(setup)],
              ["--attention-map", str(tmp_path / "m")], ["--save-features", img1], ["--save-features", ckpt],
              ["--save-features", str(tmp_path / "f.npy")], [img0], [img1], ["--overwrite"], ["--framework", "torch"]]
    rng = random.Random(0)
    codes = []
    for _ in range(24):  # seeded: the same 24 orders every run
        chosen = rng.sample(groups, rng.randint(1, 4)) + [["--checkpoint", ckpt], [rng.choice((img0, img1))]]
        if ["--framework", "torch"] not in chosen:
            chosen.append(["--framework", "torch"])
        rng.shuffle(chosen)
        argv = [a for g in chosen for a in g]
        try:
            codes.append(vit_predict.main(argv))
        except SystemExit as e:
            codes.append(e.code)
        assert inputs(setup) == before, argv
    work = tmp_path / "convert"  # copies: with --overwrite, a swapped order legitimately replaces its DST
    work.mkdir()
    files = [str(work / "model.npz"), str(work / "circle_000.png"), str(work / "out.safetensors")]
    for name in ("model.npz", "circle_000.png"):
        (work / name).write_bytes((setup / name).read_bytes())
    for a, b in itertools.permutations(files, 2):
        for extra in ([], ["--overwrite"]):
            for order in set(itertools.permutations([a, b, *extra])):
                src = next(x for x in order if x != "--overwrite")  # what this run reads
                hashes = {f: sha(f) for f in files if Path(f).is_file()}
                try:
                    codes.append(vit_convert.main(list(order)))
                except SystemExit as e:
                    codes.append(e.code)
                if src in hashes:
                    assert sha(src) == hashes[src], order
                if not extra:  # without --overwrite no existing file changes
                    assert {f: sha(f) for f in hashes} == hashes, order
    capsys.readouterr()
    assert 0 in codes and 2 in codes  # some orders ran, some were refused


def test_a_kill_mid_write_leaves_the_old_file(tmp_path):
    """atomic_write, which every tool writes through: SIGKILL while the new bytes are half written."""
    target = tmp_path / "weights.npz"
    target.write_bytes(b"old weights")
    script = textwrap.dedent(f"""
        import sys, time
        from vit_common.atomic import atomic_write
        def write(f):
            f.write(b"new" * 100000)
            f.flush()
            print("half written", flush=True)
            time.sleep(60)
        atomic_write({str(target)!r}, write)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "half written"
        assert target.read_bytes() == b"old weights"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert target.read_bytes() == b"old weights"
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["weights.npz"]
