"""Importing a library without one of its optional dependencies."""
from __future__ import annotations

import importlib
import logging
import sys
from types import ModuleType


def import_without(module: str, optional: str) -> ModuleType:
    """Import `module` as if `optional` were not installed, unless this process already imported
    `optional`; later imports of `optional` work as usual. For libraries that import a framework
    at import time only to offer something we don't use (tensorboardX imports torch to accept torch
    tensors, grain imports jax for its profiler annotations): a run of the other twin then doesn't
    pay that framework's 2-3 s import."""
    if optional in sys.modules or module in sys.modules:
        return importlib.import_module(module)
    sys.modules[optional] = None  # `import optional` raises ImportError, which both libraries allow
    was_disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)  # grain warns (through absl) that it has no jax profiler
    try:
        return importlib.import_module(module)
    finally:
        logging.disable(was_disabled)
        del sys.modules[optional]
