"""Keep freed memory in the heap (glibc) so a CPU training step stops paying page faults.

XLA:CPU allocates each step's temporary buffer (326 MB for the Fashion-MNIST ViT) with mmap and
frees it with munmap, so every step faults its pages in again: ~60,000-80,000 minor faults and
~0.1 s of kernel time per step. One arena, no mmap and no trimming keep those pages mapped
between steps; the cost is resident memory held at its peak. The arena limit only takes effect
for threads not yet started, so call this before importing jax or torch (numpy is fine).
Opt out with VIT_MALLOC_TUNING=0.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's malloc.h


def tune_malloc() -> bool:
    """mallopt as above on CPU Linux with glibc; True when applied."""
    if os.environ.get("VIT_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if os.path.exists("/dev/nvidiactl") or os.environ.get("JAX_PLATFORMS", "cpu") != "cpu":
        return False  # accelerator temp buffers live on the device; leave the host allocator alone
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    # mallopt's value is a C int: 2**31 - 1 bytes is the largest trim threshold it can take.
    return all(mallopt(param, value) == 1 for param, value in
               ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1)))
