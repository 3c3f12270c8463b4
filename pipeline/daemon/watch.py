"""Finding finished photos in the inbox: filters, the stability gate, and the OS watcher.

Watch folders fail in well-known ways, so events are only hints: watchdog fires
``created`` before a copy finishes, fires duplicates, drops events in bursts and
on inotify overflow, and sees nothing on NFS/SMB. Hence:

- every event, start-up scan and periodic rescan just marks a path *dirty*;
- :class:`StabilityGate` takes a dirty path only once its size is > 0 and its
  size and mtime have not changed for ``stable_seconds``;
- sync clients' temp names, dotfiles and anything in a dot-folder are never
  taken (:func:`is_candidate`);
- where the OS reports that a writer closed a file (inotify's IN_CLOSE_WRITE), a
  file written and not yet closed is held back however long its writer pauses
  (a slow phone upload over SMB), up to :data:`OPEN_WRITE_TIMEOUT`.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

OPEN_WRITE_TIMEOUT = 3600.0  # a writer silent this long with the file open is taken as finished anyway


def in_hidden_folder(path: Path, root: Path) -> bool:
    """True when a folder between ``root`` and ``path`` is a dot-folder.

    Sync clients keep their own files there: rsync's ``--delay-updates``
    (``.~tmp~/``, renamed into place at the end) and ``--partial-dir``,
    Syncthing's ``.stversions/`` and ``.stfolder/``, Dropbox's ``.dropbox.cache/``.
    Taking one breaks the client (rsync's final rename fails) or its archive.
    """
    try:
        folders = path.relative_to(root).parts[:-1]
    except ValueError:
        return False
    return any(part.startswith(".") for part in folders)


def is_candidate(path: Path, options: Any, root: Path | None = None) -> bool:
    """True for names that may be photos: allowed extension, not a dotfile, no ignore glob matches.

    With ``root`` (the inbox), a file inside a dot-folder under it is never a
    candidate either, whether an event, the start-up scan or a rescan saw it.
    """
    name = path.name
    if name.startswith("."):
        return False
    if root is not None and in_hidden_folder(path, root):
        return False
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in options.ignore):
        return False
    return path.suffix.lower().lstrip(".") in options.extensions


def preset_for(path: Path, inbox: Path, presets: Iterable[str], default: str) -> tuple[str, str | None]:
    """The preset a photo asks for by its folder: ``inbox/<preset>/...``, else the default.

    Returns the preset and, for an unknown subfolder, a warning to log.
    """
    relative = path.relative_to(inbox)
    if len(relative.parts) == 1:
        return default, None
    folder = relative.parts[0]
    if folder in set(presets):
        return folder, None
    return default, f"{path}: folder {folder!r} is not a preset; using the default preset {default!r}"


def scan(inbox: Path, options: Any) -> list[Path]:
    """Every candidate file under the inbox, oldest first (by mtime): the start-up and periodic scan."""
    found: list[tuple[float, Path]] = []
    for folder, subfolders, files in os.walk(inbox):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in files:
            path = Path(folder) / name
            if not is_candidate(path, options, inbox):
                continue
            try:
                found.append((path.lstat().st_mtime, path))
            except OSError:
                continue  # vanished between listing and stat
    return [path for _, path in sorted(found)]


@dataclass
class _Observation:
    size: int
    mtime_ns: int
    since: float  # monotonic time this size/mtime was first seen
    first_seen: float


@dataclass(frozen=True)
class StableFile:
    """A file the gate released: its identity when released, and why if it is unusable."""

    path: Path
    size: int
    mtime_ns: int
    problem: str | None = None  # e.g. "empty file", "symbolic link": fail it with this reason


class StabilityGate:
    """Releases a path once it has stopped changing for ``stable_seconds``.

    Symlinks, FIFOs and other non-regular files are released at once with a
    ``problem`` (they are failed, never read); a file that stays empty for
    ``empty_timeout`` is released with a problem too. Vanished paths are dropped.
    """

    def __init__(self, stable_seconds: float, empty_timeout: float) -> None:
        self.stable_seconds = stable_seconds
        self.empty_timeout = empty_timeout
        self._pending: dict[Path, _Observation] = {}
        self.writing: Callable[[Path], bool] = lambda path: False  # a writer still has it open

    def __len__(self) -> int:
        return len(self._pending)

    def observe(self, path: Path, now: float | None = None) -> None:
        """Note a path as possibly changed (an event or a scan saw it)."""
        now = time.monotonic() if now is None else now
        if path not in self._pending:
            self._pending[path] = _Observation(-1, -1, now, now)

    def release(self, now: float | None = None) -> list[StableFile]:
        """Re-stat every pending path; return (and forget) those that are ready, oldest first."""
        now = time.monotonic() if now is None else now
        ready: list[tuple[float, StableFile]] = []
        for path, seen in list(self._pending.items()):
            try:
                info = path.lstat()
            except (FileNotFoundError, NotADirectoryError):  # gone, or a folder on its way was replaced by a file
                del self._pending[path]
                continue
            except OSError as exc:
                del self._pending[path]
                ready.append((seen.first_seen, StableFile(path, 0, 0, f"cannot stat: {exc.strerror or exc}")))
                continue
            if stat.S_ISLNK(info.st_mode):
                problem = "a symbolic link; photostyle only takes regular files (copy the photo in instead)"
            elif not stat.S_ISREG(info.st_mode):
                problem = "not a regular file (a FIFO, socket or device); photostyle only takes regular files"
            else:
                problem = None
            if problem is not None:
                del self._pending[path]
                ready.append((seen.first_seen, StableFile(path, 0, 0, problem)))
                continue
            if (info.st_size, info.st_mtime_ns) != (seen.size, seen.mtime_ns) or self.writing(path):
                seen.size, seen.mtime_ns, seen.since = info.st_size, info.st_mtime_ns, now
                continue
            if info.st_size == 0:
                if now - seen.first_seen >= self.empty_timeout:
                    del self._pending[path]
                    ready.append((seen.first_seen, StableFile(
                        path, 0, info.st_mtime_ns, f"empty file (0 bytes for {self.empty_timeout:g} s)")))
                continue
            if now - seen.since >= self.stable_seconds:
                del self._pending[path]
                ready.append((seen.first_seen, StableFile(path, info.st_size, info.st_mtime_ns)))
        return [item for _, item in sorted(ready, key=lambda pair: pair[0])]


class _DirtyPaths(FileSystemEventHandler):
    """Collects paths from watchdog events (created, modified, moved-into, closed)."""

    def __init__(self, wake: threading.Event) -> None:
        self._lock = threading.Lock()
        self._paths: set[Path] = set()
        self._open_writes: dict[Path, float] = {}  # written since the last close-write event: monotonic time
        self._wake = wake

    def _add(self, raw: str | bytes, writing: bool | None = None) -> None:
        path = Path(os.fsdecode(raw))
        with self._lock:
            self._paths.add(path)
            if writing:
                self._open_writes[path] = time.monotonic()
            elif writing is False:
                self._open_writes.pop(path, None)
        self._wake.set()

    def is_writing(self, path: Path) -> bool:
        with self._lock:
            since = self._open_writes.get(path)
            if since is not None and time.monotonic() - since > OPEN_WRITE_TIMEOUT:
                del self._open_writes[path]
                return False
            return since is not None

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory and event.event_type != "moved":
            if event.event_type == "created":
                self._add(event.src_path)  # a folder moved/copied in: rescan it
            return
        if event.event_type == "moved":
            self._add(event.src_path, writing=False)
            self._add(event.dest_path, writing=False)  # a rename delivers a finished file
        elif event.event_type == "modified":  # IN_MODIFY: bytes written; open until its close-write
            self._add(event.src_path, writing=True)
        elif event.event_type in ("created", "attrib"):  # a file moved in from elsewhere arrives as "created"
            self._add(event.src_path)
        elif event.event_type == "closed":  # IN_CLOSE_WRITE: the writer is done with it
            self._add(event.src_path, writing=False)

    def drain(self) -> set[Path]:
        with self._lock:
            paths, self._paths = self._paths, set()
        return paths


class InboxWatcher:
    """watchdog's observer on the inbox (inotify & co., or polling for network shares)."""

    def __init__(self, inbox: Path, poll: bool, poll_interval: float, wake: threading.Event) -> None:
        self.inbox = inbox
        self.handler = _DirtyPaths(wake)
        self.observer = PollingObserver(timeout=poll_interval) if poll else Observer()
        self.observer.schedule(self.handler, str(inbox), recursive=True)
        # Only inotify reports close-write; elsewhere a paused writer is covered by the incomplete grace.
        self.reports_close = not poll and type(self.observer).__name__ == "InotifyObserver"

    def start(self) -> None:
        self.observer.start()

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=10)

    def drain(self) -> set[Path]:
        """Paths seen by events since the last call (files, or folders to scan)."""
        return self.handler.drain()

    def alive(self) -> bool:
        """False once the watch is lost (inotify drops it when the watched folder itself is deleted)."""
        emitters = list(self.observer.emitters)
        return self.observer.is_alive() and bool(emitters) and all(e.is_alive() for e in emitters)

    def is_writing(self, path: Path) -> bool:
        """True while a writer has ``path`` open for writing (as far as the OS reports it)."""
        return self.reports_close and self.handler.is_writing(path)
