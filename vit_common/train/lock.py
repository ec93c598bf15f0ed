"""One run per workdir: the first process of a run holds W/run.lock for the run's whole life.

The lock is an flock on W/run.lock, which records the holder (host, pid, start time). The kernel
drops an flock when its process dies, however it dies, so a lock file left by a killed run is
found free: it is taken over with a line naming the dead holder. A second run while the first
lives fails at once, naming the holder, before it reads or writes anything in the workdir.
A holder on another host cannot be checked from here (flock may not cross hosts on a network
file system): its file is honoured until it is removed by hand.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError

LOCK_NAME = "run.lock"


class WorkdirBusy(ConfigError):
    """Another run holds the workdir."""


def _holder_text(holder: dict) -> str:
    return (f"process {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"(started {holder.get('started', '?')})")


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 4096)
    try:
        holder = json.loads(data) if data.strip() else {}
    except ValueError:
        return {"host": "?", "pid": "?", "started": f"unreadable lock file: {data[:60]!r}"}
    return holder if isinstance(holder, dict) else {}


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def acquire(workdir: str | os.PathLike) -> int:
    """Take the workdir's lock (making the workdir if needed); returns the locked file descriptor.
    WorkdirBusy, naming the holder, when a live run holds it."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK_NAME
    host = socket.gethostname()
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        flocked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise WorkdirBusy(f"{workdir} is in use by another run: {_holder_text(holder)}; wait for it to finish, "
                              f"stop it, or train in another --workdir") from None
        except OSError:  # a file system without flock: the recorded holder alone decides
            flocked = False
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:  # the holder removed the file between our open and our lock: start again
            os.close(fd)
            continue
        break
    previous = _read_holder(fd)
    if previous:
        if previous.get("host") != host:
            os.close(fd)
            raise WorkdirBusy(f"{workdir} is locked by {_holder_text(previous)}, which cannot be checked from host "
                              f"{host}; if that run has ended, delete {path} and start again")
        alive = _alive(previous.get("pid"))
        if alive and not flocked:
            os.close(fd)
            raise WorkdirBusy(f"{workdir} is in use by another run: {_holder_text(previous)}; wait for it to finish, "
                              f"stop it, or train in another --workdir")
        state = "not holding it" if alive else "dead"
        print(f"note: {path} was left by {_holder_text(previous)}, now {state}; taking the lock over",
              file=sys.stderr)
    record = dict(host=host, pid=os.getpid(),
                  started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(record) + "\n").encode())
    os.fsync(fd)
    return fd


def release(workdir: str | os.PathLike, fd: int) -> None:
    """Remove the lock file and drop the lock (removed first, so a waiting run never takes a stale one)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(Path(workdir) / LOCK_NAME)
    os.close(fd)


@contextlib.contextmanager
def hold_workdir(workdir: str | os.PathLike, first: bool = True) -> Iterator[None]:
    """The workdir's lock for the body's duration, taken by the run's first process (`first`);
    the other hosts or ranks of the same run share it."""
    if not first:
        yield
        return
    fd = acquire(workdir)
    try:
        yield
    finally:
        release(workdir, fd)
