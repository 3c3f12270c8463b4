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
moves to ``failed/``; if it changes meanwhile it is taken again. If a complete
version of it arrives under the same name later and is done, the note left in
``failed/`` says so, instead of claiming the photo failed.

Only the file taken at intake is ever moved: a sync client may replace a photo
under the same name while its old version renders (minutes on a CPU). Then the
new version stays in the inbox and is taken again as new work, and the sidecar
says the original was replaced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.daemon.disposal import after_failure, after_success, error_note_path, superseded_paragraph
from pipeline.files.fileops import write_text_atomic
from pipeline.files.photo_file import FileChanged, FileIdentity
from pipeline.job.sidecar import SidecarError, record_original

log = logging.getLogger("photostyle.daemon")


@dataclass
class _Pending:
    identity: FileIdentity
    action: Callable[[], None] | None  # None: keep it where it is (after: keep), nothing to retry
    due: float
    attempts: int = 0


class Originals:
    """Moves originals after their jobs; remembers the ones that must stay put or be retried."""

    def __init__(self, config: Callable[[], Any], on_changed: Callable[[Path], None]) -> None:
        self._config = config
        self._on_changed = on_changed  # a remembered file changed: take it again
        self._pending: dict[Path, _Pending] = {}
        self._failed_incomplete: dict[tuple[Path, str], Path] = {}  # (inbox path, preset) -> where it went in failed/

    def __len__(self) -> int:
        return len(self._pending)

    def _unchanged(self, path: Path, pending: _Pending) -> bool | None:
        try:
            info = path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:
            return True
        return FileIdentity.of(info) == pending.identity

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

    def succeeded(self, path: Path, preset: str, identity: FileIdentity, output: Path | None) -> None:
        """Apply ``watch.after`` to a done photo's original (and say in the sidecar where it went)."""
        policy = self._config().watch.after
        self._supersede_failure(path, preset, output)

        def move() -> None:
            try:
                moved = after_success(path, self._config(), preset, identity)
            except FileChanged:
                self._replaced(path, output)
                return
            if moved is not None:
                log.info("moved to processed", extra={"fields": {"file": path, "to": moved}})
            self._note_original(output, moved, policy)
            if path.exists() or path.is_symlink():  # a newer version arrived in the instant of the move
                self._on_changed(path)

        if policy == "keep":
            self._pending[path] = _Pending(identity, None, float("inf"))
            self._note_original(output, path, policy)
            return
        self._attempt(path, _Pending(identity, move, 0.0), "could not move the original")

    def _replaced(self, path: Path, output: Path | None) -> None:
        """The name holds a newer version than the one rendered: leave it, note it, take it as new work."""
        log.info("replaced by a newer version while it was processed; the original is not moved and the new "
                 "version is taken as new work", extra={"fields": {"file": path, "output": output}})
        self._note_original(output, None, self._config().watch.after,
                            "replaced under the same name by a newer version while it rendered; the original "
                            "was gone and the newer version is taken as new work")
        self._pending.pop(path, None)
        self._on_changed(path)

    @staticmethod
    def _note_original(output: Path | None, original: Path | None, policy: str, note: str | None = None) -> None:
        if output is None:
            return
        try:
            record_original(output, original, policy, note)
        except (OSError, SidecarError) as exc:
            log.warning("could not note in the sidecar where the original went",
                        extra={"fields": {"output": output, "reason": exc}})

    def failed(self, path: Path, preset: str, stage: str, reason: str, *, grace: float = 0.0,
               identity: FileIdentity | None = None, partial: bool = False) -> None:
        """Move a failed photo to ``failed/`` with its note, now or after ``grace`` seconds unchanged.

        ``identity``: the file taken at intake; a newer version under the name is taken again instead.
        ``partial``: it looked unfinished; if a complete version is done later, its note will say so.
        """
        try:
            info = path.lstat()
        except OSError:
            return  # gone already: nothing to move
        if identity is not None and FileIdentity.of(info) != identity:
            self._replaced(path, None)
            return
        identity = FileIdentity.of(info)
        pending = _Pending(identity, lambda: self._move_failed(path, preset, stage, reason, identity, partial or grace > 0),
                           time.monotonic() + grace)
        if grace > 0:
            log.info("left in the inbox in case it is still being written; moves to failed if it stays unchanged",
                     extra={"fields": {"file": path, "seconds": grace}})
            self._pending[path] = pending
            return
        self._attempt(path, pending, "could not move to failed")

    def _move_failed(self, path: Path, preset: str, stage: str, reason: str, identity: FileIdentity,
                     maybe_incomplete: bool) -> None:
        try:
            moved = after_failure(path, self._config(), preset, stage, reason, identity)
        except FileChanged:
            self._replaced(path, None)
            return
        log.info("moved to failed", extra={"fields": {"file": path, "to": moved}})
        if maybe_incomplete:
            self._failed_incomplete[(path, preset)] = moved

    def _supersede_failure(self, path: Path, preset: str, output: Path | None) -> None:
        """A partial copy of this photo went to failed/ earlier: rewrite its note now that it is done."""
        moved = self._failed_incomplete.pop((path, preset), None)
        if moved is None or output is None:
            return
        try:
            write_text_atomic(error_note_path(moved), superseded_paragraph(path.name, output))
        except OSError as exc:
            log.warning("could not update the note of its earlier partial copy",
                        extra={"fields": {"file": moved, "reason": exc.strerror or exc}})
            return
        log.info("a complete version was done; the note of its earlier partial copy says so",
                 extra={"fields": {"file": moved, "output": output}})

    def _attempt(self, path: Path, pending: _Pending, what: str) -> None:
        assert pending.action is not None
        try:
            pending.action()
        except (FileNotFoundError, NotADirectoryError):
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
