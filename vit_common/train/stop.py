"""Stop requests for both twins' training loops. SIGTERM (a scheduler's preemption) and the first
Ctrl-C (SIGINT) both ask the loop to save the step it is at and leave cleanly, so the same command
resumes there; a second Ctrl-C interrupts at once (KeyboardInterrupt), for a save that hangs."""
import os
import signal


class StopRequests:
    """Truthy once a stop was asked for; `name` says by what ("SIGTERM" or "Ctrl-C")."""

    def __init__(self):
        self.name = None
        self._previous = {}

    def __bool__(self) -> bool:
        return self.name is not None

    def install(self) -> "StopRequests":
        self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
        # A process started with SIGINT ignored (nohup, `cmd &` in a script) keeps ignoring it.
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_sigterm(self, signum, frame) -> None:
        self.name = self.name or "SIGTERM"

    def _on_sigint(self, signum, frame) -> None:
        self.name = self.name or "Ctrl-C"
        # os.write, not print: a handler that prints while the loop is inside a write to the same
        # stream (the progress bar's) raises "reentrant call".
        os.write(2, b"\nCtrl-C: stopping after this step, once it is saved (Ctrl-C again: stop at once)\n")
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once
