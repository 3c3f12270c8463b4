"""One daemon per state folder: an exclusive ``flock`` on ``state/lock`` held for the process's life.

Two daemons on one config would both take every photo (10 photos became 17
results). The lock is the kernel's, so it goes away with the process however it
ends (kill -9 included) and a stale lock file never blocks a restart. The file
holds the owner's PID, for the message the second one prints.

One daemon per inbox, too: two configs with their own state folders but the same
inbox both took every photo (19 of 20 photos were done twice). :class:`InboxLock`
is an ``flock`` on a file named after the inbox's real path (symlinks resolved),
kept *outside* the inbox (sync clients would copy a lock file, and other devices
write there) in a folder of this user's that every daemon finds whatever its
environment: ``/dev/shm/photostyle-<uid>/`` (``/tmp`` where there is no
``/dev/shm``). Not ``$XDG_RUNTIME_DIR``, which a system service does not get,
and not ``/tmp``, which the unit's ``PrivateTmp=yes`` makes private to the
service. The file holds the owner's PID, state folder and config, for the
message. A lock file that disappears while held (a temp cleaner, logind removing
a user's ``/dev/shm`` files at logout) is noticed by :meth:`InboxLock.check` and
made again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from pipeline.errors import PhotostyleError
from pipeline.files.textsafe import printable

log = logging.getLogger("photostyle.daemon")

LOCK_FILE = "lock"
#: Where the per-user folder of inbox locks may go, first usable one wins (all of one user's daemons agree).
LOCK_ROOTS = (Path("/dev/shm"), Path("/tmp"))


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


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open at ``fd`` (not removed, not replaced)."""
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def lock_folder(roots: tuple[Path, ...] = LOCK_ROOTS) -> Path:
    """This user's folder of inbox locks (made mode 700 on first use); StateLockError if none can be used.

    A folder of that name that is not this user's own real folder (a link, a file, another user's) is
    refused rather than passed over: a daemon elsewhere may be using the next root, and they must agree.
    """
    uid = os.geteuid()
    reasons = []
    for root in roots:
        folder = root / f"photostyle-{uid}"
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:  # no such root, read-only, not ours to write: try the next one
            reasons.append(f"{folder}: {exc.strerror or exc}")
            continue
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
            raise StateLockError(f"{printable(folder)}: not a folder of this user's (a link, a file, or another "
                                 "user's); photostyle keeps its inbox locks there: remove it, then start again")
        if info.st_mode & 0o077:
            os.chmod(folder, 0o700)
        return folder
    raise StateLockError("no folder for the inbox locks: " + "; ".join(printable(reason) for reason in reasons))


def inbox_key(inbox: Path) -> str:
    """The lock's name for an inbox: its real path (symlinks resolved, so two spellings share it), hashed."""
    return hashlib.sha256(os.fsencode(os.path.realpath(inbox))).hexdigest()[:32]


class InboxLock:
    """One daemon per inbox, held from :meth:`acquire` until :meth:`release` (or the process's end).

    ``owner`` (state folder, config) is written into the lock file with the PID, so a second daemon
    names the first.
    """

    def __init__(self, inbox: Path, owner: dict[str, Any] | None = None, roots: tuple[Path, ...] = LOCK_ROOTS) -> None:
        self.inbox = Path(inbox)
        self.key = inbox_key(self.inbox)
        self.owner = {key: str(value) for key, value in (owner or {}).items()}
        self.roots = roots
        self.path: Path | None = None
        self._fd: int | None = None
        self._lost_reported = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _take(self) -> tuple[int, Path]:
        """Open, lock and fill in the lock file; AlreadyRunning naming the holder when another daemon has it."""
        path = lock_folder(self.roots) / f"inbox-{self.key}.lock"
        for _ in range(10):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                raise StateLockError(f"{printable(path)}: cannot make the inbox lock: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise AlreadyRunning(self._refusal(holder)) from None
            if _same_file(fd, path):
                break
            os.close(fd)  # its holder removed it as it stopped, between our open and our lock: take the new one
        else:
            raise StateLockError(f"{printable(path)}: the inbox lock keeps being replaced; try again")
        record = {"pid": os.getpid(), "inbox": str(self.inbox), **self.owner}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8", "surrogateescape"), 0)
        return fd, path

    def _refusal(self, holder: dict[str, Any]) -> str:
        known = [f"pid {holder.get('pid', '?')}"]
        known += [f"{what} {holder[key]}" for key, what in (("state", "state folder"), ("config", "config"))
                  if holder.get(key)]
        return printable(f"{self.inbox}: another photostyle watch already takes photos from this inbox "
                         f"({', '.join(known)}); two would do every photo twice: stop it, or give this config an "
                         "inbox of its own")

    def acquire(self) -> None:
        self._fd, self.path = self._take()

    def check(self) -> None:
        """Make the lock file again if it was removed while held; log (once) if another daemon took it meanwhile."""
        if self._fd is None or self.path is None or _same_file(self._fd, self.path):
            return
        try:
            fd, path = self._take()
        except PhotostyleError as exc:
            if not self._lost_reported:
                self._lost_reported = True
                log.error("the inbox lock file was removed while held, and it cannot be taken again",
                          extra={"fields": {"lock": self.path, "reason": str(exc)}})
            return
        os.close(self._fd)
        self._fd, self.path, self._lost_reported = fd, path, False
        log.warning("the inbox lock file was removed while held (a temp cleaner?); made it again",
                    extra={"fields": {"lock": path, "inbox": self.inbox}})

    def release(self) -> None:
        """Remove the lock file (still ours: checked) and unlock; a daemon that opened it meanwhile retries."""
        if self._fd is None:
            return
        try:
            if self.path is not None and _same_file(self._fd, self.path):
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None


def _holder(fd: int) -> dict[str, Any]:
    """What the holder wrote into its lock file (it may not have yet: then nothing)."""
    try:
        data = json.loads(os.pread(fd, 65536, 0).decode("utf-8", "surrogateescape") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
