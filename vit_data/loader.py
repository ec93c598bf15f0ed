"""Deterministic, checkpointable batches shared by both twins.

Every batch is a pure function of (seed, step): step s of a train loader is batch s % steps_per_epoch
of epoch s // steps_per_epoch; the epoch's order is a permutation drawn from (seed, epoch); each
record's transforms come from (seed, epoch, record index) and the batch's MixUp/CutMix from
(seed, epoch, batch index). grain maps that function over the steps ahead of time (threads, or
worker processes), and the number of batches taken is all a checkpoint has to store.

Global batch b of an epoch covers positions [b*G, (b+1)*G) of the order, G = batch_size *
shard_count; shard k reads [b*G + k*batch_size, b*G + (k+1)*batch_size). Record transforms do not
depend on the shard, so the shards of a global batch together hold exactly the unsharded batch,
mixed or not: MixUp/CutMix pairs global position p with G-1-p (timm's batch mode over the global
batch), so shard k also reads and augments its partners, shard n-1-k's records (twice the
per-record work while mixing on several shards), and the lambda and box are drawn from
(seed, epoch, batch), the same on every shard.
"""
from __future__ import annotations

import math
import sys
import threading
from typing import Iterator

import numpy as np

from .augment import BILINEAR, AugmentConfig, augment_record, mix_batch, prepare_record, soft_targets
from .sources import Source

# Separate random streams, so adding draws to one never shifts another.
SHUFFLE_STREAM, RECORD_STREAM, MIX_STREAM = 0, 1, 2


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])  # SeedSequence: the same on every platform


class BatchMaker:
    """step -> batch, a pure function (picklable, so grain can run it in worker processes)."""

    def __init__(self, source: Source, *, img_size: int, in_chans: int, batch_size: int, seed: int, train: bool,
                 augment: AugmentConfig, shard_index: int, shard_count: int, mean, std):
        self.source, self.img_size, self.in_chans = source, img_size, in_chans
        self.batch_size, self.seed, self.train, self.augment = batch_size, seed, train, augment
        self.shard_index, self.global_batch = shard_index, batch_size * shard_count
        self.num_records, self.num_classes = len(source.records), source.num_classes
        self.mean, self.std = _mean_std(mean, std, in_chans)
        if train:  # remainder dropped
            self.steps_per_epoch = self.num_records // self.global_batch
        else:  # last batch padded
            self.steps_per_epoch = math.ceil(self.num_records / self.global_batch)
        self._orders, self._orders_lock = {}, threading.Lock()

    def __getstate__(self):  # a worker process rebuilds its own cache
        return {k: v for k, v in self.__dict__.items() if k not in ("_orders", "_orders_lock")}

    def __setstate__(self, state):
        self.__dict__.update(state, _orders={}, _orders_lock=threading.Lock())

    def __call__(self, step: int) -> dict:
        return self.train_batch(step) if self.train else self.eval_batch(step)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The epoch's permutation of record indices (the last two are kept: threads straddle epochs)."""
        with self._orders_lock:
            if epoch not in self._orders:
                self._orders[epoch] = _rng(self.seed, SHUFFLE_STREAM, epoch).permutation(self.num_records)
                for old in sorted(self._orders)[:-2]:
                    del self._orders[old]
            return self._orders[epoch]

    def train_batch(self, step: int) -> dict:
        epoch, batch = divmod(step, self.steps_per_epoch)
        images, labels, targets = self._augmented_part(epoch, batch, self.shard_index)
        partner_shard = self.global_batch // self.batch_size - 1 - self.shard_index

        def partners():  # the records at the mirrored global positions, reversed
            if partner_shard == self.shard_index:
                return images[::-1], targets[::-1]
            partner_images, _, partner_targets = self._augmented_part(epoch, batch, partner_shard)
            return partner_images[::-1], partner_targets[::-1]

        images, targets = mix_batch(images, targets, self.augment, _rng(self.seed, MIX_STREAM, epoch, batch), partners)
        return dict(image=images, label=labels, target=targets, mask=np.ones(len(labels), bool))

    def _augmented_part(self, epoch: int, batch: int, shard: int):
        """Shard `shard`'s part of a global batch, augmented per record and normalised, before mixing."""
        start = batch * self.global_batch + shard * self.batch_size
        indices = self.epoch_order(epoch)[start:start + self.batch_size]
        records = self._read(indices)
        pixels = np.stack([augment_record(r["image"], self.img_size, self.in_chans, self.augment,
                                          _rng(self.seed, RECORD_STREAM, epoch, i))
                           for r, i in zip(records, indices)])
        labels = np.array([r["label"] for r in records], np.int32)
        targets = soft_targets(labels, self.num_classes, self.augment.label_smoothing)
        return self._normalize(pixels), labels, targets

    def eval_batch(self, step: int) -> dict:
        start = (step % self.steps_per_epoch) * self.global_batch + self.shard_index * self.batch_size
        positions = np.arange(start, start + self.batch_size)
        mask = positions < self.num_records
        records = self._read(positions[mask])
        images = np.zeros((self.batch_size, self.img_size, self.img_size, self.in_chans), np.float32)
        labels = np.zeros(self.batch_size, np.int32)
        if records:
            pixels = np.stack([prepare_record(r["image"], self.img_size, self.in_chans) for r in records])
            images[:len(records)] = self._normalize(pixels)
            labels[:len(records)] = [r["label"] for r in records]
        targets = soft_targets(labels, self.num_classes) * mask[:, None]  # no smoothing at evaluation
        return dict(image=images, label=labels, target=targets, mask=mask)

    def _read(self, indices: np.ndarray) -> list[dict]:
        getitems = getattr(self.source.records, "__getitems__", None)
        if getitems is not None:
            return list(getitems([int(i) for i in indices]))
        return [self.source.records[int(i)] for i in indices]

    def _normalize(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels.astype(np.float32)
        if self.mean is None:
            return x / np.float32(127.5) - np.float32(1.0)  # as vit_common.predict.preprocess.to_array
        return (x / np.float32(255.0) - self.mean) / self.std

    def eval_preprocess(self) -> dict:
        """What eval batches do to an image, for checkpoints to record (see eval_preprocess)."""
        return eval_preprocess(self.in_chans, self.mean, self.std)


def eval_preprocess(in_chans: int, mean=None, std=None) -> dict:
    """How an eval loader prepares one image, in vit_common.predict.preprocess's meta['preprocess']
    format, so vit-predict repeats it exactly: records decoded in the model's colour mode (the
    folder source converts each file as vit-predict's load_image does), the central square resized
    to img_size with PIL bilinear (augment.prepare_record), then scaled (_normalize)."""
    mean, std = _mean_std(mean, std, in_chans)
    if mean is None:
        mean, std = [0.5] * in_chans, [0.5] * in_chans  # [-1, 1]
    return dict(color_mode="L" if in_chans == 1 else "RGB", resize="center_square", crop_pct=1.0,
                interpolation=_FILTER_NAMES[BILINEAR], mean=[float(v) for v in np.broadcast_to(mean, (in_chans,))],
                std=[float(v) for v in np.broadcast_to(std, (in_chans,))])


_FILTER_NAMES = {BILINEAR: "bilinear"}  # prepare_record's filter, as vit_common.predict.preprocess names it


class Loader(Iterator[dict]):
    """Iterator of {"image": float32 (B, S, S, C), "label": int32 (B,), "target": float32 (B, K),
    "mask": bool (B,)} batches with get_state() / set_state() for checkpoints.

    Train: reshuffled every epoch, remainder dropped, runs num_epochs (None: forever).
    Eval: records in order, no augmentation, the last batch padded (mask False, zero image and
    target, label 0), runs num_epochs (None: one pass).

    The state is the number of batches taken (plus what fixes the sequence, checked on restore):
    batches being a function of the step, a restored loader restarts grain's pipeline at that step,
    so the state carries over between thread and worker-process settings and between shardings
    with the same global batch."""

    def __init__(self, maker: BatchMaker, num_epochs: int | None, num_threads: int, prefetch: int,
                 num_workers: int):
        self.maker = maker
        self.steps_per_epoch = maker.steps_per_epoch
        if not maker.train and num_epochs is None:
            num_epochs = 1
        self.num_batches = None if num_epochs is None else num_epochs * self.steps_per_epoch
        self._read_ahead = num_threads, prefetch, num_workers
        self._start(0)

    def _start(self, step: int) -> None:
        from vit_common.imports import import_without

        grain = import_without("grain", "jax")  # lazily: importing vit_data stays cheap

        num_threads, prefetch, num_workers = self._read_ahead
        stop = sys.maxsize if self.num_batches is None else self.num_batches
        dataset = (grain.MapDataset.range(step, stop).map(self.maker)
                   .to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)))
        if num_workers > 0:
            _let_grain_read_its_flags()
            options = grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=prefetch)
            dataset = dataset.mp_prefetch(options)
        self._iterator, self.step = iter(dataset), step

    def __iter__(self) -> "Loader":
        return self

    def __next__(self) -> dict:
        batch = next(self._iterator)
        self.step += 1  # batches taken so far
        return batch

    def _fingerprint(self) -> dict:
        # What fixes the batch sequence; the shard split may change between runs if the global batch does not.
        m = self.maker
        return dict(source=m.source.name, num_records=m.num_records, global_batch=m.global_batch, seed=m.seed,
                    train=m.train)

    def get_state(self) -> dict:
        """JSON-serialisable position; a loader built the same way continues from it with set_state."""
        return dict(step=self.step, **self._fingerprint())

    def set_state(self, state: dict) -> None:
        expected = self._fingerprint()
        found = {k: state.get(k) for k in expected}
        if found != expected:
            raise ValueError(f"loader state was saved for {found}, this loader is {expected}")
        step = state.get("step")
        if not isinstance(step, (int, np.integer)) or step < 0 or (self.num_batches is not None
                                                                   and step > self.num_batches):
            raise ValueError(f"loader state has step {step!r}; this loader has {self.num_batches} batches")
        self._start(int(step))


def make_loader(source: Source, *, img_size: int, in_chans: int, batch_size: int, seed: int, train: bool,
                augment: AugmentConfig = AugmentConfig(), num_epochs: int | None = None,
                shard_index: int = 0, shard_count: int = 1, mean=None, std=None,
                num_threads: int = 1, prefetch: int = 4, num_workers: int = 0) -> Loader:
    """Batches of `source` for one host (shard_index of shard_count); see Loader. batch_size is per
    shard, so a global batch holds batch_size * shard_count images. Pixels are scaled to [-1, 1], or
    to (x/255 - mean) / std when mean and std are given. Eval loaders ignore `augment`.
    Read-ahead: num_threads background threads (0: in the caller), prefetch batches each; with
    num_workers > 0, that many grain worker processes instead (for heavy augmentation on many cores).
    None of these change the batches."""
    _check_args(source, img_size, in_chans, batch_size, seed, shard_index, shard_count, num_epochs,
                num_threads, prefetch, num_workers)
    maker = BatchMaker(source, img_size=img_size, in_chans=in_chans, batch_size=batch_size, seed=seed,
                       train=train, augment=augment if train else AugmentConfig(), shard_index=shard_index,
                       shard_count=shard_count, mean=mean, std=std)
    if maker.steps_per_epoch == 0:
        raise ValueError(f"{source.name} has {maker.num_records} records, fewer than one global batch of "
                         f"{maker.global_batch} (batch_size {batch_size} x {shard_count} shards)")
    return Loader(maker, num_epochs, num_threads, prefetch, num_workers)


def _let_grain_read_its_flags() -> None:
    """grain 0.2.18's worker processes read an absl flag, which fails in programs that never parse
    absl flags (argparse ones like ours) when jax is installed: google/grain#1355, fixed after 0.2.18.
    Marking the flags parsed leaves them all at their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _mean_std(mean, std, in_chans: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-channel float32 mean and std (both None: scale to [-1, 1])."""
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither (then pixels are scaled to [-1, 1])")
    if mean is None:
        return None, None
    mean, std = (np.asarray(v, np.float32).reshape(-1) for v in (mean, std))
    for name, v in (("mean", mean), ("std", std)):
        if v.size not in (1, in_chans):
            raise ValueError(f"{name} has {v.size} values but the loader makes {in_chans} channel(s)")
    if np.all(mean == 0.5) and np.all(std == 0.5):  # the [-1, 1] range, computed as x / 127.5 - 1
        return None, None
    return mean, std


def _check_args(source, img_size, in_chans, batch_size, seed, shard_index, shard_count, num_epochs,
                num_threads, prefetch, num_workers) -> None:
    problems = []
    if in_chans not in (1, 3):
        problems.append(f"in_chans must be 1 or 3, got {in_chans}")
    if img_size < 1 or batch_size < 1:
        problems.append(f"img_size and batch_size must be >= 1, got {img_size}, {batch_size}")
    if seed < 0:
        problems.append(f"seed must be >= 0, got {seed}")
    if not 0 <= shard_index < shard_count:
        problems.append(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}")
    if num_epochs is not None and num_epochs < 1:
        problems.append(f"num_epochs must be >= 1 or None, got {num_epochs}")
    if num_threads < 0 or prefetch < 1 or num_workers < 0:
        problems.append(f"need num_threads >= 0, prefetch >= 1, num_workers >= 0, got {num_threads}, "
                        f"{prefetch}, {num_workers}")
    if len(source.records) == 0:
        problems.append(f"{source.name} has no records")
    if problems:
        raise ValueError("; ".join(problems))
