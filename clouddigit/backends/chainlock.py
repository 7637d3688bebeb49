"""One lock per volume chain, so that jobs on one chain take turns.

qemu-img locks the files it opens and fails at once when another process holds them: a job that writes
a file of a chain (`rebase`, `commit`, `create`) gets `Failed to get "write" lock` while anything reads
the chain, and a reader without `-U` gets `Failed to get shared "write" lock` while a writer runs. So
every job holds this lock around all its qemu-img runs on a chain: exclusive to change the chain,
shared to read it. A chain lives on one host, so a file lock (`flock`) in the region's volume folder
covers every worker process there; it is released when its holder exits, even by SIGKILL.

Each holder also leaves a small file saying what it does, so that a job that waits too long can say
what holds the chain instead of hanging.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

# Polling, because flock() cannot wait with a timeout; backs off to the longest pause.
_FIRST_PAUSE_SECONDS = 0.01
_LONGEST_PAUSE_SECONDS = 0.25


class ChainBusy(Exception):
    """Another job held the chain for longer than this one waits; the message says which."""


@contextmanager
def held(
    volume_dir: str | os.PathLike[str], key: str, *, purpose: str, shared: bool = False, timeout: float
) -> Iterator[None]:
    """Hold the lock of chain `key` under `volume_dir`; wait for it up to `timeout` seconds, then raise
    ChainBusy naming the holders. `purpose` ("deleting snapshot nightly-3") is what others are told."""
    folder = Path(volume_dir) / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.lock"
    fd = _acquire(path, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, timeout)
    # Named by the time it was taken, so that the longest holder is named first.
    holder = folder / f"{key}.{time.time_ns()}.{os.getpid()}.{uuid.uuid4().hex}.holder"
    try:
        holder.write_text(f"{purpose} (since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC)")
        yield
    finally:
        holder.unlink(missing_ok=True)
        if not shared:
            # No one else holds it: remove the file, so that locks of chains long gone do not pile up.
            # Whoever opened it meanwhile finds it gone once they get the lock, and tries again.
            path.unlink(missing_ok=True)
        os.close(fd)


def _acquire(path: Path, mode: int, timeout: float) -> int:
    """An open descriptor of `path` that holds the lock."""
    deadline = time.monotonic() + timeout
    pause = _FIRST_PAUSE_SECONDS
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise ChainBusy(
                    f"Volume chain busy: {_holders(path) or 'another job'}. Waited {timeout:g} s; "
                    "try again once that has finished."
                ) from None
            time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
            pause = min(pause * 2, _LONGEST_PAUSE_SECONDS)
            continue
        if _is_current(fd, path):
            return fd
        os.close(fd)  # its last holder removed it while we opened it: lock the file there now


def _is_current(fd: int, path: Path) -> bool:
    try:
        current = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)


def _holders(lock_path: Path) -> str:
    """What the live holders of a lock said they do; files left by a process that died are removed."""
    found = []
    for holder in sorted(lock_path.parent.glob(f"{lock_path.stem}.*.holder")):
        pid = int(holder.name.split(".")[2])
        if not _alive(pid):
            holder.unlink(missing_ok=True)
            continue
        try:
            found.append(holder.read_text())
        except FileNotFoundError:
            continue  # it finished while we looked
    return "; ".join(text for text in found if text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
