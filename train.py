"""Train a ViT / DeiT. With no arguments: a small ViT on scikit-learn's digits, about a minute
on 2 CPU cores.

    python train.py [--preset digits|fashion_mnist] [--framework jax|torch] [--FIELD VALUE ...]
    torchrun --nproc_per_node N train.py --framework torch ...   (PyTorch DDP)
    JAX_COORDINATOR_ADDRESS=HOST:PORT JAX_NUM_PROCESSES=N JAX_PROCESS_ID=I python train.py ...   (JAX, N hosts)

Every field of vit_common.train.recipe.TrainConfig can be overridden (see --help). A workdir
that holds a checkpoint resumes automatically.
"""
from __future__ import annotations

import json
import os
import sys
import traceback


def main(argv=None) -> int:
    from vit_common.cpu_malloc import tune_malloc

    tune_malloc()  # before jax or torch start their threads
    from vit_common import CheckpointError, ConfigError
    from vit_common.train.recipe import parse_train_args

    try:
        config = parse_train_args(argv)
    except ConfigError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    from vit_common.train.run import TrainingStopped

    try:
        if config.framework == "torch":
            from vit_torch.train import train
        else:
            from vit_jax.train import train
    except ModuleNotFoundError as e:
        print(f"train.py: error: --framework {config.framework} needs {e.name}, which is not installed: "
              f"pip install -e '.[{config.framework}]'", file=sys.stderr)
        return 2
    try:
        summary = train(config)
    except (ConfigError, CheckpointError, ValueError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return _failed(config, 2)
    except TrainingStopped as e:
        print(f"train.py: stopped: {e}", file=sys.stderr)
        return _failed(config, 1)
    except Exception:
        traceback.print_exc()
        return _failed(config, 1)
    if "stopped_at" in summary or not _first_process(config):  # one summary per run, from the process that wrote it
        return 0
    print(json.dumps(summary, indent=2))
    print(f"test accuracy {summary['test_accuracy']:.2%} -> {config.workdir}/summary.json, final.npz, "
          f"metrics.jsonl, training_curves.png")
    return 0


def _first_process(config) -> bool:
    """Whether this is the process that writes the run's files (JAX process 0, torchrun rank 0)."""
    if config.framework == "jax":
        import jax

        return jax.process_index() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _failed(config, code: int) -> int:
    """The exit code; a failed process of a multi-process JAX run exits here and now (see leave_after_failure)."""
    if config.framework == "jax":
        from vit_jax.train.distributed import leave_after_failure

        leave_after_failure(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
