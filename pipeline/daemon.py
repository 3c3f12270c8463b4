"""``photostyle watch``: a thin loop around the same job runner ``photostyle process`` uses.

Two threads:

- the **main loop** watches: it turns watchdog events, the start-up scan and
  periodic rescans into candidate paths, lets the stability gate release
  finished files, fingerprints them against the ledger, queues new work, handles
  signals (SIGTERM/SIGINT stop, SIGHUP reload), pings systemd's watchdog and
  publishes status. It never decodes an image, so a long job never blinds it.
- the **worker thread** owns the engine (:class:`~pipeline.worker.Worker`: the
  network is loaded once) and runs one job at a time, then records the outcome
  and moves the original.

The queue holds paths, not pixels, so a burst of thousands of files is cheap.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline.app import App, load_app
from pipeline.config import style_folder_images
from pipeline.disposal import after_failure, after_success
from pipeline.errors import Cancelled, OutputError, PhotostyleError, StageError, WeightsError
from pipeline.fileops import write_text_atomic
from pipeline.fingerprint import file_hash, settings_hash
from pipeline.context import JobResult
from pipeline.job import JobRequest
from pipeline.ledger import Ledger, job_key
from pipeline.systemd import Notifier
from pipeline.watch import InboxWatcher, StabilityGate, StableFile, is_candidate, preset_for, scan
from pipeline.worker import Worker

log = logging.getLogger("photostyle.daemon")

TICK_SECONDS = 0.25
INTAKE_BUDGET_SECONDS = 0.5  # fingerprinting per tick, so signals and pings stay prompt in a burst
STATUS_INTERVAL = 1.0
STYLES_CHECK_SECONDS = 1.0
LEDGER_FILE = "ledger.sqlite3"
STATUS_FILE = "status.json"


@dataclass
class WorkItem:
    """A queued photo: where it is, what it is, and how it looked when it was fingerprinted."""

    path: Path
    preset: str
    key: str
    content_hash: str
    settings_hash: str
    size: int
    mtime_ns: int
    job_id: str
    attempts: int = 0


@dataclass
class Outcome:
    item: WorkItem
    kind: str  # done | failed | retry | cancelled | gone
    detail: str = ""


@dataclass
class RunningJob:
    """What the worker is doing now, for status and systemd's STATUS=."""

    job_id: str
    path: Path
    preset: str
    started: float = field(default_factory=time.time)
    batch: int = 1
    done: int = 0
    total: int = 0
    message: str = ""


def _stage_of(error: BaseException) -> str:
    if isinstance(error, StageError):
        return error.stage
    return "load" if type(error).__name__ == "ImageLoadError" else "processing"


def _reason_of(error: BaseException, path: Path) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, StageError):
        return error.reason
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


class Daemon:
    """The watch-folder service: see the module docstring."""

    def __init__(self, app: App, notifier: Notifier | None = None) -> None:
        self.app = app
        self.notifier = notifier or Notifier()
        self.wake = threading.Event()
        self.stop_requested = threading.Event()
        self.stop_deadline = float("inf")
        self.reload_requested = False
        self.work: queue.Queue[WorkItem | None] = queue.Queue()
        self.outcomes: queue.Queue[Outcome] = queue.Queue()
        self.in_flight: dict[Path, WorkItem] = {}
        self.retry_at: dict[Path, float] = {}
        self.kept: dict[Path, tuple[int, int]] = {}  # originals left in place: (size, mtime) already handled
        self.running: RunningJob | None = None
        self._running_lock = threading.Lock()
        self._settings_hashes: dict[str, str] = {}
        self.gate = self._new_gate()
        self.ledger = Ledger(app.config.state / LEDGER_FILE)
        self.watcher: InboxWatcher | None = None
        self.worker_thread: threading.Thread | None = None
        self.started = time.time()
        self._last_status = 0.0
        self._styles_loaded = self._styles_seen = self._styles_listing()
        self._styles_checked = self._styles_changed = 0.0

    # -- set-up --------------------------------------------------------------------

    @property
    def config(self) -> Any:
        return self.app.config

    def _new_gate(self) -> StabilityGate:
        watch = self.app.config.watch
        return StabilityGate(watch.stable_seconds, watch.empty_timeout)

    def _make_folders(self) -> None:
        config = self.config
        for folder in (config.inbox, config.outbox, config.processed, config.failed, config.state):
            folder.mkdir(parents=True, exist_ok=True)
        for name in config.presets:
            (config.inbox / name).mkdir(exist_ok=True)

    def _start_watcher(self) -> None:
        watch = self.config.watch
        self.watcher = InboxWatcher(self.config.inbox, watch.poll, watch.poll_interval, self.wake)
        self.watcher.start()

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if not self.stop_requested.is_set():
            self.stop_deadline = time.monotonic() + self.config.watch.shutdown_timeout
            self.stop_requested.set()
        self.wake.set()

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True
        self.wake.set()

    # -- the main loop -------------------------------------------------------------

    def run(self) -> int:
        """Watch until SIGTERM/SIGINT; return the exit status (0 after a clean stop)."""
        self._install_signals()
        self._make_folders()
        recovered = self.ledger.recover_interrupted()
        if recovered:
            log.info("requeued jobs interrupted by a crash", extra={"fields": {"count": recovered}})
        engine = Worker(self.app)
        engine.prepare(self.config.default_preset)  # missing weights refuse the start, before READY
        self.worker_thread = threading.Thread(target=self._work, args=(engine,), name="photostyle-worker", daemon=True)
        self.worker_thread.start()
        self._start_watcher()
        self._scan_all()
        last_rescan = time.monotonic()
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
            self._take_events()
            self._check_styles_folder()
            if time.monotonic() - last_rescan >= self.config.watch.rescan_seconds:
                self._scan_all()
                last_rescan = time.monotonic()
            self._intake(self.gate.release())
            self._retry_due()
            self._collect_outcomes()
            self._publish_status()
            self.notifier.watchdog()
        return self._shutdown()

    def _shutdown(self) -> int:
        self.notifier.stopping()
        log.info("stopping", extra={"fields": {"queued": self.work.qsize()}})
        if self.watcher is not None:
            self.watcher.stop()
        self.work.put(None)
        if self.worker_thread is not None:
            grace = max(0.0, self.stop_deadline - time.monotonic()) + 5.0
            self.worker_thread.join(timeout=grace)
            if self.worker_thread.is_alive():
                running = self.running
                log.warning("abandoning the running job; it will be redone at the next start",
                            extra={"fields": {"job": running.job_id if running else "?"}})
        self._collect_outcomes()
        self._publish_status(force=True, stopped=True)
        self.ledger.close()
        self.notifier.close()
        log.info("stopped")
        return 0

    # -- finding work --------------------------------------------------------------

    def _consider(self, path: Path) -> None:
        if path in self.in_flight or not is_candidate(path, self.config.watch):
            return
        kept = self.kept.get(path)
        if kept is not None:
            try:
                info = path.lstat()
            except OSError:
                self.kept.pop(path, None)
                return
            if (info.st_size, info.st_mtime_ns) == kept:
                return
            self.kept.pop(path, None)
        self.gate.observe(path)

    def _scan_all(self) -> None:
        for path in scan(self.config.inbox, self.config.watch):
            self._consider(path)

    def _take_events(self) -> None:
        if self.watcher is None:
            return
        for path in sorted(self.watcher.drain()):
            if path.is_dir() and not path.is_symlink():
                for found in scan(path, self.config.watch):
                    self._consider(found)
            else:
                self._consider(path)

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
                log.warning(warning)
            if stable.problem is not None:
                self._fail_untouched(stable.path, preset, "intake", stable.problem)
                continue
            try:
                content = file_hash(stable.path)
                settings = self._settings_hash(preset)
            except FileNotFoundError:
                log.info("vanished before it was queued", extra={"fields": {"file": stable.path}})
                continue
            except OSError as exc:
                self._fail_untouched(stable.path, preset, "intake", f"it cannot be read ({exc.strerror or exc})")
                continue
            self._queue_or_skip(stable, preset, content, settings)

    def _queue_or_skip(self, stable: StableFile, preset: str, content: str, settings: str) -> None:
        key = job_key(content, preset, settings)
        if any(item.key == key for item in self.in_flight.values()):
            return  # the same photo is already queued under another name; the rescan brings it back later
        record = self.ledger.get(key)
        if record is not None and record.state == "done":
            log.info("already done with these settings; not redoing it", extra={"fields": {
                "file": stable.path, "preset": preset, "output": record.output}})
            self._dispose_after_success(stable.path, stable.size, stable.mtime_ns)
            return
        item = WorkItem(stable.path, preset, key, content, settings, stable.size, stable.mtime_ns,
                        job_id=uuid.uuid4().hex[:12])
        self.ledger.enqueue(key, content, preset, settings, item.job_id, str(stable.path))
        self.in_flight[stable.path] = item
        self.work.put(item)
        log.info("queued", extra={"fields": {"job": item.job_id, "file": stable.path, "preset": preset,
                                             "queue": self.work.qsize()}})

    def _fail_untouched(self, path: Path, preset: str, stage: str, reason: str) -> None:
        """A file that never reached a job (symlink, FIFO, empty, unreadable): move it to failed/."""
        log.error("failed", extra={"fields": {"file": path, "preset": preset, "stage": stage, "reason": reason}})
        self.ledger.record_failure(path, preset, f"{stage}: {reason}")
        try:
            moved = after_failure(path, self.config, preset, stage, reason)
            log.info("moved to failed", extra={"fields": {"file": path, "to": moved}})
        except OSError as exc:
            log.error("could not move to failed; leaving it", extra={"fields": {"file": path, "reason": exc}})
            try:
                info = path.lstat()
                self.kept[path] = (info.st_size, info.st_mtime_ns)
            except OSError:
                pass

    def _dispose_after_success(self, path: Path, size: int, mtime_ns: int) -> None:
        try:
            moved = after_success(path, self.config)
        except OSError as exc:
            log.error("could not move the original", extra={"fields": {"file": path, "reason": exc}})
            moved = None
        if self.config.watch.after == "keep" or (moved is None and path.exists()):
            self.kept[path] = (size, mtime_ns)

    # -- outcomes and retries ------------------------------------------------------

    def _collect_outcomes(self) -> None:
        while True:
            try:
                outcome = self.outcomes.get_nowait()
            except queue.Empty:
                return
            item = outcome.item
            if outcome.kind == "retry":
                item.attempts += 1
                watch = self.config.watch
                delay = min(watch.retry_max_seconds, watch.retry_seconds * 2 ** (item.attempts - 1))
                self.retry_at[item.path] = time.monotonic() + delay
                log.warning("will retry", extra={"fields": {"job": item.job_id, "file": item.path,
                                                            "in_seconds": round(delay, 1), "reason": outcome.detail}})
                continue
            self.in_flight.pop(item.path, None)
            if outcome.kind == "done" and self.config.watch.after == "keep":
                self.kept[item.path] = (item.size, item.mtime_ns)
            if outcome.kind == "changed":
                self.gate.observe(item.path)

    def _retry_due(self) -> None:
        now = time.monotonic()
        for path, due in list(self.retry_at.items()):
            if now >= due:
                del self.retry_at[path]
                item = self.in_flight.get(path)
                if item is not None:
                    self.work.put(item)

    # -- the styles folder ---------------------------------------------------------

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

    # -- reload --------------------------------------------------------------------

    def _reload(self) -> None:
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
        old = self.config
        self.app = new_app
        self._styles_loaded = self._styles_seen = self._styles_listing()
        self._settings_hashes.clear()
        self._make_folders()
        if (old.inbox, old.watch.poll, old.watch.poll_interval) != (self.config.inbox, self.config.watch.poll,
                                                                    self.config.watch.poll_interval):
            if self.watcher is not None:
                self.watcher.stop()
            self.gate = self._new_gate()
            self._start_watcher()
        self._scan_all()
        log.info("config reloaded", extra={"fields": {"presets": ",".join(self.config.presets)}})
        self.notifier.ready(self._status_line())

    # -- the worker thread ---------------------------------------------------------

    def _should_abandon(self) -> bool:
        return self.stop_requested.is_set() and time.monotonic() >= self.stop_deadline

    def _work(self, engine: Worker) -> None:
        held: deque[WorkItem | None] = deque()  # taken from the queue for a batch, but for another preset
        while True:
            item = held.popleft() if held else self.work.get()
            if item is None or self.stop_requested.is_set():
                return
            if engine.app is not self.app:  # config reloaded: same loaded models, new settings
                engine = Worker(self.app, cache=engine.resources.cache)
            batch = self._gather(item, held, engine.batch_size)
            try:
                outcomes = self._run_items(engine, batch)
            except Exception as exc:  # a bug in photostyle itself: log it, keep the photos, keep running
                log.exception("internal error", extra={"fields": {"jobs": ",".join(i.job_id for i in batch)}})
                outcomes = [Outcome(each, "retry", f"internal error: {exc}") for each in batch]
            for outcome in outcomes:
                self.outcomes.put(outcome)
            self.wake.set()

    def _gather(self, first: WorkItem, held: deque[WorkItem | None], limit: int) -> list[WorkItem]:
        """``first`` plus up to ``limit - 1`` queued photos of its preset; others wait in ``held``, in order."""
        batch = [first]
        for other in list(held):
            if len(batch) >= limit:
                return batch
            if other is not None and other.preset == first.preset:
                held.remove(other)
                batch.append(other)
        while len(batch) < limit:
            try:
                more = self.work.get_nowait()
            except queue.Empty:
                break
            if more is not None and more.preset == first.preset:
                batch.append(more)
                continue
            held.append(more)
            if more is None:  # shutdown: nothing after it
                break
        return batch

    def _unchanged(self, item: WorkItem) -> bool | None:
        try:
            info = item.path.lstat()
        except FileNotFoundError:
            return None
        return (info.st_size, info.st_mtime_ns) == (item.size, item.mtime_ns)

    def _gone_or_changed(self, item: WorkItem) -> Outcome | None:
        """A queued photo deleted or replaced since it was fingerprinted is not run (a replacement is new work)."""
        unchanged = self._unchanged(item)
        if unchanged:
            return None
        self.ledger.forget(item.key)
        if unchanged is None:
            log.info("deleted before it was processed", extra={"fields": {"job": item.job_id, "file": item.path}})
            return Outcome(item, "gone")
        log.info("changed while queued; taking it again", extra={"fields": {"job": item.job_id, "file": item.path}})
        return Outcome(item, "changed")

    def _run_items(self, engine: Worker, items: list[WorkItem]) -> list[Outcome]:
        """Run one photo, or several of one preset as a batch; settle each one's outcome."""
        outcomes = [outcome for outcome in map(self._gone_or_changed, items) if outcome is not None]
        settled = {id(outcome.item) for outcome in outcomes}
        runnable = [item for item in items if id(item) not in settled]
        if not runnable:
            return outcomes
        preset = runnable[0].preset if runnable[0].preset in self.config.presets else self.config.default_preset
        requests = [JobRequest(source=item.path, preset=preset, job_id=item.job_id) for item in runnable]
        for item in runnable:
            self.ledger.mark_running(item.key)
            log.info("started", extra={"fields": {"job": item.job_id, "file": item.path, "preset": preset,
                                                  "batch": len(runnable)}})
        with self._running_lock:
            self.running = RunningJob(runnable[0].job_id, runnable[0].path, preset, batch=len(runnable))
        try:
            if len(runnable) == 1:
                try:
                    results: list[Any] = [engine.run(requests[0], progress=self._progress,
                                                     should_stop=self._should_abandon)]
                except Cancelled:
                    raise
                except PhotostyleError as exc:
                    results = [exc]
            else:
                results = engine.run_batch(requests, progress=self._progress, should_stop=self._should_abandon)
        except Cancelled:
            for item in runnable:
                self.ledger.mark_queued(item.key, "interrupted by shutdown")
                log.warning("abandoned at shutdown; left queued for the next start",
                            extra={"fields": {"job": item.job_id, "file": item.path, "preset": preset}})
            return outcomes + [Outcome(item, "cancelled") for item in runnable]
        finally:
            with self._running_lock:
                self.running = None
        return outcomes + [self._settle(item, preset, result) for item, result in zip(runnable, results, strict=True)]

    def _settle(self, item: WorkItem, preset: str, result: JobResult | PhotostyleError) -> Outcome:
        """Record a finished job and move its original: done, retry later, or failed."""
        fields = {"job": item.job_id, "file": item.path, "preset": preset}
        if isinstance(result, (OutputError, WeightsError)):
            reason = " ".join(str(result).split())
            self.ledger.mark_queued(item.key, reason)
            log.error("could not finish; the photo stays in the inbox", extra={"fields": {**fields, "reason": reason}})
            return Outcome(item, "retry", reason)
        if isinstance(result, PhotostyleError):
            stage, reason = _stage_of(result), _reason_of(result, item.path)
            self.ledger.mark_failed(item.key, f"{stage}: {reason}")
            log.error("failed", extra={"fields": {**fields, "stage": stage, "reason": reason}})
            try:
                moved = after_failure(item.path, self.config, preset, stage, reason)
                log.info("moved to failed", extra={"fields": {**fields, "to": moved}})
            except OSError as move_error:
                log.error("could not move to failed", extra={"fields": {**fields, "reason": move_error}})
            return Outcome(item, "failed", reason)
        self.ledger.mark_done(item.key, str(result.output))
        timings = {stage: f"{seconds:.2f}s" for stage, seconds in result.timings.items()}
        log.info("done", extra={"fields": {**fields, **timings, "total": f"{result.seconds:.2f}s",
                                           "output": result.output}})
        if self._unchanged(item):
            self._dispose_after_success(item.path, item.size, item.mtime_ns)
        return Outcome(item, "done")

    def _progress(self, done: int, total: int, message: str) -> None:
        with self._running_lock:
            if self.running is not None:
                self.running.done, self.running.total, self.running.message = done, total, message

    # -- status --------------------------------------------------------------------

    def _status_line(self) -> str:
        queued = sum(1 for path in self.in_flight if path not in self.retry_at)
        running = self.running
        parts = [f"{queued} queued", f"{len(self.retry_at)} waiting to retry"]
        if running is not None:
            parts.append(f"running {running.path.name} {running.done}/{running.total}")
        return ", ".join(parts)

    def _publish_status(self, force: bool = False, stopped: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_status < STATUS_INTERVAL:
            return
        self._last_status = now
        with self._running_lock:
            running = self.running
            running_view = None if running is None else {
                "job": running.job_id, "file": str(running.path), "preset": running.preset,
                "started": running.started, "done": running.done, "total": running.total,
                "message": running.message,
            }
        status = {
            "pid": os.getpid(),
            "started": self.started,
            "updated": time.time(),
            "stopped": stopped,
            "queued": sum(1 for path in self.in_flight if path not in self.retry_at) - (running is not None),
            "waiting_retry": len(self.retry_at),
            "settling": len(self.gate),
            "running": running_view,
        }
        try:
            write_text_atomic(self.config.state / STATUS_FILE, json.dumps(status, indent=2))
        except OSError as exc:
            log.warning("could not write status", extra={"fields": {"reason": exc}})
        self.notifier.status(self._status_line())


def watch(config_path: Path | None) -> int:
    """Entry point of ``photostyle watch``: load, run until stopped."""
    return Daemon(load_app(config_path)).run()
