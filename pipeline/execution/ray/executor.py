"""The Ray executor: photos rendered by Ray actors, on this machine or a cluster (``executor: {kind: ray}``).

This is the coordinator's side, and it never imports Ray: Ray runs in a driver
process of its own (:mod:`pipeline.execution.ray.driver`), which this class starts, feeds
and, when it dies, starts again. So a cluster that cannot be reached at start, or
is lost while running, costs the daemon nothing but time:

- it says so in one log line and in :meth:`condition` (``systemctl status``), and
  offers no free slots, so photos stay paths in the queue;
- it starts a new driver with back-off until the cluster answers again;
- photos that were in flight are handed to the new driver's workers, not
  reported lost: the cluster going away is not their fault. Only a worker that
  dies under a photo reports :class:`~pipeline.execution.local.WorkerLost`, which the
  dispatcher counts towards ``max_attempts``.

A driver that is alive but no longer connected to anything (a head restarted
while it waited: Ray reconnects it to a new cluster that knows none of its
actors) is found by its heartbeat, a round trip through the cluster every 2 s
(:mod:`pipeline.execution.ray.driver`): the driver says it is lost and exits, and one
whose heartbeats stop for ``HEARTBEAT_STALL_SECONDS`` is killed. Either way a
new driver takes its photos, and :meth:`healthy` (which gates the systemd
watchdog) stays true only while photos can run or the executor is visibly
reconnecting. A cluster that refuses this machine's Ray token is one log line
and a condition naming the token file, and is retried with back-off (the token
file may be fixed meanwhile).

At most ``workers × max_in_flight`` submissions are out at once (:meth:`free_slots`).
"""

from __future__ import annotations

import logging
import os
import signal
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
from pipeline.execution.protocol import Completion, Executor, Submission, WorkerLost, WorkerState
from pipeline.execution.ray.driver import HEARTBEAT_SECONDS, DriverSettings, probe
from pipeline.execution.ray.worker import WorkerSpec, pack_worker_spec
from pipeline.execution.worker import batch_size

log = logging.getLogger("photostyle.executor")

START_TIMEOUT = 300.0  # the first connection and the workers' model loading, before the daemon says READY
RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0
DRIVER_LOG = "ray-driver.log"
DRIVER_LOG_MAX_BYTES = 10_000_000  # then it becomes ray-driver.log.1
DRIVER_COMMAND = [sys.executable, "-m", "pipeline.execution.ray.driver"]  # then the socket's file descriptor
HEARTBEAT_STALL_SECONDS = 45.0  # a ready driver with no heartbeat for this long is killed and replaced
CONNECT_STALL_SECONDS = 180.0  # a connecting driver that said nothing for this long is killed and replaced
SUPERVISOR_STALL_SECONDS = 30.0  # healthy() is false when the supervisor thread has not run for this long
HEARTBEAT_FRESH_SECONDS = 3 * HEARTBEAT_SECONDS  # a driver that ends unexplained with a heartbeat this recent


class ClusterUnavailable(PhotostyleError):
    """``process`` could not reach the Ray cluster (the daemon waits instead)."""


class RayExecutor(Executor):
    """Ray actors behind the :class:`~pipeline.execution.local.Executor` interface; see the module docstring."""

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
        self._resent: dict[str, int] = {}  # how many drivers ended unexplained with each submission in flight
        self._suspects: set[str] = set()  # in flight when a driver ended unexplained: counted if the cluster was up
        self._cluster: str | None = None  # the last ready driver's cluster id (a restarted head makes a new one)
        self._done: list[Completion] = []
        self._states: list[WorkerState] = []
        self._condition: str | None = "connecting to the Ray cluster"
        self._fatal: PhotostyleError | None = None
        self._started = threading.Event()  # the first driver is ready, fatal, or cannot reach the cluster
        self._unreachable_said = False
        self._unreachable: str | None = None
        self._refused: str | None = None  # the cluster refused this machine's token: why, naming the token file
        self._refused_said: str | None = None
        self._beat_at = time.monotonic()  # the driver's last heartbeat (or when it got ready)
        self._tick = time.monotonic()  # the supervisor thread's last sign of life

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
            refused, reason = self._refused, self._unreachable or "its workers are not ready"
            self.shutdown(time.monotonic())
            if refused is not None:
                raise ClusterUnavailable(f"cannot use the Ray cluster at {self.address}: {refused}")
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

    def healthy(self) -> bool:
        """Whether photos can run, or the executor is visibly reconnecting (see the module docstring).

        False when the supervisor thread is gone or has not run for
        ``SUPERVISOR_STALL_SECONDS``, and when a ready driver's heartbeat has been
        missing for longer than the supervisor takes to replace it: the daemon
        then stops pinging the systemd watchdog, and systemd restarts it.
        """
        supervisor = self._supervisor
        if self._fatal is not None:
            return False
        if supervisor is None:
            return True  # not started yet
        if not supervisor.is_alive():
            return self._closing.is_set()
        now = time.monotonic()
        if now - self._tick > SUPERVISOR_STALL_SECONDS:
            return False
        with self._lock:
            return not self._ready or now - self._beat_at <= HEARTBEAT_STALL_SECONDS + SUPERVISOR_STALL_SECONDS

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
                [*DRIVER_COMMAND, str(theirs.fileno())],
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
            self._tick = time.monotonic()
            self._spawn()
            was_ready, cause = self._serve()
            assert self._process is not None
            code = self._process.wait()
            self._tick = time.monotonic()
            with self._send_lock:
                self._conn = None
            if self._closing.is_set() or self._fatal is not None:
                break
            if not self._started.is_set():  # it never said a word: a broken install, not a cluster problem
                self._fatal = PhotostyleError(f"the Ray driver exited with status {code} before its workers were "
                                              f"ready; see {DRIVER_LOG} in the state folder")
                break
            self._lost(code, was_ready, cause)
            if was_ready:
                delay = RETRY_SECONDS
            self._back_off(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)
        self._started.set()

    def _back_off(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._closing.is_set() and (left := end - time.monotonic()) > 0:
            self._closing.wait(min(1.0, left))
            self._tick = time.monotonic()

    def _kill_driver(self) -> None:
        """SIGKILL the driver and whatever it started in its session (a private runtime's processes)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)  # start_new_session: its process group is its pid
        except OSError:
            process.kill()

    def _stalled(self, was_ready: bool, heard: float) -> str | None:
        """Why the running driver is to be replaced now (None: it is not)."""
        if self._closing.is_set():
            return None
        now = time.monotonic()
        if was_ready:
            with self._lock:
                quiet = now - self._beat_at
            if quiet > HEARTBEAT_STALL_SECONDS:
                return f"no heartbeat from the Ray driver for {quiet:.0f} s"
        elif now - heard > CONNECT_STALL_SECONDS:
            return f"the Ray driver said nothing for {now - heard:.0f} s while connecting"
        return None

    def _serve(self) -> tuple[bool, str | None]:
        """Handle the driver's messages until it exits: whether it got ready, and why it ended if the cluster
        (not the driver) is to blame; a driver whose heartbeat stops is killed here."""
        conn = self._conn
        assert conn is not None
        was_ready, cause = False, None
        heard = time.monotonic()
        while True:
            self._tick = time.monotonic()
            try:
                if not conn.poll(1.0):
                    stalled = self._stalled(was_ready, heard) if cause is None else None
                    if stalled is not None:
                        cause = stalled
                        log.error("the Ray driver stopped answering; starting a new one", extra={"fields": {
                            "address": self.address, "reason": stalled, "driver_log": DRIVER_LOG}})
                        self._kill_driver()
                    continue
                message = conn.recv()
            except (EOFError, OSError):
                return was_ready, cause
            heard = time.monotonic()
            kind = message[0]
            if kind == "alive":
                with self._lock:
                    self._beat_at = heard
            elif kind == "lost":
                cause = message[1]
                self._kill_driver()  # it is exiting anyway; its actors end with it
            elif kind == "refused":
                self._on_refused(message[1])
            elif kind == "done":
                self._finish(message[1], message[2], message[3])
            elif kind == "workers":
                with self._lock:
                    self._states = [WorkerState(**state) for state in message[1]]
            elif kind == "ready":
                was_ready = True
                with self._lock:
                    self._beat_at = heard
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
            self._refused = self._refused_said = None
            resend, self._resend = self._resend, []
            given_up, suspects, self._suspects = [], self._suspects, set()
            cluster, self._cluster = self._cluster, summary.get("cluster")
            if cluster is not None and cluster != self._cluster:
                suspects = set()  # a new cluster: the one the last driver ended with was lost
            for submission in list(resend):  # the cluster stayed up: the driver's end counts against its photos
                if submission.batch_id in suspects:
                    self._resent[submission.batch_id] = self._resent.get(submission.batch_id, 0) + 1
                    if self._resent[submission.batch_id] >= self.options.max_attempts:
                        given_up.append(submission)
                        resend.remove(submission)
        log.info("connected to the Ray cluster", extra={"fields": {
            "address": self.address, "nodes": summary["nodes"], "workers": summary["workers"],
            "gpus_per_worker": f"{summary['gpus_per_worker']:g}", "cpus_per_worker": summary["cpus_per_worker"]}})
        for submission in given_up:
            limit = self.options.max_attempts
            reason = f"the Ray driver ended {limit} time{'' if limit == 1 else 's'} with it in flight"
            self._finish(submission.batch_id, [WorkerLost(reason)] * len(submission.requests), "ray")
        for submission in resend:
            self._send("submit", submission.batch_id, submission.requests)
        self._started.set()
        self._changed.set()
        self.wake.set()

    def _on_unreachable(self, reason: str) -> None:
        with self._lock:
            self._condition = f"waiting for the Ray cluster ({reason})"
            self._unreachable = reason
            self._suspects.clear()  # the cluster was down: the driver's end was not its photos' doing
            said, self._unreachable_said = self._unreachable_said, True
        if not said and self.wait_for_cluster:  # one line, not one per retry ('process' stops with it instead)
            log.error("cannot reach the Ray cluster; photos wait in the queue, retrying with back-off",
                      extra={"fields": {"address": self.address, "reason": reason}})
        self._started.set()

    def _on_refused(self, reason: str) -> None:
        """The cluster refused this machine's Ray token: one line (again only if the reason changes)."""
        with self._lock:
            self._condition = f"waiting for the Ray cluster to accept this daemon: {reason}"
            self._refused = reason
            said, self._refused_said = self._refused_said, reason
            self._suspects.clear()
        if said != reason and self.wait_for_cluster:
            log.error("the Ray cluster refused this daemon's authentication token; photos wait in the queue, "
                      "retrying with back-off", extra={"fields": {"address": self.address, "reason": reason}})
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

    def _cluster_to_blame(self, cause: str | None) -> str | None:
        """Why a driver that ended unasked ended through no fault of its photos (None: unexplained).

        It said the cluster was lost, or was killed for a missing heartbeat; or its
        last heartbeat is old, or the cluster's address does not answer now.
        """
        if cause is not None:
            return cause
        with self._lock:
            quiet = time.monotonic() - self._beat_at
        if quiet > HEARTBEAT_FRESH_SECONDS:
            return f"no heartbeat for {quiet:.0f} s before the Ray driver ended"
        address = self.options.address
        return None if address in (None, "auto") else probe(address)  # "auto" would import Ray here

    def _lost(self, code: int, was_ready: bool, cause: str | None = None) -> None:
        """The driver ended unasked: keep what it held for the next one.

        A lost cluster costs its photos nothing. A driver that ended unexplained
        while the cluster seemed up makes its photos suspects: each counts an
        attempt only if the next driver connects without finding the cluster down
        first (a head being stopped ends its drivers a moment before its GCS goes),
        so a photo that keeps killing drivers still fails at ``max_attempts``.
        """
        cause = self._cluster_to_blame(cause) if was_ready else cause
        with self._lock:
            self._ready = False
            self._states = []
            if was_ready:
                self._condition = "lost the Ray cluster; reconnecting"
            waiting = {submission.batch_id for submission in self._resend}
            requeue = [sub for sub in self._in_flight.values() if sub.batch_id not in waiting]
            self._resend.extend(requeue)
            if cause is None:
                self._suspects.update(submission.batch_id for submission in requeue)
            else:
                self._suspects.clear()
        if was_ready:
            log.error("lost the Ray cluster; photos in flight will be sent again, reconnecting",
                      extra={"fields": {"address": self.address, "in_flight": len(requeue), "driver_exit": code,
                                        "reason": cause or "the Ray driver ended", "driver_log": DRIVER_LOG}})
