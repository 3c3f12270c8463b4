"""The Ray executor: photos rendered by Ray actors, on this machine or a cluster (``executor: {kind: ray}``).

This is the coordinator's side, and it never imports Ray: Ray runs in a driver
process of its own (:mod:`pipeline.ray_driver`), which this class starts, feeds
and, when it dies, starts again. So a cluster that cannot be reached at start, or
is lost while running, costs the daemon nothing but time:

- it says so in one log line and in :meth:`condition` (``systemctl status``), and
  offers no free slots, so photos stay paths in the queue;
- it starts a new driver with back-off until the cluster answers again;
- photos that were in flight are handed to the new driver's workers, not
  reported lost: the cluster going away is not their fault. Only a worker that
  dies under a photo reports :class:`~pipeline.executor.WorkerLost`, which the
  dispatcher counts towards ``max_attempts``.

At most ``workers × max_in_flight`` submissions are out at once (:meth:`free_slots`).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pipeline.app import App
from pipeline.errors import Cancelled, PhotostyleError
from pipeline.executor_protocol import Completion, Executor, Submission, WorkerLost, WorkerState
from pipeline.ray_driver import DriverSettings
from pipeline.ray_worker import WorkerSpec, pack_worker_spec
from pipeline.worker import batch_size

log = logging.getLogger("photostyle.executor")

START_TIMEOUT = 300.0  # the first connection and the workers' model loading, before the daemon says READY
RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0
DRIVER_LOG = "ray-driver.log"
DRIVER_LOG_MAX_BYTES = 10_000_000  # then it becomes ray-driver.log.1


class ClusterUnavailable(PhotostyleError):
    """``process`` could not reach the Ray cluster (the daemon waits instead)."""


class RayExecutor(Executor):
    """Ray actors behind the :class:`~pipeline.executor.Executor` interface; see the module docstring."""

    def __init__(self, options: Any, wake: threading.Event | None = None, *, wait_for_cluster: bool = True) -> None:
        """``wait_for_cluster``: keep retrying an unreachable cluster (the daemon); False raises at start (``process``)."""
        self.options = options
        self.wake = wake or threading.Event()
        self.wait_for_cluster = wait_for_cluster
        self._app: App | None = None
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._changed = threading.Event()
        self._closing = threading.Event()
        self._conn: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._supervisor: threading.Thread | None = None
        self._ready = False
        self._summary: dict[str, Any] = {}
        self._in_flight: dict[str, Submission] = {}
        self._resend: list[Submission] = []  # in flight when the driver was lost: for the next driver
        self._resent: dict[str, int] = {}
        self._done: list[Completion] = []
        self._states: list[WorkerState] = []
        self._condition: str | None = "connecting to the Ray cluster"
        self._fatal: PhotostyleError | None = None
        self._started = threading.Event()  # the first driver is ready, fatal, or cannot reach the cluster
        self._unreachable_said = False
        self._unreachable: str | None = None

    # -- the Executor interface ------------------------------------------------------------------

    @property
    def address(self) -> str:
        return self.options.address or "a private runtime on this machine"

    def _pack(self, app: App) -> WorkerSpec:
        try:
            return pack_worker_spec(app)
        except OSError as exc:  # a style image or plugin file unreadable since the config was validated
            raise PhotostyleError(f"cannot send the config to the Ray workers: {exc.filename}: "
                                  f"{exc.strerror or exc}") from None

    def start(self, app: App) -> None:
        self._app = app
        self._spec = self._pack(app)
        self._supervisor = threading.Thread(target=self._supervise, name="photostyle-ray", daemon=True)
        self._supervisor.start()
        if not self._started.wait(START_TIMEOUT):
            log.warning("the Ray workers are not ready yet; photos wait in the queue",
                        extra={"fields": {"address": self.address}})
        if self._fatal is not None:
            self.shutdown(time.monotonic())
            raise self._fatal
        if not self._ready and not self.wait_for_cluster:
            reason = self._unreachable or "its workers are not ready"
            self.shutdown(time.monotonic())
            raise ClusterUnavailable(f"cannot reach the Ray cluster at {self.address} ({reason})")

    def reload(self, app: App) -> None:
        try:
            spec = self._pack(app)
        except PhotostyleError as exc:
            log.error("the Ray workers keep the previous config", extra={"fields": {"reason": exc}})
            return
        if app.config.executor != self.options:
            log.warning("executor settings take effect at the next start; the workers take the rest now")
        self._app, self._spec = app, spec
        self._send("reload", spec)

    def free_slots(self) -> int:
        with self._lock:
            if not self._ready:
                return 0
            return max(0, self._summary["workers"] * self.options.max_in_flight - len(self._in_flight))

    def batch_size(self) -> int:
        assert self._app is not None
        return batch_size(self._app.config.watch.batch_size, on_gpu=self._summary.get("gpus_per_worker", 0) > 0)

    def submit(self, submission: Submission) -> None:
        with self._lock:
            self._in_flight[submission.batch_id] = submission
            ready = self._ready
            if not ready:
                self._resend.append(submission)
        if ready:
            self._send("submit", submission.batch_id, submission.requests)

    def completions(self) -> list[Completion]:
        with self._lock:
            done, self._done = self._done, []
        return done

    def workers(self) -> list[WorkerState]:
        with self._lock:
            if self._ready or self._states:
                return [WorkerState(**asdict(state)) for state in self._states]
            return [WorkerState(name="ray", node=self.address, device="-", last_error=self._condition)]

    def condition(self) -> str | None:
        with self._lock:
            return None if self._ready else self._condition

    def abandon(self) -> None:
        with self._lock:
            waiting, self._resend = self._resend, []
        for submission in waiting:  # not running anywhere: stopped before they started
            self._finish(submission.batch_id, [Cancelled("stopped before it started")] * len(submission.requests), "ray")
        self._send("abandon")

    def shutdown(self, deadline: float) -> None:
        self._closing.set()
        self._send("shutdown")
        process = self._process
        if process is not None:
            try:
                process.wait(timeout=max(1.0, deadline - time.monotonic()) + 10.0)
            except subprocess.TimeoutExpired:
                process.kill()  # its actors end with it (they belong to its Ray job)
                process.wait()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5.0)

    def wait(self, timeout: float) -> None:
        self._changed.wait(timeout)
        self._changed.clear()

    # -- the driver process ------------------------------------------------------------------------

    def _send(self, *message: Any) -> None:
        with self._send_lock:
            if self._conn is None:
                return
            try:
                self._conn.send(message)
            except OSError:
                pass  # the driver is gone: the supervisor notices and starts another

    def _driver_log(self) -> Any:
        """Ray's own messages go to ``state/ray-driver.log``, keeping the daemon's log one line per event."""
        assert self._app is not None
        try:
            path = Path(self._app.config.state) / DRIVER_LOG
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_file() and path.stat().st_size > DRIVER_LOG_MAX_BYTES:
                os.replace(path, path.with_name(f"{DRIVER_LOG}.1"))
            return open(path, "ab")
        except OSError:
            return subprocess.DEVNULL

    def _spawn(self) -> None:
        assert self._app is not None
        ours, theirs = socket.socketpair()
        output = self._driver_log()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.ray_driver", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                start_new_session=True,  # the terminal's Ctrl-C is the coordinator's, not the driver's
            )
        finally:
            theirs.close()
            if output is not subprocess.DEVNULL:
                output.close()
        conn = Connection(ours.detach())
        conn.send(DriverSettings(
            options=self.options.model_dump(), spec=self._spec, owner=f"{socket.gethostname()}-{os.getpid()}",
            device=self._app.config.device, config_path=str(self._app.config_path),
        ))
        with self._send_lock:
            self._conn = conn

    def _supervise(self) -> None:
        """Run a driver; when it ends unasked, keep its photos and start another, with back-off."""
        delay = RETRY_SECONDS
        while not self._closing.is_set():
            self._spawn()
            was_ready = self._serve()
            assert self._process is not None
            code = self._process.wait()
            with self._send_lock:
                self._conn = None
            if self._closing.is_set() or self._fatal is not None:
                break
            if not self._started.is_set():  # it never said a word: a broken install, not a cluster problem
                self._fatal = PhotostyleError(f"the Ray driver exited with status {code} before its workers were "
                                              f"ready; see {DRIVER_LOG} in the state folder")
                break
            self._lost(code, was_ready)
            if was_ready:
                delay = RETRY_SECONDS
            self._closing.wait(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)
        self._started.set()

    def _serve(self) -> bool:
        """Handle the driver's messages until it exits; whether it got ready."""
        assert self._conn is not None
        was_ready = False
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                return was_ready
            kind = message[0]
            if kind == "done":
                self._finish(message[1], message[2], message[3])
            elif kind == "workers":
                with self._lock:
                    self._states = [WorkerState(**state) for state in message[1]]
            elif kind == "ready":
                was_ready = True
                self._on_ready(message[1])
            elif kind == "unreachable":
                self._on_unreachable(message[1])
            elif kind == "note":
                log.warning(message[1], extra={"fields": {"address": self.address}})
            elif kind == "fatal":
                self._on_fatal(message[1])

    def _finish(self, batch_id: str, outcomes: list[Any], worker: str) -> None:
        with self._lock:
            if self._in_flight.pop(batch_id, None) is None:
                return  # abandoned and settled already
            self._done.append(Completion(batch_id, outcomes, worker))
        self._changed.set()
        self.wake.set()

    def _on_ready(self, summary: dict[str, Any]) -> None:
        with self._lock:
            self._summary = summary
            self._states = [WorkerState(**state) for state in summary.pop("workers_state")]
            self._ready, self._condition, self._unreachable_said = True, None, False
            resend, self._resend = self._resend, []
        log.info("connected to the Ray cluster", extra={"fields": {
            "address": self.address, "nodes": summary["nodes"], "workers": summary["workers"],
            "gpus_per_worker": f"{summary['gpus_per_worker']:g}", "cpus_per_worker": summary["cpus_per_worker"]}})
        for submission in resend:
            self._send("submit", submission.batch_id, submission.requests)
        self._started.set()
        self._changed.set()
        self.wake.set()

    def _on_unreachable(self, reason: str) -> None:
        with self._lock:
            self._condition = f"waiting for the Ray cluster ({reason})"
            self._unreachable = reason
            said, self._unreachable_said = self._unreachable_said, True
        if not said and self.wait_for_cluster:  # one line, not one per retry ('process' stops with it instead)
            log.error("cannot reach the Ray cluster; photos wait in the queue, retrying with back-off",
                      extra={"fields": {"address": self.address, "reason": reason}})
        self._started.set()

    def _on_fatal(self, error: PhotostyleError) -> None:
        if not self._started.is_set():  # at start: refuse to start, as missing weights do
            self._fatal = error
            self._started.set()
            return
        text = " ".join(str(error).split())
        with self._lock:
            self._condition = f"Ray workers cannot start: {text}"
        log.error("the Ray workers cannot start; retrying with back-off", extra={"fields": {"reason": text}})

    def _lost(self, code: int, was_ready: bool) -> None:
        """The driver ended unasked: keep what it held for the next one (a photo that keeps killing drivers fails)."""
        limit = self.options.max_attempts
        with self._lock:
            self._ready = False
            self._states = []
            if was_ready:
                self._condition = "lost the Ray cluster; reconnecting"
            waiting = {submission.batch_id for submission in self._resend}
            requeue = [sub for sub in self._in_flight.values() if sub.batch_id not in waiting]
            given_up = []
            for submission in requeue:
                self._resent[submission.batch_id] = self._resent.get(submission.batch_id, 0) + 1
                if self._resent[submission.batch_id] >= limit:
                    given_up.append(submission)
                else:
                    self._resend.append(submission)
        for submission in given_up:
            reason = f"the Ray driver ended {limit} times with it in flight"
            self._finish(submission.batch_id, [WorkerLost(reason)] * len(submission.requests), "ray")
        if was_ready:
            log.error("lost the Ray cluster; photos in flight will be sent again, reconnecting",
                      extra={"fields": {"address": self.address, "in_flight": len(requeue),
                                        "driver_exit": code, "driver_log": DRIVER_LOG}})
