"""A train.py run records the preprocessing its evaluation used (final.npz, config.json, the run
folder as read_checkpoint reads it), and vit-predict applies it: on the run's test PNGs it gives,
image for image, the predictions the run's own evaluation made, in both twins and both frameworks."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.in_process import train_py
from tests.train_runs import TINY
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
    with pytest.MonkeyPatch.context() as monkeypatch:  # train.py's main() in this process
        assert train_py(monkeypatch, *TINY, "--workdir", workdir, "--dataset", f"folder:{root}", "--framework",
                        framework, "--epochs", "4", "--batch-size", "14", "--lr", "3e-3", "--drop-path-rate", "0",
                        "--checkpoint-every", "1000", "--log-every", "10") == 0
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


def square_crops(paths, out: Path) -> list[Path]:
    """The central 24x24 of each 24x30 test PNG: on square images transformers' resize-then-crop
    and the run's crop-then-resize (center_square) give the same pixels."""
    from PIL import Image

    out.mkdir()
    crops = []
    for p in paths:
        with Image.open(p) as image:
            crops.append(out / f"{p.parent.name}_{p.name}")
            image.crop((0, 3, 24, 27)).save(crops[-1])
    return crops


def test_a_run_converted_to_hf_opens_in_transformers(trained, tmp_path, capsys):
    """vit-convert RUN --to hf writes preprocessor_config.json: AutoImageProcessor + the model
    (and, for an RGB model, pipeline("image-classification")) give the twins' probabilities, and
    vit-predict on the folder reads its preprocessing back."""
    import torch
    import transformers
    from vit_common.cli.vit_convert import main as vit_convert

    framework, mode, root, workdir = trained
    folder = tmp_path / "hf"
    assert vit_convert([str(workdir), str(folder), "--to", "hf"]) == 0
    processor_note = capsys.readouterr().err
    paths = square_crops(load_source(f"folder:{root}", "test").records.paths, tmp_path / "square")
    images = [load_image(p, mode) for p in paths]

    ckpt = read_checkpoint(workdir)
    twin = __import__(f"vit_{framework}.predict", fromlist=["predict"])
    x = preprocess(images, 8, in_chans=len(mode), **ckpt.meta["preprocess"])
    ours = np.asarray(twin.predict(twin.load_model(ckpt), x, attention=False)[0], np.float64)  # probabilities

    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    model = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        theirs = model(**processor(images, return_tensors="pt")).logits.softmax(-1).double().numpy()
    # float32 on both sides; the processor scales x * (1/255) then normalises where the twins
    # compute x / 127.5 - 1: the same pixels within a float32 rounding.
    assert np.abs(theirs - ours).max() <= 1e-5, np.abs(theirs - ours).max()
    names = model.config.id2label
    if mode == "RGB":
        pipe = transformers.pipeline("image-classification", model=str(folder), top_k=10)
        for image, row in zip(images, ours):
            scores = {r["label"]: r["score"] for r in pipe(image)}
            assert max(abs(scores[names[i]] - p) for i, p in enumerate(row)) <= 1e-5
    else:
        assert "pipeline() converts every image to RGB" in processor_note

    assert vit_predict(["--checkpoint", str(folder), "--framework", "torch", "--top-k", "1", *map(str, paths)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("preprocessing (recorded in the checkpoint): ")
    top1 = predicted_top1(text)
    assert [top1[str(p)] for p in paths] == [names[i] for i in ours.argmax(-1)]
