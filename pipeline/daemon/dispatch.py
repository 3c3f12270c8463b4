"""The daemon's dispatch: hand queued photos to the executor, then publish or settle what comes back.

Intake (:mod:`pipeline.daemon.intake`) decides *what* is work; this decides *when and
where* it runs and records *how it ended*. It is the only place that writes
results and the ledger for the daemon, whichever executor renders the photos, so
exactly-once lives here:

- a photo's bytes are read just before submission through a descriptor checked
  against the file fingerprinted at intake (:func:`pipeline.files.photo_file.read_verified`);
  a file swapped or rewritten meanwhile is taken again as new work, never read;
- at most the executor's free slots are in flight; the rest stay paths in the queue;
- a rendered photo is published (result + sidecar), its name recorded in the
  ledger at once, then marked done and its original moved;
- an outbox or ledger that cannot be written keeps the photo in the inbox and
  retries with back-off, without rendering it again;
- a photo whose worker died goes back to the front of the queue, and fails after
  ``max_attempts`` deaths, so one poison photo cannot stop the others;
- deaths of the whole process count too: the ledger keeps a crash count, and a
  photo that was running when the daemon died is a *suspect* at the next start:
  it runs alone, after everything else queued, and fails once its crashes reach
  ``max_attempts`` (an out-of-memory kill under systemd's ``MemoryMax=`` would
  otherwise restart into the same photo forever);
- a batch that fails as a whole (a batch plugin's or an internal error) is split,
  and its photos are tried again one by one, so one bad photo cannot fail the others.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.job.context import JobResult, WorkerResources
from pipeline.errors import Cancelled, ImageLoadError, OutputError, PhotostyleError, StageError, WeightsError
from pipeline.execution.protocol import Completion, Executor, Submission, WorkerLost
from pipeline.job.runner import JobRequest, Rendered, publish
from pipeline.daemon.ledger import Ledger, LedgerError, NoLedger
from pipeline.daemon.originals import Originals
from pipeline.files.photo_file import FileChanged, FileIdentity, NotAPhotoFile, read_named_photo, read_verified
from pipeline.daemon.recovery import FINGERPRINT, fingerprint_record

log = logging.getLogger("photostyle.daemon")

DEFAULT_MAX_ATTEMPTS = 3


@dataclass
class WorkItem:
    """A queued photo: where it is, what it is, and which file it was when it was fingerprinted."""

    path: Path
    preset: str
    key: str
    content_hash: str
    settings_hash: str
    identity: FileIdentity | None  # None: a photo named on the command line, read as it is now
    output_dir: Path | None = None  # None: the outbox's folder for the preset
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    failures: int = 0  # outbox/ledger retries, for the back-off
    lost: int = 0  # workers that died with it in flight
    alone: bool = False  # runs in a batch of its own (a suspect, or split from a failed batch)
    data: bytes | None = None  # the photo's bytes, read at submission: kept for publishing (the thumbnail)
    rendered: Rendered | None = None  # kept while publishing is retried, so it is not rendered again
    output: Path | None = None  # published, but the ledger did not take "done" yet

    @property
    def fields(self) -> dict[str, Any]:
        return {"job": self.job_id, "file": self.path, "preset": self.preset}


def stage_of(error: BaseException) -> str:
    if isinstance(error, StageError):
        return error.stage
    return "load" if isinstance(error, ImageLoadError) else "processing"


def reason_of(error: BaseException, path: Path) -> str:
    if isinstance(error, StageError):
        return error.reason
    text = " ".join(str(error).split())
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


class Dispatcher:
    """Queue, submission, and settlement of photos; see the module docstring."""

    def __init__(self, app: Callable[[], Any], ledger: Ledger | NoLedger, executor: Executor,
                 originals: Originals | None, retake: Callable[[Path], None], *, retry_outputs: bool = True,
                 on_done: Callable[[WorkItem, JobResult], None] | None = None,
                 on_failed: Callable[[WorkItem, PhotostyleError], None] | None = None) -> None:
        """The daemon passes its ledger and :class:`Originals`; ``photostyle process`` passes a
        :class:`~pipeline.daemon.ledger.NoLedger`, no originals (photos stay where they are), no retries of an
        unwritable outbox (it fails the photo), and callbacks that print each outcome."""
        self._app = app
        self.ledger = ledger
        self.executor = executor
        self.originals = originals
        self._retake = retake  # a file that changed: back through the stability gate
        self.retry_outputs = retry_outputs
        self.on_done, self.on_failed = on_done, on_failed
        self.queue: deque[WorkItem] = deque()
        self.suspects: deque[WorkItem] = deque()  # running when the process died: after the rest, alone
        self.intake_idle: Callable[[], bool] = lambda: True  # nothing more is about to be queued
        self.items: dict[Path, WorkItem] = {}  # every photo in our hands: queued, running, waiting to retry
        self.submitted: dict[str, list[WorkItem]] = {}
        self.retry_at: dict[Path, float] = {}
        self.accepting = True

    # -- what intake asks -------------------------------------------------------------

    def holds(self, path: Path) -> bool:
        return path in self.items

    def holds_key(self, key: str) -> bool:
        return any(item.key == key for item in self.items.values())

    def add(self, item: WorkItem) -> None:
        """Queue a fingerprinted photo; one that already stopped photostyle waits behind the rest, or fails."""
        self.items[item.path] = item
        if item.lost == 0:
            self.queue.append(item)
            return
        limit = self._max_attempts()
        if item.lost >= limit:
            self._settle_error(item, self._poison_error(item, limit, "it was running when photostyle stopped"),
                               "")
            return
        item.alone = True
        self.suspects.append(item)
        log.warning("it was running when photostyle or its worker stopped; it runs alone, after the other photos",
                    extra={"fields": {**item.fields, "crashes": item.lost, "max_attempts": limit}})

    @property
    def running(self) -> int:
        return sum(len(items) for items in self.submitted.values())

    @property
    def queued(self) -> int:
        return len(self.queue) + len(self.suspects)

    @property
    def waiting_retry(self) -> int:
        return len(self.retry_at)

    # -- the tick -----------------------------------------------------------------------

    def tick(self) -> None:
        self._retry_due()
        self.collect()
        if self.accepting:
            self._submit()

    def _config(self) -> Any:
        return self._app().config

    def _max_attempts(self) -> int:
        options = getattr(self._config(), "executor", None)
        return int(getattr(options, "max_attempts", DEFAULT_MAX_ATTEMPTS) or DEFAULT_MAX_ATTEMPTS)

    @staticmethod
    def _poison_error(item: WorkItem, limit: int, last: str) -> StageError:
        # "a worker" includes photostyle itself: the ledger counts the daemon's deaths with it running too
        return StageError("processing", None, f"it stopped a worker {item.lost} times (max_attempts {limit}); "
                                              f"last: {' '.join(last.split())}")

    def _forget(self, item: WorkItem) -> None:
        item.data = item.rendered = None
        self.items.pop(item.path, None)
        self.retry_at.pop(item.path, None)
        if item in self.suspects:
            self.suspects.remove(item)

    def _retry_later(self, item: WorkItem, reason: str) -> None:
        item.failures += 1
        watch = self._config().watch
        delay = min(watch.retry_max_seconds, watch.retry_seconds * 2 ** (item.failures - 1))
        self.retry_at[item.path] = time.monotonic() + delay
        log.warning("will retry", extra={"fields": {**item.fields, "in_seconds": round(delay, 1), "reason": reason}})

    def _retry_due(self) -> None:
        now = time.monotonic()
        for path, due in list(self.retry_at.items()):
            if now < due:
                continue
            del self.retry_at[path]
            item = self.items.get(path)
            if item is None:
                continue
            if item.output is not None:
                self._record_done(item, item.output)
            elif item.rendered is not None:
                self._publish(item, item.rendered)
            else:
                self.queue.append(item)

    # -- submitting ---------------------------------------------------------------------

    def _take_batch(self, first: WorkItem, limit: int) -> list[WorkItem]:
        """``first`` plus up to ``limit - 1`` queued photos of its preset; the others keep their places."""
        batch = [first]
        if first.alone:
            return batch
        for other in list(self.queue):
            if len(batch) >= limit:
                break
            if other.preset == first.preset and not other.alone:
                self.queue.remove(other)
                batch.append(other)
        return batch

    def _read(self, item: WorkItem) -> bytes | None:
        """The photo's bytes, if it is still the file fingerprinted at intake (else settle it here)."""
        try:
            if item.identity is None:
                return read_named_photo(item.path)
            return read_verified(item.path, item.identity, item.content_hash)
        except ImageLoadError as exc:
            self._settle_error(item, exc, "")
        except FileNotFoundError:
            self._drop_unrun(item)
            log.info("deleted before it was processed", extra={"fields": item.fields})
        except (FileChanged, NotAPhotoFile) as exc:
            self._drop_unrun(item)
            log.info("changed while queued; taking it again",
                     extra={"fields": {**item.fields, "reason": exc.strerror}})
            self._retake(item.path)
        except OSError as exc:
            self._drop_unrun(item)
            log.warning("could not read it; taking it again", extra={"fields": {**item.fields, "reason": exc}})
            self._retake(item.path)
        return None

    def _drop_unrun(self, item: WorkItem) -> None:
        self._forget(item)
        try:
            self.ledger.forget(item.key)
        except LedgerError as exc:
            log.warning("ledger not updated", extra={"fields": {**item.fields, "reason": exc}})

    def _next(self) -> WorkItem | None:
        """The next photo to submit: the queue first; a suspect only when it would run alone."""
        if self.queue:
            return self.queue.popleft()
        if self.suspects and self.running == 0 and self.intake_idle():
            return self.suspects.popleft()
        return None

    def _submit(self) -> None:
        while self.executor.free_slots() > 0 and (first := self._next()) is not None:
            batch = self._take_batch(first, self.executor.batch_size())
            preset = first.preset if first.preset in self._config().presets else self._config().default_preset
            requests, ready = [], []
            for item in batch:
                data = self._read(item)
                if data is None:
                    continue
                try:
                    self.ledger.mark_running(item.key)
                except LedgerError as exc:
                    self._retry_later(item, f"the ledger cannot be written ({exc})")
                    continue
                item.preset, item.data = preset, data
                requests.append(JobRequest(source=item.path, preset=preset, job_id=item.job_id, data=data,
                                           output_dir=item.output_dir))
                ready.append(item)
            if not ready:
                continue
            batch_id = uuid.uuid4().hex[:12]
            self.submitted[batch_id] = ready
            for item in ready:
                log.info("started", extra={"fields": {**item.fields, "batch": len(ready)}})
            self.executor.submit(Submission(batch_id, requests))

    # -- settling -----------------------------------------------------------------------

    def collect(self) -> None:
        for completion in self.executor.completions():
            self._settle_completion(completion)

    def _settle_completion(self, completion: Completion) -> None:
        items = self.submitted.pop(completion.batch_id, [])
        if len(items) > 1 and not any(isinstance(outcome, (Rendered, Cancelled)) for outcome in completion.outcomes):
            self._split(items, completion.outcomes[0])
            return
        for item, outcome in zip(items, completion.outcomes, strict=True):
            if isinstance(outcome, Rendered):
                if item.content_hash:  # what recovery recognises the result by, after a crash
                    outcome.report[FINGERPRINT] = fingerprint_record(item.content_hash, item.settings_hash)
                self._publish(item, outcome)
            else:
                self._settle_error(item, outcome, completion.worker)

    def _split(self, items: list[WorkItem], error: PhotostyleError) -> None:
        """A batch that failed as a whole: each photo goes back to the front, to run on its own (no attempt counted)."""
        log.warning("a batch failed as a whole; its photos are tried again one by one",
                    extra={"fields": {"batch": len(items), "reason": " ".join(str(error).split())}})
        for item in reversed(items):
            item.alone, item.data = True, None
            self._mark_queued(item, "retried alone after its batch failed")
            self.queue.appendleft(item)

    def _publish(self, item: WorkItem, rendered: Rendered) -> None:
        """Result and sidecar from the rendered bytes, here, whichever executor rendered them.

        ``job_finished`` plugins get a context made here from the request and the
        photo's bytes read at submission (the gallery's thumbnail of the original),
        the same under every executor.
        """
        app = self._app()
        request = JobRequest(source=item.path, preset=item.preset, job_id=item.job_id, data=item.data,
                             output_dir=item.output_dir)
        resources = WorkerResources(config=app.config, device="coordinator")
        try:
            result = publish(rendered, request, app.host, resources,
                             on_saved=lambda output: self._record_output(item, output))
        except OutputError as exc:
            if not self.retry_outputs:
                self._settle_error(item, exc, "")
                return
            item.rendered = rendered
            reason = " ".join(str(exc).split())
            self._mark_queued(item, reason)
            log.error("could not finish; the photo stays in the inbox",
                      extra={"fields": {**item.fields, "reason": reason}})
            self._retry_later(item, reason)
            return
        item.rendered = item.data = None
        timings = {stage: f"{seconds:.2f}s" for stage, seconds in result.timings.items()}
        log.info("done", extra={"fields": {**item.fields, **timings, "total": f"{result.seconds:.2f}s",
                                           "output": result.output}})
        if self.on_done is not None:
            self.on_done(item, result)
        self._record_done(item, result.output)

    def _record_output(self, item: WorkItem, output: Path) -> None:
        try:
            self.ledger.mark_output(item.key, output)
        except LedgerError as exc:  # recovery finds the result by its sidecar's fingerprint instead
            log.warning("ledger not updated with the result's name", extra={"fields": {**item.fields,
                                                                                      "reason": exc}})

    def _record_done(self, item: WorkItem, output: Path) -> None:
        try:
            self.ledger.mark_done(item.key, output)
        except LedgerError as exc:
            item.output = output
            self._retry_later(item, f"the result is saved but the ledger cannot be written ({exc})")
            return
        self._forget(item)
        if self.originals is not None and item.identity is not None:
            self.originals.succeeded(item.path, item.preset, item.identity, output)

    def _mark_queued(self, item: WorkItem, reason: str) -> None:
        try:
            self.ledger.mark_queued(item.key, reason)
        except LedgerError as exc:
            log.warning("ledger not updated", extra={"fields": {**item.fields, "reason": exc}})

    def _settle_error(self, item: WorkItem, error: PhotostyleError, worker: str) -> None:
        item.data = None  # read again from the file if it runs again
        if isinstance(error, Cancelled):
            self._mark_queued(item, "interrupted by shutdown")
            self._forget(item)
            log.warning("abandoned at shutdown; left queued for the next start", extra={"fields": item.fields})
            return
        if isinstance(error, WorkerLost):
            item.lost += 1
            try:
                self.ledger.note_crash(item.key)
            except LedgerError as exc:
                log.warning("ledger not updated", extra={"fields": {**item.fields, "reason": exc}})
            limit = self._max_attempts()
            if item.lost < limit:
                self._mark_queued(item, str(error))
                item.alone = True
                self.suspects.append(item)
                log.warning("worker lost with the photo in flight; queued again",
                            extra={"fields": {**item.fields, "worker": worker, "attempt": item.lost,
                                              "reason": error, "runs": "alone, after the other photos"}})
                return
            error = self._poison_error(item, limit, str(error))
        if isinstance(error, (OutputError, WeightsError)) and self.retry_outputs:
            reason = " ".join(str(error).split())
            self._mark_queued(item, reason)
            log.error("could not finish; the photo stays in the inbox", extra={"fields": {**item.fields,
                                                                                         "reason": reason}})
            self._retry_later(item, reason)
            return
        stage, reason = stage_of(error), reason_of(error, item.path)
        try:
            self.ledger.mark_failed(item.key, f"{stage}: {reason}")
        except LedgerError as exc:
            log.warning("ledger not updated", extra={"fields": {**item.fields, "reason": exc}})
        log.error("failed", extra={"fields": {**item.fields, "stage": stage, "reason": reason}})
        self._forget(item)
        if self.on_failed is not None:
            self.on_failed(item, error)
        if self.originals is not None:
            grace = self._config().watch.incomplete_grace if stage == "load" else 0.0
            self.originals.failed(item.path, item.preset, stage, reason, grace=grace, identity=item.identity)

    # -- stopping -----------------------------------------------------------------------

    def running_files(self) -> list[WorkItem]:
        return [item for items in self.submitted.values() for item in items]
