"""The daemon's intake: from names in the inbox to fingerprinted work, without trusting the names.

Every watchdog event, the start-up scan and each periodic rescan only mark a path
as possibly new; the stability gate releases it once it stopped changing (and,
where the OS reports it, once its writer closed it). Intake then:

- refuses, before reading a byte, what is not a regular file or is larger than
  ``limits.max_file_bytes`` (so a 20 GB sparse file cannot freeze the loop), and
  after its first bytes, what is no image format photostyle reads;
- fingerprints the file through one descriptor opened without following links,
  remembering device, inode, size and mtime (:mod:`pipeline.files.photo_file`);
- waits, up to ``watch.incomplete_grace``, for a file that stopped changing but
  still has regions its writer never filled in (:mod:`pipeline.files.completeness`);
- refuses a file with more than one hard link unless ``watch.allow_hard_links``
  (a link to someone's private file is not a photo sent to us);
- skips what the ledger says is done with these settings, and queues the rest
  with the dispatcher; the same content under a second name waits for the first
  and is looked at again as soon as that one settles;
- fails unusable files alone, keeping the daemon up.

A ledger that cannot be written (disk full) leaves the photo in the inbox and
tries again later. An inbox that disappears (a sync client resetting the folder)
is recreated with its preset folders and watched again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.daemon.dispatch import Dispatcher, WorkItem
from pipeline.config.settings_hash import settings_hash
from pipeline.job.imageio import HEAD_BYTES, head_problem
from pipeline.daemon.ledger import Ledger, LedgerError, job_key
from pipeline.daemon.originals import Originals
from pipeline.files.completeness import ZeroRunFinder, first_hole, incomplete_reason
from pipeline.files.photo_file import FileIdentity, NotAPhotoFile, hash_descriptor, open_regular
from pipeline.daemon.watch import InboxWatcher, StabilityGate, StableFile, is_candidate, preset_for, scan

log = logging.getLogger("photostyle.daemon")

INTAKE_BUDGET_SECONDS = 0.5  # fingerprinting per tick, so signals and pings stay prompt in a burst
INBOX_CHECK_SECONDS = 1.0
LEDGER_RETRY_SECONDS = 5.0
INCOMPLETE_RECHECK_SECONDS = 2.0  # a file that looks unfinished is fingerprinted again this often (no event needed)


class Intake:
    """Watches the inbox and turns finished photos into :class:`~pipeline.daemon.dispatch.WorkItem`\\ s."""

    def __init__(self, app: Callable[[], Any], ledger: Ledger, dispatcher: Dispatcher, originals: Originals,
                 wake: Any) -> None:
        self._app = app
        self.ledger = ledger
        self.dispatcher = dispatcher
        self.originals = originals
        self.wake = wake
        self.gate = self._new_gate()
        self.watcher: InboxWatcher | None = None
        self._inbox_id: tuple[int, int] | None = None
        self._inbox_checked = 0.0
        self._last_rescan = 0.0
        self._deferred: dict[Path, float] = {}  # the ledger could not take them: look again at this time
        self._settings_hashes: dict[str, str] = {}
        self._incomplete: dict[Path, tuple[FileIdentity, float, str]] = {}  # looks unfinished: identity, first seen, why
        self._same_content: dict[Path, str] = {}  # waits for the queued photo with this key to settle
        self._warned_folders: set[str] = set()  # "not a preset": once per folder per run
        self.rescans = 0  # full scans done since start

    @property
    def config(self) -> Any:
        return self._app().config

    def _new_gate(self) -> StabilityGate:
        watch = self.config.watch
        return StabilityGate(watch.stable_seconds, watch.empty_timeout)

    # -- folders and the watcher --------------------------------------------------------

    def make_folders(self) -> None:
        config = self.config
        for folder in (config.inbox, config.outbox, config.processed, config.failed, config.state):
            folder.mkdir(parents=True, exist_ok=True)
        for name in config.presets:
            (config.inbox / name).mkdir(exist_ok=True)

    def _inbox_identity(self) -> tuple[int, int] | None:
        try:
            info = self.config.inbox.stat()
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def start_watcher(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        watch = self.config.watch
        self.watcher = InboxWatcher(self.config.inbox, watch.poll, watch.poll_interval, self.wake)
        self.watcher.start()
        self.gate.writing = self.watcher.is_writing
        self._inbox_id = self._inbox_identity()

    def start(self) -> None:
        self.make_folders()
        self._settings_hash(self.config.default_preset)  # hashes the weights file once, before READY
        self.start_watcher()
        self.scan_all()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def reloaded(self, old: Any) -> None:
        """Apply a new config: folders, a new watcher if the inbox or polling changed, then a rescan."""
        self._settings_hashes.clear()
        self.make_folders()
        new = self.config.watch
        if (old.inbox, old.watch.poll, old.watch.poll_interval) != (self.config.inbox, new.poll, new.poll_interval):
            self.gate = self._new_gate()
            self.start_watcher()
        self.scan_all()

    def _check_inbox(self) -> None:
        """Re-establish the folders and the watch when the inbox was deleted or replaced."""
        now = time.monotonic()
        if now - self._inbox_checked < INBOX_CHECK_SECONDS:
            return
        self._inbox_checked = now
        current = self._inbox_identity()
        watching = self.watcher is not None and self.watcher.alive()
        if current is not None and current == self._inbox_id and watching:
            if not all((self.config.inbox / name).is_dir() for name in self.config.presets):
                self.make_folders()  # a preset folder removed on its own: put it back
            return
        log.warning("the inbox was deleted or replaced; recreating its folders and watching it again",
                    extra={"fields": {"inbox": self.config.inbox}})
        try:
            self.make_folders()
            self.start_watcher()
        except OSError as exc:
            log.error("cannot recreate the inbox; trying again", extra={"fields": {"inbox": self.config.inbox,
                                                                                  "reason": exc}})
            self._inbox_id = None
            return
        self.scan_all()

    # -- finding candidates -------------------------------------------------------------

    def consider(self, path: Path) -> None:
        if self.dispatcher.holds(path) or path in self._deferred:
            return
        if not is_candidate(path, self.config.watch, self.config.inbox):
            return
        if self.originals.holds(path):
            return
        self.gate.observe(path)

    def scan_all(self) -> None:
        for path in scan(self.config.inbox, self.config.watch):
            self.consider(path)
        self._last_rescan = time.monotonic()
        self.rescans += 1  # in the status file: lets a watcher (or a test) see that a full scan happened

    def _take_events(self) -> None:
        if self.watcher is None:
            return
        for path in sorted(self.watcher.drain()):
            if path.is_dir() and not path.is_symlink():
                for found in scan(path, self.config.watch):
                    self.consider(found)
            else:
                self.consider(path)

    def tick(self) -> None:
        self._check_inbox()
        self._take_events()
        now = time.monotonic()
        if now - self._last_rescan >= self.config.watch.rescan_seconds:
            self.scan_all()
        for path, due in list(self._deferred.items()):
            if now >= due:
                del self._deferred[path]
                self.consider(path)
        for path, key in list(self._same_content.items()):
            if not self.dispatcher.holds_key(key):
                del self._same_content[path]
                self.consider(path)
        self._intake(self.gate.release())

    # -- fingerprinting -----------------------------------------------------------------

    def _settings_hash(self, preset: str) -> str:
        if preset not in self._settings_hashes:
            self._settings_hashes[preset] = settings_hash(self.config, preset)
        return self._settings_hashes[preset]

    def _intake(self, ready: list[StableFile]) -> None:
        """Fingerprint released files; queue new work, set aside repeats, fail unusable files."""
        deadline = time.monotonic() + INTAKE_BUDGET_SECONDS
        for index, stable in enumerate(ready):
            if time.monotonic() > deadline:
                for later in ready[index:]:
                    self.gate.observe(later.path)  # next tick
                return
            preset, warning = preset_for(stable.path, self.config.inbox, self.config.presets,
                                         self.config.default_preset)
            if warning:
                folder = stable.path.relative_to(self.config.inbox).parts[0]
                if folder not in self._warned_folders:  # once per folder per run, not once per photo
                    self._warned_folders.add(folder)
                    log.warning(warning + " (said once for this folder)")
            if stable.problem is not None:
                self.fail_untouched(stable.path, preset, stable.problem)
                continue
            self._identify(stable, preset)

    def _identify(self, stable: StableFile, preset: str) -> None:
        """Open, check and hash a released file, then queue it, skip it, wait for its writer, or fail it."""
        limit = self.config.limits.max_file_bytes
        try:
            fd, info = open_regular(stable.path)
        except (FileNotFoundError, NotADirectoryError):
            self._incomplete.pop(stable.path, None)
            log.info("vanished before it was queued", extra={"fields": {"file": stable.path}})
            return
        except NotAPhotoFile as exc:
            self.fail_untouched(stable.path, preset, exc.strerror or str(exc))
            return
        except OSError as exc:
            self.fail_untouched(stable.path, preset, f"it cannot be read ({exc.strerror or exc})")
            return
        try:
            if info.st_size > limit:
                self.fail_untouched(stable.path, preset, f"{info.st_size} bytes is over limits.max_file_bytes "
                                                         f"({limit} bytes); not read")
                return
            if info.st_nlink > 1 and not self.config.watch.allow_hard_links:
                self.fail_untouched(stable.path, preset, f"it has {info.st_nlink} hard links, so it may be a link "
                                    "to a file elsewhere; not read (set watch.allow_hard_links: true if your "
                                    "photo tools hard-link on purpose)")
                return
            identity = FileIdentity.of(info)
            zeros = ZeroRunFinder()
            hole = first_hole(fd, info.st_size)
            try:
                head = os.pread(fd, HEAD_BYTES, 0)
                if hole is None and head.strip(b"\0"):  # a head of zeros may be a start not written yet
                    problem = head_problem(head)  # a 950 MB non-image is refused here, unread
                    if problem is not None:
                        self.fail_untouched(stable.path, preset, problem, identity=identity)
                        return
                content = hash_descriptor(fd, watch=zeros.feed)
            except OSError as exc:
                self.fail_untouched(stable.path, preset, f"it cannot be read ({exc.strerror or exc})")
                return
        finally:
            os.close(fd)
        unfinished = incomplete_reason(hole, zeros.found)
        if unfinished is not None:
            self._wait_for_writer(stable.path, preset, identity, unfinished)
            return
        self._incomplete.pop(stable.path, None)
        self._queue_or_skip(stable.path, preset, identity, content)

    def _wait_for_writer(self, path: Path, preset: str, identity: FileIdentity, reason: str) -> None:
        """A file that stopped changing but looks unfinished: look again soon; fail it after the grace."""
        now = time.monotonic()
        seen = self._incomplete.get(path)
        if seen is None or seen[0] != identity:
            seen = self._incomplete[path] = (identity, now, reason)
            log.info("looks unfinished; waiting for its writer", extra={"fields": {
                "file": path, "reason": reason, "up_to_seconds": self.config.watch.incomplete_grace}})
        grace = self.config.watch.incomplete_grace
        if now - seen[1] >= grace:
            del self._incomplete[path]
            self.fail_untouched(path, preset, f"{reason}, and it stayed so for {grace:g} s", identity=identity,
                                partial=True)
            return
        self._deferred[path] = now + min(INCOMPLETE_RECHECK_SECONDS, max(grace, 0.1))

    def waiting_for_writers(self) -> list[dict[str, Any]]:
        """Files that look unfinished and wait for their writer: file, preset, why, seconds left before they fail."""
        now, grace = time.monotonic(), self.config.watch.incomplete_grace
        waiting = []
        for path, (_, seen, reason) in self._incomplete.items():
            if not os.path.lexists(path):  # deleted meanwhile: it is forgotten at its next look
                continue
            preset, _ = preset_for(path, self.config.inbox, self.config.presets, self.config.default_preset)
            waiting.append({"file": str(path), "preset": preset, "reason": reason,
                            "seconds_left": max(0.0, grace - (now - seen))})
        return waiting

    def idle(self) -> bool:
        """Nothing is waiting to be fingerprinted: what is queued now is all there is for the moment."""
        return len(self.gate) == 0

    def _queue_or_skip(self, path: Path, preset: str, identity: FileIdentity, content: str) -> None:
        settings = self._settings_hash(preset)
        key = job_key(content, preset, settings)
        if self.dispatcher.holds_key(key):
            if path not in self._same_content:
                log.info("the same photo is already queued under another name; looked at again once that one "
                         "is settled", extra={"fields": {"file": path, "preset": preset}})
            self._same_content[path] = key
            return
        try:
            record = self.ledger.get(key)
            if record is not None and record.state == "done":
                log.info("already done with these settings; not redoing it", extra={"fields": {
                    "file": path, "preset": preset, "output": record.output}})
                self.originals.succeeded(path, preset, identity, None)
                return
            item = WorkItem(path, preset, key, content, settings, identity)
            if record is not None and record.state != "failed":
                item.lost = record.crashes  # it stopped photostyle before: counted across restarts
            self.ledger.enqueue(key, content, preset, settings, item.job_id, path)
        except LedgerError as exc:
            self._defer(path, exc)
            return
        log.info("queued", extra={"fields": {"job": item.job_id, "file": path, "preset": preset,
                                             "queue": self.dispatcher.queued + 1}})
        self.dispatcher.add(item)

    def _defer(self, path: Path, error: LedgerError) -> None:
        log.error("the ledger cannot be written; the photo stays in the inbox and is tried again",
                  extra={"fields": {"file": path, "reason": error, "in_seconds": LEDGER_RETRY_SECONDS}})
        self._deferred[path] = time.monotonic() + LEDGER_RETRY_SECONDS

    def fail_untouched(self, path: Path, preset: str, reason: str, identity: FileIdentity | None = None,
                       partial: bool = False) -> None:
        """A file that never reached a job (symlink, FIFO, empty, too big, unreadable): move it to failed/."""
        log.error("failed", extra={"fields": {"file": path, "preset": preset, "stage": "intake", "reason": reason}})
        try:
            self.ledger.record_failure(path, preset, f"intake: {reason}")
        except LedgerError as exc:
            log.warning("ledger not updated", extra={"fields": {"file": path, "reason": exc}})
        self.originals.failed(path, preset, "intake", reason, identity=identity, partial=partial)
