"""Datasets as random-access sources of {"image": uint8 (H, W, C), "label": int} records.

`load_source(dataset, split)` understands four forms of `dataset`:
  "digits"     scikit-learn's 1,797 8x8 digits, scaled 0..16 -> 0..255. Split "train" / "test" is a
               fixed stratified 80/20 split: per class, a seed-0 permutation puts round(20%) in test,
               giving 1,438 train and 359 test images (indices kept in their original order).
  "idx:DIR"    MNIST-format IDX files in DIR, gzipped or not: train-images-idx3-ubyte,
               train-labels-idx1-ubyte, t10k-* (or test-*) for "test".
  "folder:DIR" DIR/<split>/<class>/*.png|jpg|...; classes are the sorted class folders of all splits.
               Every file's header is checked when the split is opened (no pixels decoded): the
               unreadable ones are listed, one line each, in the ValueError, or left out with a
               count printed when skip_bad_images is set.
  other        a tensorflow-datasets name read with tfds.data_source (array_record, no TensorFlow).
Local forms also take tfds-style slices: "train[:90%]", "train[-5000:]".
"""
from __future__ import annotations

import gzip
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vit_common.predict.preprocess import GRAYSCALE_MODES, IMAGE_SUFFIXES, ImageError, probe_image, read_image

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGITS_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Source:
    """Random access: len(records), records[i] -> {"image": uint8 (H, W, C), "label": int}."""
    records: Any
    num_classes: int
    class_names: list[str] | None
    in_chans: int
    name: str

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        return self.records[index]


class ArrayRecords:
    """Records held in memory: images (N, H, W, C) uint8 and labels (N,)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if images.ndim == 3:
            images = images[..., None]
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"need uint8 images (N, H, W, C) and N labels, got {images.dtype} {images.shape} "
                             f"and {len(labels)} labels")
        self.images, self.labels = images, np.asarray(labels, np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "label": int(self.labels[index])}


def load_source(dataset: str, split: str, data_dir: str | None = None, skip_bad_images: bool = False) -> Source:
    """The records of `split` of `dataset` (see the module docstring for the forms).
    skip_bad_images: a folder: dataset leaves out the files it cannot read (else they are an error)."""
    if dataset == "digits":
        return _digits(split)
    if dataset.startswith("idx:"):
        return _idx(dataset, split)
    if dataset.startswith("folder:"):
        return _folder(dataset, split, skip_bad_images)
    return _tfds(dataset, split, data_dir)


# --- split names with tfds-style slices, for the local forms -------------------------------------

_SPLIT = re.compile(r"^(?P<base>[\w.-]+)(?:\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


def parse_split(split: str) -> tuple[str, str | None, str | None]:
    match = _SPLIT.match(split.strip())
    if not match:
        raise ValueError(f"split {split!r} is not NAME or NAME[start:stop] (ints or percents, e.g. train[:90%])")
    return match["base"], match["start"], match["stop"]


def slice_indices(n: int, start: str | None, stop: str | None) -> np.ndarray:
    def bound(text):
        if text is None:
            return None
        return round(n * int(text[:-1]) / 100) if text.endswith("%") else int(text)
    return np.arange(n)[bound(start):bound(stop)]


def _take(dataset: str, split: str, images: np.ndarray, labels: np.ndarray, start, stop, **meta) -> Source:
    keep = slice_indices(len(labels), start, stop)
    if len(keep) == 0:
        raise ValueError(f"split {split!r} of {dataset} is empty")
    return Source(ArrayRecords(images[keep], labels[keep]), name=f"{dataset} ({split})", **meta)


# --- digits (scikit-learn) ------------------------------------------------------------------------

def digits_split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The fixed stratified 80/20 split: round(20%) of every class, drawn with seed 0, is test."""
    rng = np.random.default_rng(0)
    test = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test.append(members[:round(DIGITS_TEST_FRACTION * len(members))])
    is_test = np.zeros(len(labels), bool)
    is_test[np.concatenate(test)] = True
    return {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, (1797, 8, 8) float images in 0..16 and their labels: the file that
    ships with scikit-learn, read as `sklearn.datasets.load_digits` reads it, without importing
    scikit-learn (2 s, most of a small run's start-up). Nothing is downloaded."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    folders = (spec.submodule_search_locations or []) if spec else []
    csv = next((Path(f) / "datasets" / "data" / "digits.csv.gz" for f in folders), None)
    if csv is None or not csv.is_file():  # another layout of scikit-learn: ask it
        from sklearn.datasets import load_digits
        digits = load_digits()
        return digits.images, digits.target.astype(np.int64)
    with gzip.open(csv, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


def _digits(split: str) -> Source:
    base, start, stop = parse_split(split)
    pixels, labels = digits_arrays()
    parts = digits_split_indices(labels)
    if base not in parts:
        raise ValueError(f"digits has splits 'train' and 'test', not {base!r}")
    images = np.round(pixels * (255 / 16)).astype(np.uint8)[..., None]
    keep = parts[base]
    return _take("digits", split, images[keep], labels[keep], start, stop,
                 num_classes=10, class_names=[str(d) for d in range(10)], in_chans=1)


# --- MNIST-format IDX files ----------------------------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_PREFIXES = {"train": ("train",), "test": ("t10k", "test")}


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file (optionally .gz) as an array of its declared type and shape."""
    path = Path(path)
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(dims))
    if len(data) - header < count * dtype.itemsize:
        raise ValueError(f"{path} is truncated: header says {dims}, file holds fewer values")
    return np.frombuffer(data, dtype, count=count, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, split: str, kind: str) -> Path:
    ndim = 3 if kind == "images" else 1
    found = sorted(p for prefix in _IDX_PREFIXES[split] for sep in "-."
                   for p in folder.glob(f"*{prefix}-{kind}{sep}idx{ndim}-ubyte*")
                   if p.name.endswith(("ubyte", "ubyte.gz")))
    if len(found) != 1:
        what = "no file" if not found else f"{len(found)} files ({', '.join(p.name for p in found)})"
        raise ValueError(f"{folder}: expected one {_IDX_PREFIXES[split][0]}-{kind}-idx{ndim}-ubyte[.gz] for "
                         f"split {split!r}, found {what}")
    return found[0]


def _idx(dataset: str, split: str) -> Source:
    folder = Path(dataset[len("idx:"):]).expanduser()
    if not folder.is_dir():
        raise ValueError(f"IDX directory {folder} does not exist (dataset {dataset!r})")
    base, start, stop = parse_split(split)
    if base not in _IDX_PREFIXES:
        raise ValueError(f"IDX datasets have splits 'train' and 't10k' (named 'test'), not {base!r}")
    images = read_idx(_find_idx(folder, base, "images"))
    labels = read_idx(_find_idx(folder, base, "labels")).astype(np.int64)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels) or labels.ndim != 1:
        raise ValueError(f"{folder}: {base} images {images.dtype} {images.shape} do not match labels {labels.shape}")
    # Classes from every label file present, so train and test agree even if one lacks a class.
    all_labels = [labels] + [read_idx(_find_idx(folder, other, "labels")) for other in _IDX_PREFIXES
                             if other != base and _has_idx(folder, other)]
    num_classes = int(max(int(x.max()) for x in all_labels)) + 1
    names = FASHION_MNIST_CLASSES if "fashion" in str(folder).lower() and num_classes == 10 else None
    in_chans = 1 if images.ndim == 3 else images.shape[-1]
    return _take(dataset, split, images, labels, start, stop, num_classes=num_classes, class_names=names,
                 in_chans=in_chans)


def _has_idx(folder: Path, split: str) -> bool:
    try:
        _find_idx(folder, split, "labels")
        return True
    except ValueError:
        return False


# --- a folder of images per class ----------------------------------------------------------------

class FolderRecords:
    """Image files decoded on access, all read as one PIL mode ("L" or "RGB") by
    vit_common.predict.preprocess.read_image, the reader vit-predict uses (same pixels)."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], mode: str):
        self.paths, self.labels, self.mode = list(paths), np.asarray(labels, np.int64), mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        pixels = np.asarray(read_image(self.paths[index], self.mode), np.uint8)
        return {"image": pixels.reshape(pixels.shape[0], pixels.shape[1], -1), "label": int(self.labels[index])}


def _holds_class_folders(dirs: Sequence[Path]) -> bool:
    """Whether these folders hold images themselves (class folders), where splits hold folders."""
    return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for d in dirs for p in d.iterdir())


def _folder(dataset: str, split: str, skip_bad_images: bool = False) -> Source:
    root = Path(dataset[len("folder:"):]).expanduser()
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist (dataset {dataset!r})")
    base, start, stop = parse_split(split)
    split_dirs = sorted(d for d in root.iterdir() if d.is_dir())
    if not (root / base).is_dir() and _holds_class_folders(split_dirs):
        # The common mix-up: DIR/<class>/<image>, or folder: pointed at one split (DIR/train).
        fix = (f"pass --dataset folder:{root.parent}" if (root.parent / base).is_dir() else
               f"move them into {root / 'train'}/ and {root / 'test'}/ (folder:DIR reads DIR/<split>/<class>/<image>)")
        raise ValueError(f"{root} holds class folders of images, not split folders; {fix}")
    if not (root / base).is_dir():
        fix = (f"add {root / base}/<class>/ images, or hold some of train out: --train-split 'train[:90%]' "
               f"--test-split 'train[90%:]'" if base == "test" and (root / "train").is_dir() else
               f"add {root / base}/<class>/ images or name an existing split")
        raise ValueError(f"{root / base} does not exist ({root} has splits {[d.name for d in split_dirs]}); {fix}")
    classes = sorted({c.name for d in split_dirs for c in d.iterdir() if c.is_dir()})
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = root / base / name
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        paths += files
        labels += [label] * len(files)
    keep = slice_indices(len(paths), start, stop)
    if len(keep) == 0:
        raise ValueError(f"no images under {root / base}/<class>/ (looked for {sorted(IMAGE_SUFFIXES)})")
    modes, bad = {}, []
    for i in keep:  # headers only: a corrupt file is found now, not as a traceback mid-run
        try:
            modes[i] = probe_image(paths[i])
        except ImageError as e:
            bad.append(str(e))
    if bad and not skip_bad_images:
        raise ValueError(f"{len(bad)} of {len(keep)} images in {dataset} ({split}) cannot be read:\n  "
                         + "\n  ".join(bad) + "\nremove or replace them, or pass --skip-bad-images to train without them")
    if bad:
        print(f"{dataset} ({split}): skipped {len(bad)} unreadable image{'s' if len(bad) > 1 else ''} of {len(keep)} "
              "(--skip-bad-images)")
        keep = [i for i in keep if i in modes]
        if not keep:
            raise ValueError(f"no readable images under {root / base}/<class>/")
    # The first image decides: grayscale folders stay 1-channel.
    mode = "L" if modes[keep[0]] in GRAYSCALE_MODES else "RGB"
    records = FolderRecords([paths[i] for i in keep], [labels[i] for i in keep], mode)
    return Source(records, num_classes=len(classes), class_names=classes, in_chans=1 if mode == "L" else 3,
                  name=f"{dataset} ({split})")


# --- tensorflow-datasets -------------------------------------------------------------------------

class TfdsRecords:
    """A tfds data source with its image and label features renamed to "image" and "label"."""

    def __init__(self, source, image_key: str, label_key: str):
        self.source, self.image_key, self.label_key = source, image_key, label_key

    def __len__(self) -> int:
        return len(self.source)

    def _record(self, raw) -> dict:
        image = np.asarray(raw[self.image_key], np.uint8)
        return {"image": image.reshape(image.shape[0], image.shape[1], -1), "label": int(raw[self.label_key])}

    def __getitem__(self, index: int) -> dict:
        return self._record(self.source[index])

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:  # array_record reads a batch at once
        try:
            raws = self.source.__getitems__(list(indices))
        except (AttributeError, TypeError):  # no batch read (tfds.testing.mock_data's is broken in 4.9.10)
            raws = [self.source[i] for i in indices]
        return [self._record(r) for r in raws]


def _tfds(name: str, split: str, data_dir: str | None) -> Source:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ValueError(f"dataset {name!r} is not digits, idx:DIR or folder:DIR, and tensorflow-datasets is "
                         "not installed to read it (pip install tensorflow-datasets)") from e
    how = (f"prepare it on a machine with internet: `tfds build {name} --file_format=array_record "
           f"--data_dir DIR`, copy DIR here and pass --data-dir DIR")
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(f"unknown dataset {name!r}: not digits, idx:DIR, folder:DIR, nor a tfds dataset") from e
    except Exception as e:  # not prepared, prepared as tfrecord, unknown split...
        where = data_dir or "the default tfds data_dir (~/tensorflow_datasets)"
        raise ValueError(f"tfds dataset {name!r} split {split!r} cannot be read from {where} ({e}); {how}") from e
    info = source.dataset_info
    keys = info.supervised_keys
    image_key, label_key = keys if (isinstance(keys, tuple) and len(keys) == 2
                                    and all(isinstance(k, str) for k in keys)) else ("image", "label")
    features = info.features
    if image_key not in features or label_key not in features:
        raise ValueError(f"tfds dataset {name!r} has no {image_key!r}/{label_key!r} features to classify")
    label = features[label_key]
    shape = features[image_key].shape
    in_chans = shape[-1] if len(shape) == 3 and shape[-1] else 3
    return Source(TfdsRecords(source, image_key, label_key), num_classes=int(label.num_classes),
                  class_names=list(label.names) if getattr(label, "names", None) else None, in_chans=int(in_chans),
                  name=f"{name} ({split})")
