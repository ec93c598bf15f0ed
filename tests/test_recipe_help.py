"""train.py explains itself: every recipe field has help with its default (and choices), a
folder dataset sets the class count, and the start-up block says what was found and will be done."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from vit_common import ConfigError
from vit_common.train.recipe import PRESETS, TrainConfig, parse_train_args
from vit_common.train.run import resolve_run, startup_lines


def test_every_field_has_help_with_its_default(capsys):
    with pytest.raises(SystemExit):
        parse_train_args(["--help"])
    text = " ".join(capsys.readouterr().out.split("options:", 1)[1].split())  # argparse wraps lines
    for field in dataclasses.fields(TrainConfig):
        assert field.metadata.get("help"), f"TrainConfig.{field.name} has no help text"
        option = f"--{field.name.replace('_', '-')}"
        assert option in text, option
        entry = text.split(option + " ", 1)[1].split(" --", 1)[0]
        assert "(default: " in entry, f"{option}: no default in {entry!r}"
    assert "--framework {jax,torch}" in text and "--dtype {float32,bfloat16}" in text
    assert "--sharding {data,fsdp}" in text and "--hflip [{true,false}]" in text  # bare --hflip: true
    assert "(default: 16)" in text.split("--img-size IMG_SIZE", 1)[1][:200]  # the digits preset's, not the field's 224


def test_choices_are_enforced(capsys):
    with pytest.raises(SystemExit):
        parse_train_args(["--framework", "tensorflow"])
    assert "invalid choice: 'tensorflow'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> str:
    """4 classes of 32 px RGB images: train 3 per class, test 1."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 1)):
        for name in ("circle", "square", "star", "triangle"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(root / split / name / f"{i}.png")
    return f"folder:{root}"


def test_folder_sets_num_classes_and_startup_says_what_it_found(shapes):
    config = parse_train_args(["--dataset", shapes, "--batch-size", "4", "--workdir", "unused"])
    assert "num_classes" not in config.model_args  # no preset pins it
    run = resolve_run(config, shard_index=0, shard_count=1, replicas=1)
    assert run.cfg.num_classes == 4 and run.cfg.in_chans == 3
    lines = startup_lines(run, devices="1 cpu device", steps_per_epoch=3)
    text = "\n".join(lines)
    assert "4 classes (circle, square, star, triangle)" in text
    assert "train 12 images, test 4" in text
    assert "images 32x32x3, resized to 16x16 (--img-size)" in text
    assert "num_classes=4" in text and "parameters" in text
    assert "40 epochs x 3 steps of 4 images = 120 steps" in text  # the digits preset's 40 epochs


def test_startup_says_a_non_square_image_loses_its_sides(tmp_path):
    # 24x40 images: the loader keeps the central 24x24 square, as vit-predict does; the line says so.
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(np.zeros((24, 40, 3), np.uint8)).save(tmp_path / split / name / "0.png")
    config = parse_train_args(["--dataset", f"folder:{tmp_path}", "--batch-size", "2", "--workdir", "unused"])
    run = resolve_run(config, shard_index=0, shard_count=1, replicas=1)
    assert run.train_source[0]["image"].shape == (24, 40, 3)
    text = "\n".join(startup_lines(run, devices="1 cpu device", steps_per_epoch=1))
    assert "images 24x40x3, central 24x24 square resized to 16x16 (--img-size; the sides are cut off)" in text

def test_a_pinned_class_count_that_does_not_match_names_the_fix(shapes):
    config = parse_train_args(["--dataset", shapes, "--model-args", '{"num_classes": 10}', "--workdir", "unused"])
    with pytest.raises(ConfigError, match=r"num_classes=10 but .* has 4 classes \(circle, square, star, triangle\); "
                                          r"leave num_classes out of --model-args"):
        resolve_run(config, shard_index=0, shard_count=1, replicas=1)


def test_presets_leave_the_class_count_to_the_dataset():
    assert all("num_classes" not in recipe.get("model_args", {}) for recipe in PRESETS.values())
