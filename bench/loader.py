"""The input pipeline alone (vit_data, as train.py builds it): images/s of a recipe's train loader,
augmentation on, for several read-ahead settings (grain threads, or worker processes).

    python bench/loader.py [--preset fashion_mnist] [--batches 200] [--FIELD VALUE ...]

Any train.py field overrides the recipe (e.g. --randaugment 2,9). Compare with the step's rate
(bench/train_step.py, or step_images_per_s in a run's summary.json): the loader should deliver
at least twice the step's rate, so it never makes the step wait.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from vit_common.train.recipe import TrainConfig, parse_train_args  # noqa: E402
from vit_common.train.run import resolve_run  # noqa: E402

# (threads, workers): grain threads in this process, or grain worker processes.
SETTINGS = ((0, 0), (1, 0), (2, 0), (0, 2))


def loader_images_per_s(config: TrainConfig, batches: int, *, num_threads: int = 1, num_workers: int = 0,
                        rounds: int = 3) -> float:
    """Median images/s over `rounds` passes of `batches` batches, after one warm-up batch (which
    starts grain's threads or worker processes)."""
    from vit_data import make_loader

    run = resolve_run(config, shard_index=0, shard_count=1, replicas=1)
    rates = []
    for r in range(rounds):
        loader = make_loader(run.train_source, img_size=run.cfg.img_size, in_chans=run.cfg.in_chans,
                             batch_size=run.local_batch, seed=config.seed + r, train=True, augment=run.augment(),
                             num_threads=num_threads, num_workers=num_workers)
        next(loader)
        t = time.perf_counter()
        for _ in range(batches):
            next(loader)
        rates.append(batches * run.local_batch / (time.perf_counter() - t))
    return statistics.median(rates)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dry-run", action="store_true", help="digits, 2 batches, no worker processes: checks the script")
    args, rest = parser.parse_known_args(argv)
    if args.dry_run:
        args.batches, args.rounds, rest = 2, 1, ["--preset", "digits", *rest]
    config = parse_train_args(rest or ["--preset", "fashion_mnist"])
    print(f"loader: {config.dataset} batch {config.batch_size} at {config.img_size}px, augment "
          f"hflip={config.hflip} pad_crop={config.pad_crop} randaugment={config.randaugment} "
          f"mixup={config.mixup_alpha} cutmix={config.cutmix_alpha} rrc={config.random_resized_crop}")
    rates = {}
    for threads, workers in SETTINGS:
        if args.dry_run and workers:
            continue
        rate = rates[threads, workers] = loader_images_per_s(config, args.batches, num_threads=threads, num_workers=workers, rounds=args.rounds)
        print(f"  threads {threads} workers {workers}: {rate:10,.0f} images/s")
    return rates


if __name__ == "__main__":
    main()
