"""A train.py run records the preprocessing its evaluation used (final.npz, config.json, the run
folder as read_checkpoint reads it), and vit-predict applies it: on the run's test PNGs it gives,
image for image, the predictions the run's own evaluation made, in both twins and both frameworks."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.train_runs import run_train
from vit_common.cli.vit_predict import main as vit_predict
from vit_common.formats import read_checkpoint
from vit_common.predict.preprocess import load_image, preprocess
from vit_data import load_source, make_loader

TRAIN_PER_CLASS, TEST_PER_CLASS = 14, 6  # 140 train and 60 test images


def write_digit_pngs(root: Path, mode: str) -> None:
    """scikit-learn's digits as 24 wide x 30 tall PNGs (8x8 upscaled 3x, a bar above and below):
    not square and not the model's 8 px, so the resize rule, filter and crop all matter."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(10):
        members = np.flatnonzero(digits.target == label)[:TRAIN_PER_CLASS + TEST_PER_CLASS]
        for n, i in enumerate(members):
            gray = np.zeros((30, 24), np.uint8)
            gray[:3] = gray[-3:] = 200
            gray[3:27] = np.kron(np.round(digits.images[i] * 255 / 16), np.ones((3, 3))).astype(np.uint8)
            pixels = gray if mode == "L" else np.stack([gray, gray // 2 + 60, 255 - gray], -1)
            folder = root / ("train" if n < TRAIN_PER_CLASS else "test") / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            from PIL import Image
            Image.fromarray(pixels, mode).save(folder / f"{i}.png")


RUNS = {"jax": "L", "torch": "RGB"}  # each twin trains on its own colour mode


@pytest.fixture(scope="module", params=sorted(RUNS))
def trained(request, tmp_path_factory):
    framework, mode = request.param, RUNS[request.param]
    root = tmp_path_factory.mktemp(f"pngs_{mode}")
    write_digit_pngs(root, mode)
    workdir = tmp_path_factory.mktemp(f"run_{framework}")
    run_train(workdir, "--dataset", f"folder:{root}", "--framework", framework, "--epochs", "4",
              "--batch-size", "14", "--lr", "3e-3", "--drop-path-rate", "0", "--checkpoint-every", "1000",
              "--log-every", "10")
    return framework, mode, root, workdir


def test_checkpoints_record_the_evaluation_preprocessing(trained):
    framework, mode, _, workdir = trained
    expected = {"color_mode": mode, "resize": "center_square", "crop_pct": 1.0, "interpolation": "bilinear",
                "mean": [0.5] * len(mode), "std": [0.5] * len(mode)}
    final = read_checkpoint(workdir / "final.npz")
    assert final.meta["preprocess"] == expected
    assert json.loads((workdir / "config.json").read_text())["meta"]["preprocess"] == expected
    run_folder = read_checkpoint(workdir)  # the latest checkpoint, read through config.json
    assert run_folder.meta["preprocess"] == expected
    assert run_folder.meta["class_names"] == final.meta["class_names"] == [str(d) for d in range(10)]


def run_predictions(framework: str, mode: str, root: Path, workdir: Path):
    """(test files, labels, the run's evaluation pixels, its per-image top-1): final.npz on the
    batches of the loader training evaluated with (RunData.test_loader's arguments)."""
    import importlib

    source = load_source(f"folder:{root}", "test")
    twin = importlib.import_module(f"vit_{framework}.predict")
    ckpt = read_checkpoint(workdir / "final.npz")
    model = twin.load_model(ckpt)
    pixels, preds = [], []
    for batch in make_loader(source, img_size=8, in_chans=len(mode), batch_size=14, seed=0, train=False):
        images = batch["image"][batch["mask"]]
        pixels.append(images)
        preds.append(twin.predict(model, images, attention=False)[0].argmax(-1))
    return source.records.paths, source.records.labels, np.concatenate(pixels), np.concatenate(preds)


def predicted_top1(text: str) -> dict[str, str]:
    out, current = {}, None
    for line in text.splitlines():
        if m := re.fullmatch(r"  \d\.\d{4}  (.+)", line):
            out[current] = m.group(1)
        elif line.endswith(":") and not line.startswith(" "):
            current = line[:-1]
    return out


def test_vit_predict_reproduces_the_run_image_for_image(trained, capsys):
    framework, mode, root, workdir = trained
    paths, labels, run_pixels, run_top1 = run_predictions(framework, mode, root, workdir)
    summary = json.loads((workdir / "summary.json").read_text())
    correct = int((run_top1 == labels).sum())
    assert correct == round(summary["test_accuracy"] * len(paths))  # the run's own count
    assert correct > len(paths) // 10 * 2, "the model should have learnt something (chance is 10%)"

    # The recorded preprocessing gives the evaluation's pixels exactly; the old default would not.
    recorded = read_checkpoint(workdir / "final.npz").meta["preprocess"]
    ours = preprocess([load_image(p, mode) for p in paths], 8, in_chans=len(mode), **recorded)
    np.testing.assert_array_equal(ours, run_pixels)
    old_default = preprocess([load_image(p) for p in paths], 8, in_chans=len(mode))
    assert not np.allclose(old_default, run_pixels, atol=0.1)

    for checkpoint in (workdir / "final.npz", workdir):
        for predictor in ("jax", "torch"):
            argv = ["--checkpoint", str(checkpoint), "--framework", predictor, "--top-k", "1", *map(str, paths)]
            assert vit_predict(argv) == 0
            text = capsys.readouterr().out
            assert text.startswith("preprocessing (recorded in the checkpoint): "
                                   f"{'grayscale (L)' if mode == 'L' else 'RGB'}; central square")
            top1 = predicted_top1(text)
            assert [top1[str(p)] for p in paths] == [str(c) for c in run_top1], (checkpoint, predictor)
