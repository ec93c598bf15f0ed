"""vit_common.train.stop: SIGTERM and the first Ctrl-C ask for a clean stop; a second Ctrl-C
interrupts at once; the previous handlers come back; an ignored SIGINT stays ignored."""
import os
import signal

import pytest

from vit_common.train.stop import StopRequests


def test_sigterm_and_ctrl_c_request_a_stop_and_a_second_ctrl_c_interrupts(capfd):
    term_before, int_before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stop = StopRequests().install()
        assert not stop
        os.kill(os.getpid(), signal.SIGINT)  # handled in this thread before the next bytecode
        assert stop and stop.name == "Ctrl-C"
        assert "Ctrl-C: stopping after this step" in capfd.readouterr().err  # said at once, not at the save
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.name == "Ctrl-C"  # the first request names the stop
        stop.restore()
        assert signal.getsignal(signal.SIGTERM) is term_before
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

        stop = StopRequests().install()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.name == "SIGTERM"
        stop.restore()
    finally:
        signal.signal(signal.SIGTERM, term_before)
        signal.signal(signal.SIGINT, int_before)


def test_a_process_that_ignores_sigint_keeps_ignoring_it():
    int_before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stop = StopRequests().install()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)
        assert not stop
        stop.restore()
    finally:
        signal.signal(signal.SIGINT, int_before)
