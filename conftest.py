"""Suite-wide settings, made before any test module imports jax or torch.

- Its own JAX compilation cache: a temporary folder for this run, shared by the pytest-xdist
  workers and every `train.py` child they start (they inherit the environment), removed at the end.
  In-process train() runs and the children then neither read nor fill the user's ~/.cache/twin-vit.
  It keeps every executable, not only those that took a second to compile (JAX's default): a tiny
  train.py run compiles ~40 small programs (model initialisation, evaluation), 4-5 s that each
  later run with the same shapes then reads back instead.
- Under pytest-xdist (`-n auto`) each worker computes on one thread, so the workers share the cores
  instead of each spreading over all of them: PJRT_NPROC sizes XLA's CPU thread pool (XLA reads
  it when the CPU client starts), --xla_cpu_multi_thread_eigen=false keeps Eigen's matrix products
  on the calling thread, OMP_NUM_THREADS and set_num_threads do the same for torch.
- XLA compiles with LLVM's cheap settings (`--xla_backend_optimization_level=0`,
  `--xla_llvm_disable_expensive_passes`), here and in every `train.py` child: most of the suite's
  JAX time is compiling hundreds of small programs once each, not running them. The HLO
  optimisations (fusion, buffer assignment, the remat barriers) still run. Results can differ
  from an optimised build's in the last bits (a multiply-add fused or not), far inside every
  tolerance; the bit-exact tests compare runs compiled alike.
- The heaviest files go first. `--dist loadfile` hands whole files to the workers in collection
  order (once xdist's own reordering by test count is off), so the long files start at once and
  the many short ones fill in at the end, instead of a long file running alone after the rest.
"""
import os
import shutil
import tempfile

_OWN_CACHE = None
if "PYTEST_XDIST_WORKER" not in os.environ:  # the controller, or a run without xdist
    _OWN_CACHE = tempfile.mkdtemp(prefix="twin-vit-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

_CHEAP_COMPILE = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
if not set(_CHEAP_COMPILE) <= set(os.environ.get("XLA_FLAGS", "").split()):  # workers inherit the controller's
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), *_CHEAP_COMPILE]))

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), "--xla_cpu_multi_thread_eigen=false"]))
    os.environ["PJRT_NPROC"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


# Files in order of measured cost, heaviest first (idle 2-core run; docs/testing.md); the rest follow
# in collection order. An outdated list only costs balance, never a test.
HEAVY_FIRST = (
    "parity_tests/test_export_runtimes.py",  # one 2-minute fixture: the longest single item
    "tests/test_train_jax.py",
    "tests/test_train_multihost.py",
    "parity_tests/test_training_parity.py",
    "tests/test_docs_pages.py",
    "tests/test_docs.py",
    "parity_tests/test_forward_parity_full.py",
    "parity_tests/test_gradient_parity.py",
    "tests/test_readme_promises.py",
    "tests/test_train_torch.py",
    "tests/test_jax_model.py",
    "tests/test_remat.py",
    "tests/test_fsdp_torch.py",
    "tests/test_swin_jax.py",
    "parity_tests/test_forward_parity.py",
    "tests/test_scan_jax.py",
    "tests/test_features.py",
    "tests/test_jax_fast_ops.py",
)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order set below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: files stay whole
