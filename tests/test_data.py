"""vit_data: sources read back exactly, and the loader is deterministic, resumable and shardable."""
import gzip
import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vit_data import AugmentConfig, Source, load_source, make_loader
from vit_data.augment import RAND_OPS, augment_record, mix_batch, pad_and_crop, rand_augment, soft_targets
from vit_data.sources import ArrayRecords, digits_arrays, digits_split_indices

HEAVY = AugmentConfig(random_resized_crop=True, hflip=True, randaugment=(2, 9), pad_crop=2,
                      mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)


def indexed_source(n: int, size: int = 8, chans: int = 1, constant: bool = False) -> Source:
    """Record i has label i (so batches reveal which records they hold) and a distinct image."""
    if constant:
        images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None] * 3, (n, size, size, chans))
    else:
        images = np.random.default_rng(0).integers(0, 256, (n, size, size, chans), dtype=np.uint8)
    return Source(ArrayRecords(np.ascontiguousarray(images), np.arange(n)), num_classes=n, class_names=None,
                  in_chans=chans, name=f"indexed{n}")


def take(loader, k):
    return [next(loader) for _ in range(k)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# --- sources -------------------------------------------------------------------------------------

def test_digits_source():
    train, test = load_source("digits", "train"), load_source("digits", "test")
    assert (len(train), len(test)) == (1438, 359)
    assert train.num_classes == 10 and train.in_chans == 1 and train.class_names == [str(d) for d in range(10)]
    record = train[0]
    assert record["image"].shape == (8, 8, 1) and record["image"].dtype == np.uint8
    train_labels = np.array([r["label"] for r in (train[i] for i in range(len(train)))])
    test_labels = np.array([test[i]["label"] for i in range(len(test))])
    assert set(train_labels) == set(test_labels) == set(range(10))
    assert max(train[i]["image"].max() for i in range(len(train))) == 255
    parts = digits_split_indices(np.concatenate([train_labels, test_labels]))  # any labels: disjoint, complete
    assert not set(parts["train"]) & set(parts["test"])
    assert len(load_source("digits", "train[:10%]")) == round(0.1 * 1438)
    with pytest.raises(ValueError, match="splits"):
        load_source("digits", "validation")


def test_digits_are_scikit_learns_own():
    """digits_arrays reads scikit-learn's file without importing it: the same arrays as load_digits,
    and the split's images are its pixels scaled to 0..255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels, labels = digits_arrays()
    np.testing.assert_array_equal(pixels, digits.images)
    np.testing.assert_array_equal(labels, digits.target)
    keep = digits_split_indices(labels)["test"]
    test = load_source("digits", "test")
    expected = np.round(digits.images[keep] * (255 / 16)).astype(np.uint8)[..., None]
    np.testing.assert_array_equal(np.stack([test[i]["image"] for i in range(len(test))]), expected)
    np.testing.assert_array_equal([test[i]["label"] for i in range(len(test))], digits.target[keep])


def write_idx(path, array, compress):
    codes = {np.dtype(np.uint8): 0x08}
    header = b"\0\0" + bytes([codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.mark.parametrize("compress", [True, False])
def test_idx_source_reads_back_exactly(tmp_path, compress):
    rng = np.random.default_rng(1)
    data = {}
    for prefix, n in (("train", 12), ("t10k", 5)):
        images = rng.integers(0, 256, (n, 6, 7), dtype=np.uint8)
        labels = rng.integers(0, 4, n).astype(np.uint8)
        labels[0] = 3
        suffix = ".gz" if compress else ""
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
        data[prefix] = images, labels
    for split, prefix in (("train", "train"), ("test", "t10k")):
        source = load_source(f"idx:{tmp_path}", split)
        images, labels = data[prefix]
        assert len(source) == len(labels) and source.num_classes == 4 and source.in_chans == 1
        assert source.class_names is None  # names only for Fashion-MNIST paths
        for i in range(len(labels)):
            np.testing.assert_array_equal(source[i]["image"], images[i][..., None])
            assert source[i]["label"] == labels[i]
    assert len(load_source(f"idx:{tmp_path}", "train[-4:]")) == 4


def test_idx_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path / "missing")):
        load_source(f"idx:{tmp_path / 'missing'}", "train")
    with pytest.raises(ValueError, match="train-images"):
        load_source(f"idx:{tmp_path}", "train")


def test_fashion_idx_dir_gets_class_names(tmp_path):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((10, 4, 4), np.uint8), False)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(10, dtype=np.uint8), False)
    source = load_source(f"idx:{folder}", "train")
    assert source.class_names[0] == "T-shirt/top" and source.class_names[9] == "Ankle boot"


def test_image_folder_source(tmp_path):
    rng = np.random.default_rng(2)
    written = {}
    for split, counts in (("train", {"zebra": 2, "ant": 3}), ("test", {"ant": 1, "bee": 1})):
        for name, count in counts.items():
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (5, 9, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / name / f"{i}.png")
                written[(split, name, i)] = pixels
    train = load_source(f"folder:{tmp_path}", "train")
    assert train.class_names == ["ant", "bee", "zebra"] and train.num_classes == 3 and train.in_chans == 3
    assert [train[i]["label"] for i in range(len(train))] == [0, 0, 0, 2, 2]
    np.testing.assert_array_equal(train[3]["image"], written[("train", "zebra", 0)])
    test = load_source(f"folder:{tmp_path}", "test")
    assert [test[i]["label"] for i in range(len(test))] == [0, 1]
    with pytest.raises(ValueError, match="splits"):
        load_source(f"folder:{tmp_path}", "val")
    with pytest.raises(ValueError, match="nowhere"):
        load_source(f"folder:{tmp_path / 'nowhere'}", "train")


def test_image_folder_of_classes_not_splits_names_the_fix(tmp_path):
    # DIR/<class>/<image> with no splits, and folder: pointed at one split: the error says which.
    for split in ("train", "test"):
        for name in ("ant", "bee"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / split / name / "0.png")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'train'} holds class folders of images, not split "
                                         rf"folders; pass --dataset folder:{tmp_path}$"):
        load_source(f"folder:{tmp_path / 'train'}", "train")
    flat = tmp_path / "flat"
    (tmp_path / "train").rename(flat)
    with pytest.raises(ValueError, match=rf"holds class folders of images, not split folders; move them into "
                                         rf"{flat / 'train'}/ and {flat / 'test'}/"):
        load_source(f"folder:{flat}", "train")
    assert (flat / "ant" / "0.png").is_file()  # nothing moved


def test_tfds_source_through_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=20):
        source = load_source("mnist", "train")
        assert len(source) == 20 and source.num_classes == 10 and source.in_chans == 1
        record = source[3]
        assert record["image"].shape == (28, 28, 1) and record["image"].dtype == np.uint8
        assert 0 <= record["label"] < 10
        loader = make_loader(source, img_size=16, in_chans=3, batch_size=8, seed=0, train=True, augment=HEAVY)
        batch = next(loader)
        assert batch["image"].shape == (8, 16, 16, 3) and batch["target"].shape == (8, 10)
        # The mock serves num_examples whatever the split or slice, so it shows the metadata path only;
        # splits and slices are read from real files in test_tfds_array_record_dataset_by_name.
        cifar = load_source("cifar10", "test")
        assert cifar.in_chans == 3 and cifar.num_classes == 10 and cifar[0]["image"].shape == (32, 32, 3)


def _build_tiny_tfds(tfds, data_dir):
    """A real tfds dataset, 3 classes of 6x5 grayscale images, prepared as array_record into
    data_dir by tfds's own builder. Images go in as PIL images: tfds then writes their PNG with
    PIL (numpy arrays would need TensorFlow to encode)."""

    class VitDataTinyTfds(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(6, 5, 1), encoding_format="png"),
                "label": tfds.features.ClassLabel(names=["ant", "bee", "cat"])}), supervised_keys=("image", "label"),
                disable_shuffling=True)  # records stay in the order written (tfds shuffles by key hash)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples("train"), "test": self._generate_examples("test")}

        def _generate_examples(self, split):
            for i, (image, label) in enumerate(zip(*written[split])):
                yield i, {"image": Image.fromarray(image[..., 0], "L"), "label": int(label)}

    rng = np.random.default_rng(4)
    written = {split: (rng.integers(0, 256, (n, 6, 5, 1), dtype=np.uint8), rng.integers(0, 3, n))
               for split, n in (("train", 12), ("test", 5))}
    VitDataTinyTfds(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return written


def test_tfds_array_record_dataset_by_name(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    written = _build_tiny_tfds(tfds, tmp_path)
    assert sorted(p.name for p in (tmp_path / "vit_data_tiny_tfds" / "1.0.0").glob("*.array_record*")) == [
        "vit_data_tiny_tfds-test.array_record-00000-of-00001", "vit_data_tiny_tfds-train.array_record-00000-of-00001"]
    # Read by name in a fresh process, as train.py --dataset NAME --data-dir DIR does: the builder
    # class is unknown there, tfds finds the prepared files, and TensorFlow is never imported.
    code = ("import json, sys; from vit_data import load_source\n"
            "out = {}\n"
            "for split in ('train', 'test', 'train[:50%]', 'test[2:]'):\n"
            "    s = load_source('vit_data_tiny_tfds', split, sys.argv[1])\n"
            "    out[split] = dict(meta=[s.num_classes, s.class_names, s.in_chans],\n"
            "                      images=[s[i]['image'].tolist() for i in range(len(s))],\n"
            "                      labels=[s[i]['label'] for i in range(len(s))],\n"
            "                      batch=[r['label'] for r in s.records.__getitems__([2, 0])])\n"
            "print('RESULT' + json.dumps(dict(out, tensorflow='tensorflow' in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    read = json.loads(result.stdout.split("RESULT", 1)[1])
    assert read["tensorflow"] is False
    for split, keep in (("train", slice(None)), ("test", slice(None)), ("train[:50%]", slice(0, 6)),
                        ("test[2:]", slice(2, None))):
        images, labels = written[split.split("[")[0]]
        got = read[split]
        assert got["meta"] == [3, ["ant", "bee", "cat"], 1], split
        np.testing.assert_array_equal(np.array(got["images"], np.uint8), images[keep], err_msg=split)
        assert got["labels"] == labels[keep].tolist(), split
        assert got["batch"] == [got["labels"][2], got["labels"][0]], split  # the batched read path


def test_tfds_errors_say_how_to_prepare(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError, match="tfds build mnist"):
        load_source("mnist", "train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown dataset"):
        load_source("no_such_dataset_anywhere", "train", data_dir=str(tmp_path))


# --- loader: determinism, checkpoints, epochs, shards, eval --------------------------------------

def test_loader_batches_and_determinism():
    source = load_source("digits", "train")
    make = lambda seed: make_loader(source, img_size=16, in_chans=3, batch_size=32, seed=seed, train=True,
                                    augment=HEAVY)
    first = take(make(0), 3)
    batch = first[0]
    assert batch["image"].shape == (32, 16, 16, 3) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and batch["mask"].dtype == bool and batch["mask"].all()
    assert -1 <= batch["image"].min() and batch["image"].max() <= 1
    assert make(0).steps_per_epoch == 1438 // 32
    assert_batches_equal(first, take(make(0), 3))
    other = take(make(1), 3)
    assert not any(np.array_equal(a["image"], b["image"]) for a, b in zip(first, other))


@pytest.mark.parametrize("k", [2, 5])  # mid-epoch, and across the epoch boundary (4 steps per epoch)
def test_restore_mid_epoch_continues_bit_for_bit(k):
    source = indexed_source(70)
    make = lambda: make_loader(source, img_size=12, in_chans=3, batch_size=16, seed=7, train=True, augment=HEAVY)
    loader = make()
    take(loader, k)
    state = json.loads(json.dumps(loader.get_state()))  # it goes through a JSON checkpoint
    expected = take(loader, 4)
    restored = make()
    restored.set_state(state)
    assert_batches_equal(expected, take(restored, 4))
    with pytest.raises(ValueError, match="saved for"):
        make_loader(source, img_size=12, in_chans=3, batch_size=16, seed=8, train=True).set_state(state)


def test_state_carries_over_between_read_ahead_settings():
    source = indexed_source(70)
    make = lambda **kw: make_loader(source, img_size=12, in_chans=1, batch_size=16, seed=7, train=True,
                                    augment=HEAVY, **kw)
    loader = make(num_threads=0)
    take(loader, 3)
    state = loader.get_state()
    assert state["step"] == 3
    expected = take(loader, 3)
    for kw in (dict(num_threads=2, prefetch=1), dict(num_workers=1)):  # threads, then a worker process
        restored = make(**kw)
        restored.set_state(state)
        assert_batches_equal(expected, take(restored, 3))


def test_epochs_reshuffle_and_drop_the_remainder():
    source = indexed_source(50)
    loader = make_loader(source, img_size=8, in_chans=1, batch_size=8, seed=0, train=True, num_epochs=2)
    assert loader.steps_per_epoch == 6 and loader.num_batches == 12
    labels = np.concatenate([b["label"] for b in loader])
    epoch0, epoch1 = labels[:48], labels[48:]
    assert len(set(epoch0)) == len(set(epoch1)) == 48  # no record twice within an epoch
    assert not np.array_equal(epoch0, epoch1)


@pytest.mark.parametrize("shards", [2, 3])  # 3: the middle shard is its own partner
@pytest.mark.parametrize("mixing", [{}, dict(mixup_alpha=0.8, cutmix_alpha=1.0)])
def test_shards_split_every_global_batch(shards, mixing):
    source = indexed_source(72)
    augment = AugmentConfig(random_resized_crop=True, hflip=True, randaugment=(2, 9), label_smoothing=0.1, **mixing)
    kwargs = dict(img_size=8, in_chans=1, seed=3, train=True, augment=augment)
    whole = take(make_loader(source, batch_size=8 * shards, **kwargs), 6)  # crosses an epoch boundary
    parts = [take(make_loader(source, batch_size=8, shard_index=i, shard_count=shards, **kwargs), 6)
             for i in range(shards)]
    for global_batch, *batches in zip(whole, *parts):
        labels = np.concatenate([b["label"] for b in batches])
        assert len(set(labels)) == len(labels)
        for key in global_batch:  # per-record transforms do not depend on the shard; mixing spans the global batch
            np.testing.assert_array_equal(np.concatenate([b[key] for b in batches]), global_batch[key])
        if mixing:  # mixed with the mirrored global position, not within the shard
            partner = global_batch["label"][::-1]
            assert np.all(global_batch["target"][np.arange(len(partner)), partner] > 0.1 / 72)


def test_eval_is_ordered_unaugmented_and_padded():
    source = indexed_source(10, constant=True)
    loader = make_loader(source, img_size=8, in_chans=1, batch_size=4, seed=5, train=False, augment=HEAVY)
    batches = list(loader)  # one pass by default
    assert loader.steps_per_epoch == len(batches) == 3
    mask = np.concatenate([b["mask"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    assert mask.tolist() == [True] * 10 + [False] * 2
    assert labels[:10].tolist() == list(range(10))
    last = batches[-1]
    assert np.all(last["target"][~last["mask"]] == 0) and np.all(last["target"][last["mask"]].sum(1) == 1)
    np.testing.assert_array_equal(batches[0]["image"][2], np.full((8, 8, 1), 6 / 127.5 - 1, np.float32))
    sharded = [list(make_loader(source, img_size=8, in_chans=1, batch_size=2, seed=0, train=False,
                                shard_index=i, shard_count=2)) for i in range(2)]
    seen = np.concatenate([b["label"][b["mask"]] for shard in sharded for b in shard])
    assert sorted(seen.tolist()) == list(range(10))


def test_mean_std_normalisation():
    source = indexed_source(4, constant=True)
    batch = next(make_loader(source, img_size=8, in_chans=3, batch_size=4, seed=0, train=False,
                             mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5)))
    np.testing.assert_allclose(batch["image"][1, 0, 0], (3 / 255 - np.array([0.5, 0.4, 0.3])) / [0.2, 0.25, 0.5],
                               rtol=1e-6)


# --- augmentations -------------------------------------------------------------------------------

def test_label_smoothing_value():
    targets = soft_targets(np.array([2, 0]), 5, smoothing=0.1)
    np.testing.assert_allclose(targets[0], [0.02, 0.02, 0.92, 0.02, 0.02], rtol=1e-6)
    np.testing.assert_allclose(targets.sum(1), 1, rtol=1e-6)
    loader = make_loader(indexed_source(32), img_size=8, in_chans=1, batch_size=8, seed=0, train=True,
                         augment=AugmentConfig(label_smoothing=0.2))
    batch = next(loader)
    on = batch["target"][np.arange(8), batch["label"]]
    np.testing.assert_allclose(on, 1 - 0.2 + 0.2 / 32, rtol=1e-6)


def test_mixup_targets_sum_to_one_and_match_the_pixels():
    images = np.random.default_rng(0).uniform(-1, 1, (6, 4, 4, 1)).astype(np.float32)
    targets = soft_targets(np.arange(6), 6, 0.1)
    mixed, mixed_targets = mix_batch(images.copy(), targets, AugmentConfig(mixup_alpha=0.8),
                                     np.random.default_rng(3))
    np.testing.assert_allclose(mixed_targets.sum(1), 1, rtol=1e-6)
    lam = (mixed_targets[0, 0] - 0.1 / 6) / (1 - 0.1)  # weight left on sample 0's own label
    np.testing.assert_allclose(mixed[0], lam * images[0] + (1 - lam) * images[5], rtol=1e-5, atol=1e-6)
    unmixed, _ = mix_batch(images.copy(), targets, AugmentConfig(mixup_alpha=0.8, mix_prob=0.0),
                           np.random.default_rng(3))
    np.testing.assert_array_equal(unmixed, images)


def test_cutmix_lambda_is_the_pasted_area():
    source = indexed_source(16, size=16, constant=True)
    loader = make_loader(source, img_size=16, in_chans=1, batch_size=8, seed=0, train=True,
                         augment=AugmentConfig(cutmix_alpha=1.0))
    for batch in take(loader, 4):
        own = batch["label"].astype(np.float32)[:, None, None, None] * 3 / 127.5 - 1
        pasted = np.mean(~np.isclose(batch["image"], own), axis=(1, 2, 3))
        partner = batch["label"][::-1]
        np.testing.assert_allclose(batch["target"].sum(1), 1, rtol=1e-6)
        np.testing.assert_allclose(batch["target"][np.arange(8), partner], pasted, atol=1e-6)
        assert np.all(pasted == pasted[0])  # one box for the whole batch


def test_pad_and_crop_matches_numpy_pad():
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for pad in (1, 2, 9):
        padded = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)))
        for top in range(2 * pad + 1):
            for left in range(2 * pad + 1):
                np.testing.assert_array_equal(pad_and_crop(pixels, pad, top, left),
                                              padded[top:top + 5, left:left + 7])


def test_randaugment_changes_pixels_deterministically():
    image = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    config = AugmentConfig(randaugment=(2, 9))
    outs = [augment_record(image, 20, 3, config, np.random.default_rng(s)) for s in range(12)]
    assert all(o.shape == (20, 20, 3) and o.dtype == np.uint8 for o in outs)
    assert sum(not np.array_equal(o, image) for o in outs) >= 6
    np.testing.assert_array_equal(outs[4], augment_record(image, 20, 3, config, np.random.default_rng(4)))
    for mode in ("L", "RGB"):  # every op runs on both modes and keeps size and mode
        pil = Image.fromarray(image).convert(mode)
        for name, op in RAND_OPS.items():
            out = op(pil, 0.9, np.random.default_rng(0))
            assert out.size == pil.size and out.mode == mode, name
    assert rand_augment(Image.fromarray(image), 0, 9, np.random.default_rng(0)).tobytes() == image.tobytes()


# --- RandAugment: each op against a numpy/scipy reference -----------------------------------------
# The references follow each op's definition (timm's / PIL's documented formulas), written with
# numpy and scipy.ndimage rather than PIL. Point ops on integers are exact; ops that go through
# floats (enhance blends, autocontrast's scale, bilinear resampling) may round the other way: PIL
# works in fixed point (its grayscale is (19595 R + 38470 G + 7471 B + 2^15) >> 16) and truncates
# or rounds in places, so those allow one level.

RA_LEVEL = 0.9  # magnitude 9


def _ra_image():
    # Values in 40..199: autocontrast has a range to stretch, solarize/invert both halves to act on.
    return np.random.default_rng(0).integers(40, 200, (20, 24, 3), dtype=np.uint8)


def _ra_sign(seed):  # the sign the op draws first from rng(seed), as augment._signed does
    return -1.0 if np.random.default_rng(seed).random() < 0.5 else 1.0


def _gray(x):
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114  # ITU-R 601-2 luma


def _blend(degenerate, x, factor):
    return np.clip(np.round(degenerate + factor * (x.astype(np.float64) - degenerate)), 0, 255)


def _equalize_channel(c):
    hist = np.bincount(c.ravel(), minlength=256)
    step = (hist.sum() - hist[np.flatnonzero(hist)[-1]]) // 255
    if step == 0:
        return c
    lut = np.minimum((np.concatenate([[0], np.cumsum(hist)[:-1]]) + step // 2) // step, 255)
    return lut[c]


def _resample(x, inverse):
    """Bilinear sampling of x where output pixel centre (u, v) comes from input point inverse(u, v),
    pixel centres at +0.5 as PIL's transforms; only points inside the pixel-centre grid count
    (PIL fills or clamps at the border, scipy extrapolates differently)."""
    from scipy.ndimage import map_coordinates

    h, w = x.shape[:2]
    v, u = np.mgrid[0:h, 0:w] + 0.5
    xin, yin = inverse(u, v)
    cols, rows = xin - 0.5, yin - 0.5
    inside = (cols >= 0) & (cols <= w - 1) & (rows >= 0) & (rows <= h - 1)
    out = np.stack([map_coordinates(x[..., k].astype(np.float64), [rows, cols], order=1) for k in range(x.shape[2])], -1)
    return np.round(out), inside


def _ra_reference(name, x, level, sign):
    """(expected pixels, mask of pixels to compare, tolerance in levels)."""
    xi, every = x.astype(np.int64), np.ones(x.shape[:2], bool)
    h, w = x.shape[:2]
    factor = 1.0 + sign * 0.9 * level
    if name == "Invert":
        return 255 - xi, every, 0
    if name == "Posterize":
        bits = 8 - int(4 * level)
        return xi >> (8 - bits) << (8 - bits), every, 0
    if name == "Solarize":
        return np.where(xi >= round(256 * (1 - level)), 255 - xi, xi), every, 0
    if name == "SolarizeAdd":
        return np.where(xi < 128, np.minimum(xi + int(110 * level), 255), xi), every, 0
    if name == "Equalize":
        return np.stack([_equalize_channel(x[..., k]) for k in range(3)], -1), every, 0
    if name == "AutoContrast":
        lo, hi = x.min((0, 1)), x.max((0, 1))
        return np.clip(np.floor((xi - lo) * (255.0 / (hi - lo))), 0, 255), every, 1
    if name == "Brightness":
        return _blend(0.0, x, factor), every, 1
    if name == "Color":
        return _blend(_gray(x)[..., None], x, factor), every, 1
    if name == "Contrast":
        return _blend(np.round(np.round(_gray(x)).mean()), x, factor), every, 1
    if name == "Sharpness":  # blend with a 3x3 smoothing (centre 5, others 1, / 13); the border is kept
        from scipy.ndimage import correlate

        kernel = np.ones((3, 3, 1)) / 13
        kernel[1, 1, 0] = 5 / 13
        inner = np.zeros(x.shape[:2], bool)
        inner[1:-1, 1:-1] = True
        return _blend(np.round(correlate(x.astype(np.float64), kernel)), x, factor), inner, 1
    if name == "Rotate":  # counter-clockwise about the centre (w/2, h/2), y pointing down
        t = np.radians(sign * 30 * level)
        cx, cy = w / 2, h / 2
        inverse = lambda u, v: (np.cos(t) * (u - cx) - np.sin(t) * (v - cy) + cx,
                                np.sin(t) * (u - cx) + np.cos(t) * (v - cy) + cy)
    elif name == "ShearX":
        inverse = lambda u, v: (u + sign * 0.3 * level * v, v)
    elif name == "ShearY":
        inverse = lambda u, v: (u, sign * 0.3 * level * u + v)
    elif name == "TranslateXRel":
        inverse = lambda u, v: (u + sign * 0.45 * level * w, v)
    elif name == "TranslateYRel":
        inverse = lambda u, v: (u, v + sign * 0.45 * level * h)
    else:
        raise KeyError(name)
    expected, inside = _resample(x, inverse)
    return expected, inside, 1


@pytest.mark.parametrize("seed", [0, 2])  # rng(0) draws a positive sign first, rng(2) a negative one
@pytest.mark.parametrize("name", RAND_OPS)
def test_randaugment_op_matches_reference(name, seed):
    assert {_ra_sign(0), _ra_sign(2)} == {1.0, -1.0}
    x = _ra_image()
    got = np.asarray(RAND_OPS[name](Image.fromarray(x), RA_LEVEL, np.random.default_rng(seed))).astype(np.int64)
    expected, mask, tolerance = _ra_reference(name, x, RA_LEVEL, _ra_sign(seed))
    assert mask.mean() > 0.3, name  # most of the image is compared
    diff = np.abs(got - expected)[mask]
    assert diff.max() <= tolerance, (name, diff.max(), np.mean(diff > 0))
    assert not np.array_equal(got, x), name  # the op did something at magnitude 9


def test_vit_data_imports_no_framework():
    import ast
    import pathlib

    import vit_data
    for path in pathlib.Path(vit_data.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("jax", "torch", "tensorflow") for n in names), path
    # Importing vit_data loads nothing heavy; building a loader imports grain, but not jax (grain
    # imports it for its profiler unless the process has it already: vit_common/imports.py), torch,
    # TensorFlow or scikit-learn, and jax can still be imported after.
    code = ("import sys, vit_data; heavy = ('grain', 'jax', 'torch', 'tensorflow', 'sklearn');"
            "print(sorted(m for m in heavy if m in sys.modules));"
            "next(vit_data.make_loader(vit_data.load_source('digits', 'test'), img_size=8, in_chans=1,"
            " batch_size=4, seed=0, train=False));"
            "print(sorted(m for m in heavy if m in sys.modules));"
            "import jax; print(jax.numpy.ones(2).sum())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "['grain']", "2.0"]
    assert "jax profiler" not in out.stderr  # grain's warning about it is not shown
