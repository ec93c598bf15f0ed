"""`python tests/interrupt_at.py STEP SIGNAL [--no-wait] train.py ARGS...`: run train.py, and have
the run send itself SIGNAL (SIGKILL, SIGTERM) right after training step STEP, once the checkpoints
saved so far are on disk (--no-wait: at once; a lone process of a multi-host run that dies need
not wait for a save its peers take part in). The interruption tests use it instead of a poll that kills wherever it first sees a
checkpoint: the step the run stops at, and so the step it resumes from, is known in advance.
A test aid only: train.py itself has no such hook."""
import gc
import os
import runpy
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    at_step, signum = int(sys.argv[1]), getattr(signal, sys.argv[2])
    wait = sys.argv[3] != "--no-wait"
    script, args = sys.argv[3 + (not wait)], sys.argv[4 + (not wait):]
    sys.path.insert(0, str(ROOT))
    from vit_common.train import run as run_module

    if signum == signal.SIGINT:  # as Python sets it at start-up, whatever the test runner ignores
        signal.signal(signal.SIGINT, signal.default_int_handler)
    step_done = run_module.Progress.step

    def step_then_signal(self, step, metrics):
        step_done(self, step, metrics)
        if step == at_step and wait:
            # JAX saves asynchronously: the saves in flight land first (torch saves synchronously).
            for obj in gc.get_objects():
                if type(obj).__name__ == "RunCheckpointer" and hasattr(obj, "wait"):
                    obj.wait()
        if step == at_step:
            os.kill(os.getpid(), signum)

    run_module.Progress.step = step_then_signal
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
