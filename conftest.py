"""Under pytest-xdist (`-n auto`), each worker computes on one thread (XLA and torch), so the
workers share the cores instead of each spreading over all of them; and the files whose few
tests run whole training jobs start first, so that no worker is left finishing one alone."""
import os

# The longest files, longest first. xdist would otherwise order files by their number of tests,
# which puts these (a dozen tests, minutes each) last.
LONG_RUNNING = ("tests/test_train_jax.py", "tests/test_train_torch.py", "parity_tests/test_training_parity.py")

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [
        os.environ.get("XLA_FLAGS"), "--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]))
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # xdist: keep the collection order below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return LONG_RUNNING.index(path) if path in LONG_RUNNING else len(LONG_RUNNING)

    items.sort(key=rank)  # stable: the rest keep their order
