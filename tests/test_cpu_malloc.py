"""vit_common.cpu_malloc: applied on CPU Linux at process start, skipped when opted out."""
import os
import subprocess
import sys

import pytest

from vit_common.cpu_malloc import tune_malloc

PROBE = "from vit_common.cpu_malloc import tune_malloc; print(tune_malloc())"


def test_opt_out(monkeypatch):
    monkeypatch.setenv("VIT_MALLOC_TUNING", "0")
    assert tune_malloc() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_applied_in_a_fresh_cpu_process(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("VIT_MALLOC_TUNING", raising=False)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(not os.path.exists("/dev/nvidiactl"))  # left alone beside an NVIDIA GPU
