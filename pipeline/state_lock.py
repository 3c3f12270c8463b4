"""One daemon per state folder: an exclusive ``flock`` on ``state/lock`` held for the process's life.

Two daemons on one config would both take every photo (10 photos became 17
results). The lock is the kernel's, so it goes away with the process however it
ends (kill -9 included) and a stale lock file never blocks a restart. The file
holds the owner's PID, for the message the second one prints.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pipeline.errors import PhotostyleError

LOCK_FILE = "lock"


class AlreadyRunning(PhotostyleError):
    """Another daemon holds this state folder."""

    exit_code = 2


class StateLockError(PhotostyleError):
    """The state folder cannot be used at all (permissions, read-only)."""

    exit_code = 2


class StateLock:
    """Held from :meth:`acquire` until the process exits (or :meth:`release`)."""

    def __init__(self, state: Path) -> None:
        self.path = state / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StateLockError(f"{self.path}: cannot use the state folder: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(f"{self.path.parent}: another photostyle watch is already running on this state "
                                 f"folder (pid {owner}); stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
