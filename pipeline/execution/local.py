"""The seam between the daemon and whatever renders photos: one small interface, two engines.

The coordinator (the daemon, ``process``) owns the files and the ledger; an
executor only turns photo *bytes* into rendered *bytes*. That keeps exactly-once
and "nothing lost" in one place whatever runs the engine:

- :class:`LocalExecutor`: one worker thread in this process owning the engine
  (the network loaded once), today's behaviour and the default;
- ``pipeline.execution.ray.executor.RayExecutor``: Ray actors, one per GPU or per group of
  CPUs, on this machine or a cluster (``executor: {kind: ray}``).

Both take :class:`Submission`\\ s (one preset, one or more photos) while they have
free slots, and hand back :class:`Completion`\\ s: for each photo a
:class:`~pipeline.job.runner.Rendered` or the error that stopped it. A worker that died
with photos in flight reports :class:`WorkerLost` for them, so the coordinator can
requeue them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict
from typing import Any

from pipeline.app import App
from pipeline.errors import Cancelled
from pipeline.execution.protocol import Completion, Executor, Submission, WorkerLost, WorkerState
from pipeline.job.runner import Rendered
from pipeline.execution.worker import Worker

log = logging.getLogger("photostyle.executor")


class LocalExecutor(Executor):
    """One worker thread in this process that owns the engine; runs one submission at a time."""

    def __init__(self, wake: threading.Event | None = None, max_in_flight: int = 1) -> None:
        """One submission at a time: the next photo's bytes are read only when the worker is free, so a
        photo deleted or replaced while it waits is seen as such (the main loop hands over at once)."""
        self.wake = wake or threading.Event()
        self.max_in_flight = max_in_flight
        self._jobs: queue.Queue[Submission | None] = queue.Queue()
        self._done: queue.Queue[Completion] = queue.Queue()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._abandon = threading.Event()
        self._app: App | None = None
        self._worker: Worker | None = None
        self._thread: threading.Thread | None = None
        self.state = WorkerState(name="local", node="this machine", device="?")

    def start(self, app: App) -> None:
        self._app = app
        self._worker = Worker(app)
        self.state.device = self._worker.resources.device
        self._worker.prepare(app.config.default_preset)
        self._thread = threading.Thread(target=self._run, name="photostyle-worker", daemon=True)
        self._thread.start()

    def reload(self, app: App) -> None:
        self._app = app

    def prepare(self, preset: str) -> None:
        assert self._worker is not None
        self._worker.prepare(preset)

    def free_slots(self) -> int:
        with self._lock:
            return max(0, self.max_in_flight - self._in_flight)

    def batch_size(self) -> int:
        assert self._worker is not None
        return self._worker.batch_size

    def submit(self, submission: Submission) -> None:
        with self._lock:
            self._in_flight += 1
        self._jobs.put(submission)

    def completions(self) -> list[Completion]:
        finished = []
        while True:
            try:
                finished.append(self._done.get_nowait())
            except queue.Empty:
                return finished

    def workers(self) -> list[WorkerState]:
        with self._lock:
            return [WorkerState(**{**asdict(self.state), "running": dict(self.state.running)
                                   if self.state.running else None})]

    def abandon(self) -> None:
        self._abandon.set()

    def shutdown(self, deadline: float) -> None:
        self._jobs.put(None)
        if self._thread is None:
            return
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._abandon.set()
            self._thread.join(timeout=10.0)

    # -- the worker thread ---------------------------------------------------------

    def _progress(self, done: int, total: int, message: str) -> None:
        with self._lock:
            if self.state.running is not None:
                self.state.running.update(done=done, total=total, message=message)

    def _run(self) -> None:
        while True:
            submission = self._jobs.get()
            if submission is None:
                return
            if self._abandon.is_set():
                outcomes: list[Any] = [Cancelled("stopped before it started")] * len(submission.requests)
                self._finish(Completion(submission.batch_id, outcomes, self.state.name))
                continue
            self._finish(self._render(submission))

    def _render(self, submission: Submission) -> Completion:
        assert self._worker is not None and self._app is not None
        if self._worker.app is not self._app:  # config reloaded: same loaded models, new settings
            self._worker = Worker(self._app, cache=self._worker.resources.cache)
        first = submission.requests[0]
        with self._lock:
            self.state.running = {"job": first.job_id, "file": str(first.source), "preset": first.preset,
                                  "batch": len(submission.requests), "started": time.time(),
                                  "done": 0, "total": 0, "message": ""}
        outcomes = self._worker.render(submission.requests, progress=self._progress,
                                       should_stop=self._abandon.is_set)
        return Completion(submission.batch_id, outcomes, self.state.name)

    def _finish(self, completion: Completion) -> None:
        with self._lock:
            self._in_flight -= 1
            self.state.running = None
            for outcome in completion.outcomes:
                if isinstance(outcome, Rendered):
                    self.state.done += 1
                elif not isinstance(outcome, Cancelled):
                    self.state.failed += 1
                    self.state.last_error = " ".join(str(outcome).split())
        self._done.put(completion)
        self.wake.set()


def make_executor(app: App, wake: threading.Event) -> Executor:
    """The executor the config asks for (``executor``: local, the default, or ray)."""
    options = getattr(app.config, "executor", None)
    kind = getattr(options, "kind", "local") if options is not None else "local"
    if kind == "ray":
        from pipeline.execution.ray.executor import RayExecutor  # Ray is imported only when asked for

        return RayExecutor(options, wake)
    return LocalExecutor(wake)


__all__ = ["Completion", "Executor", "LocalExecutor", "Submission", "WorkerLost", "WorkerState", "make_executor"]
