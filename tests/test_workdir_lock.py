"""Issue 24 (6): one run per workdir. Two real train.py processes on one workdir, in each twin: the
second stops at once, naming the holder, while the first holds the lock; a lock left by a dead
process is taken over with a line saying so."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.in_process import train_py
from tests.train_runs import ROOT, TINY, train_cmd, train_env
from vit_common.train.lock import LOCK_NAME, WorkdirBusy, acquire, hold_workdir, release


def wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file() and path.read_text().strip():
            return json.loads(path.read_text())
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_second_train_py_on_a_held_workdir_stops_naming_the_holder(tmp_path, framework, monkeypatch, capsys):
    """The first run is a train.py process; the second, train.py's main() in this test's process
    (tests/in_process.py): another process on the same host, as a second command would be."""
    workdir = tmp_path / "w"
    first = subprocess.Popen(train_cmd(workdir, "--framework", framework, "--epochs", "50"), cwd=ROOT,
                             env=train_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        holder = wait_for(workdir / LOCK_NAME, first)  # held from here until the first run ends
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        started = time.time()
        capsys.readouterr()
        code = train_py(monkeypatch, *TINY, "--workdir", workdir, "--framework", framework)
        stderr = capsys.readouterr().err
        assert first.poll() is None  # still holding it
        assert code == 2, stderr[-2000:]
        assert stderr.strip().splitlines() == [
            f"train.py: error: {workdir} is in use by another run: process {first.pid} on host "
            f"{socket.gethostname()} (started {holder['started']}); wait for it to finish, stop it, or train in "
            "another --workdir"]
        assert time.time() - started < 60  # no data read or model built first
    finally:
        first.kill()
        first.communicate()


def test_a_dead_holders_lock_is_taken_over_with_a_line(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    (tmp_path / LOCK_NAME).write_text(json.dumps(dict(host=socket.gethostname(), pid=pid, started="then")))
    with hold_workdir(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert f"was left by process {pid} on host {socket.gethostname()} (started then), now dead; taking the lock " \
               "over" in capsys.readouterr().err
        with pytest.raises(WorkdirBusy, match=f"is in use by another run: process {os.getpid()}"):
            acquire(tmp_path)  # a second holder in the same process: flock refuses it too
    assert not (tmp_path / LOCK_NAME).exists()  # released: removed


def test_another_hosts_lock_is_honoured(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps(dict(host="elsewhere", pid=1, started="then")))
    with pytest.raises(WorkdirBusy, match=f"cannot be checked from host .*; if that run has ended, delete "
                                          f"{tmp_path / LOCK_NAME}"):
        acquire(tmp_path)
    fd = None
    (tmp_path / LOCK_NAME).unlink()
    fd = acquire(tmp_path)
    release(tmp_path, fd)
