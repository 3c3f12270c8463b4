"""What happens to an original after its job, and what happens when that fails.

After a job the original moves to ``processed/`` (or ``failed/`` with a note), is
kept or deleted (``watch.after``). Moving can fail (a read-only or full
``failed/``), and a photo left in the inbox must not be run again at every rescan:
:class:`Originals` remembers it, with its size and mtime, and retries the move
with back-off, logging why. A photo kept in place (``after: keep``) is remembered
the same way and never retried. Anything remembered that changes on disk is
forgotten, so it is taken again as new work.

A photo that failed to *load* (truncated, not an image yet) may still be being
written by a client that paused longer than ``stable_seconds`` (a slow phone
upload over SMB). It stays in the inbox for ``watch.incomplete_grace`` before it
moves to ``failed/``; if it changes meanwhile it is taken again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.disposal import after_failure, after_success
from pipeline.sidecar import SidecarError, record_original

log = logging.getLogger("photostyle.daemon")


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    action: Callable[[], None] | None  # None: keep it where it is (after: keep), nothing to retry
    due: float
    attempts: int = 0


class Originals:
    """Moves originals after their jobs; remembers the ones that must stay put or be retried."""

    def __init__(self, config: Callable[[], Any], on_changed: Callable[[Path], None]) -> None:
        self._config = config
        self._on_changed = on_changed  # a remembered file changed: take it again
        self._pending: dict[Path, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def _unchanged(self, path: Path, pending: _Pending) -> bool | None:
        try:
            info = path.lstat()
        except FileNotFoundError:
            return None
        except OSError:
            return True
        return (info.st_size, info.st_mtime_ns) == (pending.size, pending.mtime_ns)

    def holds(self, path: Path) -> bool:
        """True while ``path`` is remembered and unchanged: intake leaves it alone."""
        pending = self._pending.get(path)
        if pending is None:
            return False
        unchanged = self._unchanged(path, pending)
        if unchanged:
            return True
        del self._pending[path]
        return False

    def succeeded(self, path: Path, preset: str, size: int, mtime_ns: int, output: Path | None) -> None:
        """Apply ``watch.after`` to a done photo's original (and say in the sidecar where it went)."""
        policy = self._config().watch.after

        def move() -> None:
            moved = after_success(path, self._config(), preset)
            if moved is not None:
                log.info("moved to processed", extra={"fields": {"file": path, "to": moved}})
            if output is not None:
                try:
                    record_original(output, moved, policy)
                except (OSError, SidecarError) as exc:
                    log.warning("could not note in the sidecar where the original went",
                                extra={"fields": {"output": output, "reason": exc}})

        if policy == "keep":
            self._pending[path] = _Pending(size, mtime_ns, None, float("inf"))
            if output is not None:
                try:
                    record_original(output, path, policy)
                except (OSError, SidecarError):
                    pass
            return
        self._attempt(path, _Pending(size, mtime_ns, move, 0.0), "could not move the original")

    def failed(self, path: Path, preset: str, stage: str, reason: str, *, grace: float = 0.0) -> None:
        """Move a failed photo to ``failed/`` with its note, now or after ``grace`` seconds unchanged."""
        try:
            info = path.lstat()
        except OSError:
            return  # gone already: nothing to move
        pending = _Pending(info.st_size, info.st_mtime_ns,
                           lambda: self._move_failed(path, preset, stage, reason), time.monotonic() + grace)
        if grace > 0:
            log.info("left in the inbox in case it is still being written; moves to failed if it stays unchanged",
                     extra={"fields": {"file": path, "seconds": grace}})
            self._pending[path] = pending
            return
        self._attempt(path, pending, "could not move to failed")

    def _move_failed(self, path: Path, preset: str, stage: str, reason: str) -> None:
        moved = after_failure(path, self._config(), preset, stage, reason)
        log.info("moved to failed", extra={"fields": {"file": path, "to": moved}})

    def _attempt(self, path: Path, pending: _Pending, what: str) -> None:
        assert pending.action is not None
        try:
            pending.action()
        except FileNotFoundError:
            self._pending.pop(path, None)
        except OSError as exc:
            pending.attempts += 1
            watch = self._config().watch
            delay = min(watch.retry_max_seconds, watch.retry_seconds * 2 ** (pending.attempts - 1))
            pending.due = time.monotonic() + delay
            self._pending[path] = pending
            log.error(f"{what}; it stays in the inbox and is not run again",
                      extra={"fields": {"file": path, "reason": exc.strerror or exc, "retry_in_seconds": delay}})
        else:
            self._pending.pop(path, None)

    def tick(self) -> None:
        """Retry the moves that are due; forget files that changed (they are taken again)."""
        now = time.monotonic()
        for path, pending in list(self._pending.items()):
            if pending.action is None or now < pending.due:
                continue
            unchanged = self._unchanged(path, pending)
            if unchanged is None:
                del self._pending[path]
            elif not unchanged:
                del self._pending[path]
                log.info("changed since it failed; taking it again", extra={"fields": {"file": path}})
                self._on_changed(path)
            else:
                self._attempt(path, pending, "could not move the original")
