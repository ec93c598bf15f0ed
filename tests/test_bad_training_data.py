"""Issue 24 (3): bad training data is found before training, in one line per problem that names the fix."""
import numpy as np
import pytest
from PIL import Image

from tests.in_process import train_py
from tests.train_runs import TINY
from vit_common import ConfigError
from vit_common.train.recipe import TrainConfig
from vit_common.train.run import resolve_run
from vit_data.sources import load_source


def make_folder(root, per_class: dict[str, dict[str, int]], corrupt: str | None = None):
    rng = np.random.default_rng(0)
    for split, counts in per_class.items():
        for name, n in counts.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / split / name / f"{i:03d}.png")
    if corrupt:
        (root / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG any more")
    return root


@pytest.fixture(scope="module")
def two_hundred(tmp_path_factory):
    """200 training PNGs (2 classes), one of them corrupt, and 40 test PNGs."""
    return make_folder(tmp_path_factory.mktemp("folder"), {"train": {"a": 100, "b": 100}, "test": {"a": 20, "b": 20}},
                       corrupt="train/b/042.png")


def test_corrupt_file_is_named_when_the_dataset_opens(two_hundred):
    with pytest.raises(ValueError) as e:
        load_source(f"folder:{two_hundred}", "train")
    lines = str(e.value).splitlines()
    assert lines[0].startswith(f"1 of 200 images in folder:{two_hundred} (train) cannot be read")
    assert [line for line in lines if "042.png" in line] == [
        next(line for line in lines if line.strip().startswith(f"image {two_hundred / 'train/b/042.png'} is not readable"))]
    assert "--skip-bad-images" in lines[-1]
    source = load_source(f"folder:{two_hundred}", "train", skip_bad_images=True)
    assert len(source) == 199


def run_train(monkeypatch, capsys, workdir, dataset, *extra):
    """train.py in this process (tests/in_process.py): (exit code, stdout, stderr)."""
    code = train_py(monkeypatch, *TINY, "--epochs", "1", "--framework", "torch", "--dataset", f"folder:{dataset}",
                    "--workdir", workdir, "--model-args", '{"num_classes": 2}', *extra)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_stops_before_compiling_then_skips_with_the_flag(two_hundred, tmp_path, monkeypatch, capsys):
    code, out, err = run_train(monkeypatch, capsys, tmp_path / "w", two_hundred)
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    named = [line for line in err.splitlines() if "042.png" in line]
    assert len(named) == 1 and "is not readable" in named[0]
    assert not (tmp_path / "w" / "config.json").exists()  # nothing built, nothing written
    code, out, err = run_train(monkeypatch, capsys, tmp_path / "w", two_hundred, "--skip-bad-images")
    assert code == 0, err[-2000:]
    assert f"folder:{two_hundred} (train): skipped 1 unreadable image of 200 (--skip-bad-images)" in out
    assert (tmp_path / "w" / "final.npz").is_file()


def resolve(dataset, **fields):
    config = TrainConfig(dataset=dataset, img_size=8, patch_size=4, **fields)
    return resolve_run(config, shard_index=0, shard_count=1, replicas=1)


def test_a_dataset_smaller_than_a_batch_names_the_fix(tmp_path):
    root = make_folder(tmp_path, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    with pytest.raises(ConfigError, match=r"has 4 images, fewer than one batch of 128; lower --batch-size \(at most 4\)"):
        resolve(f"folder:{root}")
    # The 4-image run: one step in all, which the schedule cannot decay over (optax failed).
    with pytest.raises(ConfigError, match=r"1 step\(s\) per epoch of --batch-size 4, 1 epoch\(s\).*raise --epochs"):
        resolve(f"folder:{root}", batch_size=4, epochs=1)
    assert resolve(f"folder:{root}", batch_size=2, epochs=1).cfg.num_classes == 2


def test_one_class_in_the_training_split_names_the_fix(tmp_path):
    root = make_folder(tmp_path, {"train": {"a": 8}, "test": {"a": 2, "b": 2}})
    with pytest.raises(ConfigError, match=r"holds one class only \(a\); a classifier needs two or more"):
        resolve(f"folder:{root}", batch_size=2)


def test_no_test_split_names_the_fix(tmp_path):
    root = make_folder(tmp_path, {"train": {"a": 8, "b": 8}})
    with pytest.raises(ValueError, match=r"test does not exist .* hold some of train out: --train-split 'train\[:90%\]' "
                                         r"--test-split 'train\[90%:\]'"):
        resolve(f"folder:{root}", batch_size=2)
    assert len(resolve(f"folder:{root}", batch_size=2, train_split="train[:75%]", test_split="train[75%:]")
               .test_source) == 4
