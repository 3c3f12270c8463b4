"""``photostyle watch``: a thin loop around the same job runner ``photostyle process`` uses.

The main loop owns the files and the ledger and never renders a photo:

- :class:`~pipeline.daemon.intake.Intake` turns events, the start-up scan and rescans into
  fingerprinted work (or repeats set aside, or unusable files failed);
- :class:`~pipeline.daemon.dispatch.Dispatcher` hands work to the executor as it has room
  and publishes or settles what comes back;
- :class:`~pipeline.daemon.originals.Originals` moves originals, retrying with back-off;
- the executor renders: a worker thread here (the default), or Ray actors.

Around them: one daemon per state folder and one per inbox (locks), recovery after a crash,
signals (SIGTERM finishes the running photo within ``watch.shutdown_timeout``;
an interactive Ctrl-C abandons it at once and a second one exits), SIGHUP
reloads, systemd notifications and the status file.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline.app import App, load_app
from pipeline.config import style_folder_images
from pipeline.daemon.dispatch import Dispatcher, WorkItem, reason_of, stage_of
from pipeline.errors import PhotostyleError
from pipeline.files.photo_file import FileIdentity
from pipeline.execution.local import Executor, make_executor
from pipeline.daemon.fast_models import log_model_states
from pipeline.daemon.sync_roots import refuse_unsafe_after
from pipeline.files.fileops import (clean_staging, restore_parked, staging_folder, staging_shares_filesystem,
                              use_staging_folder, write_text_atomic)
from pipeline.daemon.sync_roots import failed_outside
from pipeline.daemon.intake import Intake
from pipeline.daemon.ledger import Ledger, LedgerError
from pipeline.daemon.originals import Originals
from pipeline.daemon.progress_log import ProgressLog
from pipeline.daemon.recovery import recover
from pipeline.daemon.state_files import LEDGER_FILE, STATUS_FILE
from pipeline.daemon.state_lock import AlreadyRunning, InboxLock, StateLock, StateLockError, inbox_key
from pipeline.daemon.systemd import Notifier

log = logging.getLogger("photostyle.daemon")

TICK_SECONDS = 0.25
STATUS_INTERVAL = 1.0
STYLES_CHECK_SECONDS = 1.0
ABANDON_GRACE_SECONDS = 10.0
#: While the status file cannot be written (a full or read-only state disk), how often that is logged again.
STATUS_WARN_INTERVAL = 300.0
#: How often the daemon checks that its inbox lock file is still there (see InboxLock.check).
LOCK_CHECK_SECONDS = 10.0


def open_ledger(state: Path) -> Ledger:
    """The ledger in ``state``; a corrupt one is moved aside (``.corrupt-<time>``) and rebuilt, saying so."""
    path = state / LEDGER_FILE
    try:
        return Ledger(path)
    except LedgerError as exc:
        if not exc.corrupt:
            raise
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.replace(companion, aside.with_name(aside.name + suffix))
    log.warning("the ledger was corrupt: moved it aside and started a new one; photos done before will be "
                "recognised only by their results", extra={"fields": {"ledger": path, "moved_to": aside}})
    return Ledger(path)


class StatusWriter:
    """Writes ``state/status.json``; logs a failure once, then at most every ``interval`` s, and the recovery once.

    The status is written every second, so a full state disk once logged 3,600 lines an hour. The first
    failure is logged at once (with the reason); while it lasts, one reminder per ``interval`` (with how many
    writes failed and for how long); the first write that works again says so. ``clock`` is injectable, so
    the policy is tested without waiting.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic,
                 interval: float = STATUS_WARN_INTERVAL) -> None:
        self.path = path
        self.clock = clock
        self.interval = interval
        self.failing_since: float | None = None
        self.failures = 0
        self._reported = 0.0

    def write(self, text: str) -> bool:
        """Write the status (atomically); False when it could not be written."""
        try:
            write_text_atomic(self.path, text)
        except OSError as exc:
            self._failed(str(exc.strerror or exc))
            return False
        if self.failing_since is not None:
            log.info("status written again", extra={"fields": {
                "file": self.path, "failed_writes": self.failures,
                "seconds": round(self.clock() - self.failing_since, 1)}})
            self.failing_since, self.failures = None, 0
        return True

    def _failed(self, reason: str) -> None:
        now = self.clock()
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = self._reported = now
            log.warning("could not write status", extra={"fields": {
                "file": self.path, "reason": reason, "reminder_every_seconds": self.interval}})
        elif now - self._reported >= self.interval:
            self._reported = now
            log.warning("still cannot write status", extra={"fields": {
                "file": self.path, "reason": reason, "failed_writes": self.failures,
                "seconds": round(now - self.failing_since, 1)}})


class Daemon:
    """The watch-folder service: see the module docstring."""

    def __init__(self, app: App, notifier: Notifier | None = None) -> None:
        self.app = app
        self.notifier = notifier or Notifier()
        self.wake = threading.Event()
        self.stop_requested = threading.Event()
        self.interactive_stop = False
        self.stop_deadline = float("inf")
        self.reload_requested = False
        self.lock = StateLock(app.config.state)
        self.inbox_lock = self._inbox_lock(app)
        self._lock_checked = 0.0
        self.progress_log = ProgressLog()
        self._was_healthy = True
        self.started = time.time()
        self._last_status = 0.0
        self.status_writer = StatusWriter(app.config.state / STATUS_FILE)
        self.ledger: Ledger | None = None
        self.executor: Executor | None = None
        self.intake: Intake | None = None
        self.dispatcher: Dispatcher | None = None
        self.originals: Originals | None = None
        self._styles_loaded = self._styles_seen = self._styles_listing()
        self._styles_checked = self._styles_changed = 0.0
        #: Photos that failed to load and wait in the inbox for watch.incomplete_grace (see _on_failed).
        self._load_failures: dict[Path, tuple[str, FileIdentity | None, float, str]] = {}

    @property
    def config(self) -> Any:
        return self.app.config

    # -- signals ------------------------------------------------------------------------

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_interrupt)
        signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if not self.stop_requested.is_set():
            self.stop_deadline = time.monotonic() + self.config.watch.shutdown_timeout
            self.stop_requested.set()
        self.wake.set()

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        """Ctrl-C: abandon the running photo now (it is redone at the next start); a second one exits at once."""
        if self.interactive_stop:
            os.write(2, b"interrupted again: exiting now; unfinished photos are redone at the next start\n")
            os._exit(130)
        self.interactive_stop = True
        self.stop_deadline = time.monotonic()
        self.stop_requested.set()
        self.wake.set()

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True
        self.wake.set()

    # -- the main loop ------------------------------------------------------------------

    def _set_up(self) -> None:
        refuse_unsafe_after(self.app)  # before the lock: a second daemon would say the same
        warning = failed_outside(self.config)
        if warning:
            log.warning(warning)
        self.lock.acquire()
        self.inbox_lock.acquire()  # one daemon per inbox too, whatever its state folder
        use_staging_folder(staging_folder(self.config.state))
        if not staging_shares_filesystem(self.config.outbox):
            log.warning("the state folder is on another filesystem than the outbox, so temp files are written "
                        "inside the outbox (as dotfiles) and a sync client copying it out may see them",
                        extra={"fields": {"state": self.config.state, "outbox": self.config.outbox}})
        cleaned = clean_staging()
        if cleaned:
            log.info("removed temp files a killed run left behind", extra={"fields": {"count": cleaned}})
        for restored in restore_parked(self.config.inbox) if self.config.inbox.is_dir() else []:
            log.warning("put back a photo a crash left under a hidden name", extra={"fields": {"file": restored}})
        self.ledger = open_ledger(self.config.state)
        completed, requeued = recover(self.ledger, self.config.outbox)
        if requeued:
            log.info("requeued jobs interrupted by a crash", extra={"fields": {"count": requeued}})
        if completed:
            log.info("completed jobs whose results were saved before a crash", extra={"fields": {"count": completed}})
        self.executor = make_executor(self.app, self.wake)
        self.executor.start(self.app)  # missing weights refuse the start here, before READY
        self.models = log_model_states(self.config)
        self.originals = Originals(lambda: self.config, self._retake)
        self.dispatcher = Dispatcher(lambda: self.app, self.ledger, self.executor, self.originals, self._retake,
                                     on_failed=self._on_failed)
        self.intake = Intake(lambda: self.app, self.ledger, self.dispatcher, self.originals, self.wake)
        self.dispatcher.intake_idle = self.intake.idle  # a suspect photo runs only once the others are queued

    def _retake(self, path: Path) -> None:
        if self.intake is not None:
            self.intake.gate.observe(path)
            self.wake.set()

    def run(self) -> int:
        """Watch until SIGTERM/SIGINT; return the exit status (0 after a clean stop)."""
        self._install_signals()
        self._set_up()
        assert self.intake is not None and self.dispatcher is not None and self.originals is not None
        self.intake.start()
        self.notifier.ready(self._status_line())
        log.info("watching", extra={"fields": {"inbox": self.config.inbox, "presets": ",".join(self.config.presets),
                                               "poll": self.config.watch.poll, "pid": os.getpid()}})
        while not self.stop_requested.is_set():
            self.wake.wait(TICK_SECONDS)
            self.wake.clear()
            if self.stop_requested.is_set():
                break
            if self.reload_requested:
                self.reload_requested = False
                self._reload()
            self._check_styles_folder()
            self.intake.tick()
            self.originals.tick()
            self.dispatcher.tick()
            self.progress_log.update(self.executor.workers())
            self._publish_status()
            self._check_inbox_lock()
            self._ping_watchdog()
        return self._shutdown()

    def _ping_watchdog(self) -> None:
        """Tell systemd the daemon is alive only while it can make progress or is visibly reconnecting.

        A stuck executor (a Ray driver that stopped answering) then misses the pings,
        and ``WatchdogSec=`` restarts the service instead of it waiting forever.
        """
        assert self.executor is not None
        healthy = self.executor.healthy()
        if healthy:
            self.notifier.watchdog()
        if healthy != self._was_healthy:
            self._was_healthy = healthy
            if healthy:
                log.info("the executor is working again; pinging systemd's watchdog again")
            else:
                log.error("the executor is stuck; systemd's watchdog is no longer pinged, so it restarts the service")

    def _shutdown(self) -> int:
        assert self.intake is not None and self.dispatcher is not None and self.executor is not None
        self.notifier.stopping()
        self.intake.stop()
        self.dispatcher.accepting = False
        log.info("stopping", extra={"fields": {"queued": self.dispatcher.queued, "running": self.dispatcher.running}})
        abandoned = False
        while self.dispatcher.running:
            if not abandoned and time.monotonic() >= self.stop_deadline:
                abandoned = True
                for item in self.dispatcher.running_files():
                    log.warning("stopping: abandoning %s (redone at next start)", item.path.name,
                                extra={"fields": item.fields})
                self.executor.abandon()
            if abandoned and time.monotonic() >= self.stop_deadline + ABANDON_GRACE_SECONDS:
                break  # the ledger still says running: redone at the next start
            self.wake.wait(TICK_SECONDS)
            self.wake.clear()
            self.dispatcher.collect()
            self._publish_status()
            self.notifier.watchdog()
        self.executor.shutdown(time.monotonic() + 1.0)
        self.dispatcher.collect()
        self._publish_status(force=True, stopped=True)
        assert self.ledger is not None
        self.ledger.close()
        self.notifier.close()
        self.inbox_lock.release()
        self.lock.release()
        log.info("stopped")
        return 0

    # -- the inbox lock ---------------------------------------------------------------------

    def _inbox_lock(self, app: App) -> InboxLock:
        """The lock on ``app``'s inbox, naming this daemon's state folder (it never changes while running)."""
        return InboxLock(app.config.inbox, {"state": self.lock.path.parent, "config": app.config_path})

    def _check_inbox_lock(self) -> None:
        now = time.monotonic()
        if now - self._lock_checked >= LOCK_CHECK_SECONDS:
            self._lock_checked = now
            self.inbox_lock.check()

    # -- the styles folder ----------------------------------------------------------------

    def _styles_listing(self) -> tuple[tuple[str, int, int], ...]:
        """Names, sizes and mtimes of the style images: a change means presets changed."""
        listing = []
        for name, path in style_folder_images(self.config.styles).items():
            try:
                info = path.stat()
            except OSError:
                continue
            listing.append((name, info.st_size, info.st_mtime_ns))
        return tuple(listing)

    def _check_styles_folder(self) -> None:
        """Reload when a style image was added, removed or changed and has been still for stable_seconds."""
        now = time.monotonic()
        if now - self._styles_checked < STYLES_CHECK_SECONDS:
            return
        self._styles_checked = now
        listing = self._styles_listing()
        if listing != self._styles_seen:
            self._styles_seen, self._styles_changed = listing, now
            return
        if listing != self._styles_loaded and now - self._styles_changed >= self.config.watch.stable_seconds:
            log.info("styles folder changed", extra={"fields": {"folder": self.config.styles}})
            self._reload()

    # -- reload -----------------------------------------------------------------------------

    def _reload(self) -> None:
        assert self.intake is not None and self.executor is not None
        self._styles_loaded = self._styles_listing()  # a broken config is not retried until something changes
        self.notifier.reloading()
        log.info("reloading config", extra={"fields": {"config": self.app.config_path}})
        try:
            new_app = load_app(self.app.config_path)
        except PhotostyleError as exc:
            for line in str(exc).splitlines():
                log.error("invalid config: %s", line)
            log.error("keeping the current config")
            self.notifier.ready(self._status_line())
            return
        moved_inbox = None
        if inbox_key(new_app.config.inbox) != self.inbox_lock.key:  # a new inbox must be free first
            moved_inbox = self._inbox_lock(new_app)
            try:
                moved_inbox.acquire()
            except (AlreadyRunning, StateLockError) as exc:
                log.error("cannot take the new inbox: %s", exc)
                log.error("keeping the current config")
                self.notifier.ready(self._status_line())
                return
        old = self.config
        if moved_inbox is not None:
            self.inbox_lock.release()
            self.inbox_lock = moved_inbox
        if new_app.config.state != old.state:
            log.warning("the state folder cannot change while running; restart to use the new one",
                        extra={"fields": {"state": old.state}})
        self.app = new_app
        self.executor.reload(new_app)
        self._styles_loaded = self._styles_seen = self._styles_listing()
        self.intake.reloaded(old)
        self.models = log_model_states(self.config)
        log.info("config reloaded", extra={"fields": {"presets": ",".join(self.config.presets)}})
        self.notifier.ready(self._status_line())

    # -- status -----------------------------------------------------------------------------

    def _running_view(self) -> dict[str, Any] | None:
        if self.executor is None:
            return None
        for worker in self.executor.workers():
            if worker.running:
                return worker.running
        return None

    def _on_failed(self, item: WorkItem, error: PhotostyleError) -> None:
        """A photo that failed to load stays in the inbox for ``incomplete_grace`` (Originals): remember it for status.

        The ledger already counts it as failed; ``photostyle status`` shows it as waiting instead, while it is
        in the inbox unchanged and its time is not up.
        """
        grace = self.config.watch.incomplete_grace
        if stage_of(error) == "load" and grace > 0:
            self._load_failures[item.path] = (item.preset, item.identity, time.monotonic() + grace,
                                              reason_of(error, item.path))

    def _waiting_for_writers(self) -> list[dict[str, Any]]:
        """Photos in the inbox that wait for their writer before they are failed, with the seconds left.

        Two kinds: files that look unfinished, held by intake (never counted as failed), and photos that failed
        to load, left in the inbox for ``watch.incomplete_grace`` (the ledger counts them as failed:
        ``counted_failed`` lets ``status`` count them as waiting instead). Gone, changed (taken again) or out
        of time, a photo is no longer waiting.
        """
        assert self.intake is not None
        waiting = [{**entry, "counted_failed": False} for entry in self.intake.waiting_for_writers()]
        now = time.monotonic()
        for path, (preset, identity, deadline, reason) in list(self._load_failures.items()):
            try:
                unchanged = identity is None or FileIdentity.of(path.lstat()) == identity
            except OSError:
                unchanged = False
            if not unchanged or now >= deadline:
                del self._load_failures[path]
                continue
            waiting.append({"file": str(path), "preset": preset, "reason": reason, "seconds_left": deadline - now,
                            "counted_failed": True})
        wall = time.time()
        for entry in waiting:
            entry["seconds_left"] = round(entry["seconds_left"], 1)
            entry["fails_at"] = wall + entry["seconds_left"]
        return waiting

    def _status_line(self) -> str:
        dispatcher = self.dispatcher
        if dispatcher is None:
            return "starting"
        parts = [f"{dispatcher.queued} queued", f"{dispatcher.waiting_retry} waiting to retry"]
        if self.executor is not None and (condition := self.executor.condition()):
            parts.insert(0, condition)
        running = self._running_view()
        if running is not None:
            parts.append(f"running {Path(running['file']).name} {running['done']}/{running['total']}")
        return ", ".join(parts)

    def _publish_status(self, force: bool = False, stopped: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_status < STATUS_INTERVAL:
            return
        self._last_status = now
        assert self.dispatcher is not None and self.executor is not None and self.intake is not None
        status = {
            "pid": os.getpid(),
            "state": str(self.config.state),
            "started": self.started,
            "updated": time.time(),
            "stopped": stopped,
            "queued": self.dispatcher.queued,
            "waiting_retry": self.dispatcher.waiting_retry,
            "settling": len(self.intake.gate),
            "waiting_writer": self._waiting_for_writers(),
            "rescans": self.intake.rescans,
            "models": self.models,
            "running": self._running_view(),
            "workers": [worker.as_json() for worker in self.executor.workers()],
        }
        self.status_writer.write(json.dumps(status, indent=2, default=str))
        self.notifier.status(self._status_line())


def watch(config_path: Path | None) -> int:
    """Entry point of ``photostyle watch``: load, run until stopped."""
    return Daemon(load_app(config_path)).run()
