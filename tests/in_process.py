"""`python train.py ARGV` as train.py's own main() in the test process, for tests about what a run
does or says rather than about its process: it spares starting Python, jax or torch again."""
import sys

from tests.train_runs import ROOT


def train_py(monkeypatch, *argv) -> int:
    """train.py's exit code; what it prints goes to the test's capsys. train.py tunes malloc for its
    own process (vit_common.cpu_malloc: freed memory is kept); the test process stays untuned."""
    monkeypatch.setenv("VIT_MALLOC_TUNING", "0")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from train import main

    return main([str(a) for a in argv])
