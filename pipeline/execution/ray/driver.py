"""The Ray driver: a child process of the coordinator that holds the Ray connection and the actors.

Why a process of its own: ``ray.init`` blocks for minutes when the cluster cannot
be reached, a Ray driver terminates itself when it loses the cluster (its GCS),
and Ray installs signal handlers of its own. In a child process none of that
reaches the daemon: it keeps its queue, its signals and its systemd pings, and
starts a new driver to reconnect (:mod:`pipeline.execution.ray.executor`).

The coordinator and the driver exchange pickled tuples over a socket pair
(:mod:`multiprocessing.connection`):

- coordinator to driver: ``("submit", batch_id, requests)``, ``("reload", spec)``,
  ``("abandon",)``, ``("shutdown",)``, after a first :class:`DriverSettings`;
- driver to coordinator: ``("unreachable", reason)``, ``("refused", reason)``,
  ``("note", text)``, ``("fatal", error)``, ``("ready", summary)``, ``("alive",)``,
  ``("lost", reason)``, ``("done", batch_id, outcomes, worker)``, ``("workers", [state, ...])``.

The heartbeat: once connected, the driver asks the cluster every
``HEARTBEAT_SECONDS`` which nodes are alive (a round trip to the head's GCS)
and says ``("alive",)`` when its own node is among them. A driver whose node is
no longer a member (the head was restarted: Ray's client quietly reconnects to
the new GCS, whose cluster knows neither this driver nor its actors) or whose
cluster has not answered for ``LOST_SECONDS`` says ``("lost", reason)`` and
exits; the coordinator starts a new one, and kills one whose heartbeats stop
(:mod:`pipeline.execution.ray.executor`).

The driver picks the worker for each submission (the least loaded, a healthy one
first), so a batch of one preset goes to one actor; the coordinator keeps at most
``workers × max_in_flight`` submissions here. A render call that fails because
its actor died comes back as :class:`~pipeline.execution.local.WorkerLost` for each
photo, and the actor is restarted by Ray, or replaced when it is gone for good.
That is reported only once the cluster has answered after the death (and, when
the worker's node is gone too, still answers ``NODE_CONFIRM_SECONDS`` later):
when the whole cluster goes away (a head stopped or restarted), its actors die
first, and a lost cluster must cost no photo an attempt. Those photos stay with
the coordinator, which sends them to the next driver.

An ``InvalidAuthToken`` answer (a token file that is not the cluster's) is one
``("refused", reason)`` naming where the token came from; the driver then
exits, so the next one reads the token afresh.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from pipeline.errors import Cancelled, ConfigError, PhotostyleError
from pipeline.execution.protocol import WorkerLost
from pipeline.job.runner import JobRequest, Rendered
from pipeline.execution.ray.worker import RenderWorker, WorkerSpec

NAMESPACE = "photostyle"
CONTROL = "control"  # the actors' concurrency group for describe/progress/stop, answered while rendering
STATUS_SECONDS = 0.5
START_NOTE_SECONDS = 30.0
MAX_RETRY_SECONDS = 60.0
PROBE_TIMEOUT = 5.0
EXIT_GRACE_SECONDS = 15.0
HEARTBEAT_SECONDS = 2.0  # how often the driver asks the cluster whether its node is still a live member
LOST_SECONDS = 20.0  # no answer from the cluster for this long: it is lost, and the driver ends
CONFIRM_SECONDS = 0.5  # a worker's death is blamed on its photo only if the cluster answers this much later...
NODE_CONFIRM_SECONDS = 10.0  # ...or, when the worker's node is gone as well, still answers this much later
EXIT_LOST = 75  # the driver's exit status after ("lost", reason) or ("refused", reason)
ROUND_TRIP_SECONDS = 5.0  # one heartbeat's wait for the GCS
NODE_ALIVE = 0  # GcsNodeInfo.ALIVE
MAX_REDISPATCH = 5  # a call that keeps failing without ever running is blamed after all
RAY_MISSING = "install the extra: pip install -e '.[ray]'"


@dataclass
class DriverSettings:
    """What the coordinator tells a new driver: the executor options, the worker spec, whose actors these are."""

    options: dict[str, Any]
    spec: WorkerSpec
    owner: str  # names the actors: photostyle-<owner>-ray-<n>
    device: str  # the config's device: "cpu" keeps workers off GPUs
    config_path: str


@dataclass
class Batch:
    """One submission: photos of one preset, rendered by one call on one actor."""

    batch_id: str
    requests: list[JobRequest]
    ref: Any = None
    orphaned: bool = False  # queued behind a photo that killed its actor: it never started
    redispatched: int = 0


@dataclass
class Slot:
    """One worker (actor) as the driver tracks it."""

    index: int
    actor: Any
    node: str = "?"
    device: str = "?"
    pid: int | None = None
    healthy: bool = False
    in_flight: dict[str, Batch] = field(default_factory=dict)  # in the order the calls were made
    running: dict[str, Any] | None = None
    done: int = 0
    failed: int = 0
    last_error: str | None = None
    progress_ref: Any = None
    check_ref: Any = None
    node_id: str | None = None

    @property
    def name(self) -> str:
        return f"ray-{self.index}"

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "device": self.device, "running": self.running,
                "done": self.done, "failed": self.failed, "last_error": self.last_error}


def brief(error: BaseException) -> str:
    """One line: the exception's first line, without Ray's paragraphs."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def probe(address: str | None) -> str | None:
    """Why the cluster at ``address`` cannot be reached (None: try ``ray.init``), without blocking for minutes."""
    if address is None:
        return None  # a private runtime: nothing to reach
    if address == "auto":
        try:
            from ray._private.services import get_ray_address_from_environment

            address = get_ray_address_from_environment("auto", None)
        except ConnectionError as exc:
            return brief(exc)
        except Exception:
            return None  # Ray's internals moved: let ray.init find it
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT):
            return None
    except (OSError, ValueError) as exc:
        return f"{host}:{port}: {getattr(exc, 'strerror', None) or exc}"


class Driver:
    """Connects, starts the actors, and serves the coordinator's commands (see the module docstring)."""

    def __init__(self, conn: Connection, settings: DriverSettings) -> None:
        import ray

        self.ray = ray
        self.conn = conn
        self.settings = settings
        self.options = settings.options
        self.spec = settings.spec
        self.version = 0
        self.spec_ref: Any = None
        self.spec_refs: list[Any] = []
        self.slots: list[Slot] = []
        self.backlog: deque[Batch] = deque()  # waiting for a healthy worker
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()
        self.stopping = threading.Event()
        self.connected = False
        self.abandoned = False
        self.gpus = 0.0
        self._sent_states: list[dict[str, Any]] | None = None
        self.node_id: str | None = None  # this driver's Ray node, which the heartbeat looks for
        self.beat_lock = threading.Condition()
        self.beat: tuple[float, set[str]] | None = None  # when the last answered heartbeat started, live nodes
        self.lost: str | None = None
        self.poke = threading.Event()  # a heartbeat now, please

    def send(self, *message: Any) -> None:
        with self.send_lock:
            try:
                self.conn.send(message)
            except OSError:
                self.stopping.set()  # the coordinator is gone

    # -- commands from the coordinator ----------------------------------------------------------

    def read_commands(self) -> None:
        """The reader thread: runs each command; the coordinator gone (EOF) means shut down."""
        try:
            while not self.stopping.is_set():
                message = self.conn.recv()
                kind = message[0]
                if kind == "submit":
                    self.submit(message[1], message[2])
                elif kind == "reload":
                    self.reload(message[1])
                elif kind == "abandon":
                    self.abandon()
                elif kind == "shutdown":
                    break
        except (EOFError, OSError):
            pass
        self.stopping.set()
        # The main thread shuts Ray down; if it is stuck (in ray.init, say), leave anyway.
        threading.Timer(EXIT_GRACE_SECONDS, lambda: os._exit(0)).start()

    def reload(self, spec: WorkerSpec) -> None:
        with self.lock:
            self.spec = spec
            self.version += 1
            if self.connected:
                self._put_spec()

    def _put_spec(self) -> None:
        """The spec in the object store; every one stays referenced, as actors restart from their first."""
        self.spec_ref = self.ray.put(self.spec)
        self.spec_refs.append(self.spec_ref)

    def abandon(self) -> None:
        with self.lock:
            self.abandoned = True
            for slot in self.slots:
                slot.actor.stop.options(concurrency_group=CONTROL).remote()
            waiting, self.backlog = list(self.backlog), deque()
        for batch in waiting:  # never started anywhere
            self.send("done", batch.batch_id, [Cancelled("stopped before it started")] * len(batch.requests), "ray")

    def submit(self, batch_id: str, requests: list[JobRequest]) -> None:
        with self.lock:
            self._dispatch(Batch(batch_id, requests))

    def _dispatch(self, batch: Batch) -> None:
        """Hand a batch to the least loaded healthy worker, or keep it until one is healthy (lock held).

        Never to a worker known to be dead or restarting: a call there fails, and a
        photo must not be blamed for a worker it never reached.
        """
        healthy = [slot for slot in self.slots if slot.healthy]
        if not healthy:
            self.backlog.append(batch)
            return
        slot = min(healthy, key=lambda slot: (len(slot.in_flight), slot.index))
        batch.ref = slot.actor.render.remote(self.version, [self.spec_ref], batch.requests)
        slot.in_flight[batch.batch_id] = batch
        if self.abandoned:
            slot.actor.stop.options(concurrency_group=CONTROL).remote()
        threading.Thread(target=self._await, args=(slot, batch), daemon=True).start()

    def _flush_backlog(self) -> None:
        with self.lock:
            while self.backlog and any(slot.healthy for slot in self.slots):
                self._dispatch(self.backlog.popleft())

    def _await(self, slot: Slot, batch: Batch) -> None:
        """Wait for one render call. If its actor died, only the photos it was rendering are lost.

        An actor runs its calls one at a time in the order they were made, so the
        oldest call still out on it is the one that was running; the calls queued
        behind it never started, and go to another worker without counting
        against their photos' ``max_attempts``.
        """
        count = len(batch.requests)
        try:
            outcomes = self.ray.get(batch.ref)
        except Exception as exc:  # RayActorError (killed, node lost, restarting), or a system error
            failed_at = time.monotonic()
            with self.lock:
                was_running = next(iter(slot.in_flight), None) == batch.batch_id and not batch.orphaned
                del slot.in_flight[batch.batch_id]
                slot.healthy = False  # checked, and replaced if gone for good, by the status loop
                if not was_running and batch.redispatched < MAX_REDISPATCH:
                    batch.redispatched += 1
                    batch.orphaned = False
                    self._dispatch(batch)
                    return
                for other in slot.in_flight.values():
                    other.orphaned = True
                node_id = slot.node_id
            if not self._worker_to_blame(failed_at, node_id):
                return  # the cluster is lost: this driver ends, and the coordinator sends the photos again
            reason = f"{slot.name} on {slot.node} died with the photo in flight ({brief(exc)})"
            with self.lock:
                slot.failed += count
                slot.last_error = reason
            self.send("done", batch.batch_id, [WorkerLost(reason)] * count, slot.name)
            self.send_states()
            return
        with self.lock:
            slot.in_flight.pop(batch.batch_id, None)
            for outcome in outcomes:
                if isinstance(outcome, Rendered):
                    slot.done += 1
                elif not isinstance(outcome, Cancelled):
                    slot.failed += 1
                    slot.last_error = " ".join(str(outcome).split())
        self.send("done", batch.batch_id, outcomes, slot.name)
        self.send_states()

    # -- the heartbeat -------------------------------------------------------------------------------

    def _round_trip(self) -> tuple[str, Any]:
        """Ask the cluster which nodes are alive: ("ok", ids), ("gone", reason) or ("error", reason).

        Through the driver's own GCS client, whose errors are exceptions (``ray.nodes()``
        aborts the process on a restarted GCS) and which takes a timeout; Ray Client
        has none, and asks ``ray.nodes()``.
        """
        try:
            gcs = self._gcs_client()
            if gcs is not None:
                info = gcs.get_all_node_info(timeout=ROUND_TRIP_SECONDS)
                alive = {node_id.hex() for node_id, node in info.items() if node.state == NODE_ALIVE}
            else:
                alive = {str(node.get("NodeID")) for node in self.ray.nodes() if node.get("Alive")}
        except Exception as exc:
            if "WrongClusterID" in str(exc):
                return "gone", ("the Ray head was restarted: its cluster is a new one, which knows neither this "
                                "driver nor its workers")
            return "error", brief(exc)
        if self.node_id is not None and self.node_id not in alive:
            return "gone", ("this driver's Ray node is no longer a live member of the cluster (was the head "
                            "restarted?)")
        return "ok", alive

    def _gcs_client(self) -> Any:
        if str(self.options.get("address") or "").startswith("ray://"):
            return None
        try:
            return self.ray._private.worker.global_worker.gcs_client
        except Exception:  # Ray's internals moved
            return None

    def cluster_id(self) -> str | None:
        """The cluster's identity, new at each head start (None when Ray does not say)."""
        try:
            return str(self._gcs_client().cluster_id.hex())
        except Exception:
            return None

    def heartbeat(self) -> None:
        """The heartbeat thread (see the module docstring); it ends the driver when the cluster is lost.

        Each round trip runs in a thread of its own, so one that blocks (Ray's
        client retries a GCS that is down) is waited for here with a deadline.
        """
        answered = time.monotonic()
        while not self.stopping.is_set():
            started = time.monotonic()
            answer: list[tuple[str, Any]] = []
            call = threading.Thread(target=lambda: answer.append(self._round_trip()), name="round-trip", daemon=True)
            call.start()
            while call.is_alive() and not self.stopping.is_set():
                call.join(0.25)
                if call.is_alive() and time.monotonic() - answered > LOST_SECONDS:
                    self._cluster_lost(f"the Ray cluster has not answered for {LOST_SECONDS:g} s")
                    return
            if self.stopping.is_set():
                return
            kind, detail = answer[0] if answer else ("error", "no answer")
            if kind == "gone":
                self._cluster_lost(detail)
                return
            if kind == "ok":
                answered = time.monotonic()
                with self.beat_lock:
                    self.beat = (started, detail)
                    self.beat_lock.notify_all()
                self.send("alive")
            elif time.monotonic() - answered > LOST_SECONDS:
                self._cluster_lost(f"the Ray cluster has not answered for {LOST_SECONDS:g} s ({detail})")
                return
            self.poke.wait(max(0.0, HEARTBEAT_SECONDS - (time.monotonic() - started)))
            self.poke.clear()

    def _cluster_lost(self, reason: str) -> None:
        """Say why, and end this driver at once: its actors end with it, the coordinator starts another."""
        with self.beat_lock:
            self.lost = reason
            self.beat_lock.notify_all()
        self.send("lost", reason)
        sys.stderr.write(f"photostyle: the Ray cluster is lost: {reason}\n")
        sys.stderr.flush()
        os._exit(EXIT_LOST)  # not ray.shutdown(): it can block for a minute on a GCS that is gone

    def _answer_after(self, moment: float) -> set[str] | None:
        """The live nodes from the first heartbeat started at ``moment`` or later; None if the cluster is lost."""
        self.stopping.wait(max(0.0, moment - time.monotonic()))
        self.poke.set()
        with self.beat_lock:
            while self.lost is None and not self.stopping.is_set():
                if self.beat is not None and self.beat[0] >= moment:
                    return self.beat[1]
                self.beat_lock.wait(1.0)
                self.poke.set()
        return None

    def _worker_to_blame(self, failed_at: float, node_id: str | None) -> bool:
        """Whether a worker that died under a photo died alone (blame the photo), not with the cluster.

        Yes once the cluster answers after the death with the worker's node alive,
        or, when that node is gone, still answers ``NODE_CONFIRM_SECONDS`` later (a
        node lost in a running cluster). No when the cluster is lost meanwhile: a
        head being stopped kills its actors a moment before the cluster goes.
        """
        alive = self._answer_after(failed_at + CONFIRM_SECONDS)
        if alive is None:
            return False
        if node_id is None or node_id in alive:
            return True
        return self._answer_after(failed_at + NODE_CONFIRM_SECONDS) is not None

    # -- connecting and starting the workers ------------------------------------------------------

    def connect(self) -> bool:
        """``ray.init`` once the cluster answers; says why not, and retries with back-off, until it does."""
        address = self.options.get("address")
        delay = 1.0
        while not self.stopping.is_set():
            problem = probe(address)
            if problem is None:
                try:
                    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False,
                                              "logging_level": logging.WARNING}
                    if address is None:  # a private runtime for this process, whatever else runs here
                        kwargs.update(address="local", include_dashboard=False)
                    else:
                        kwargs.update(address=address)
                    self.ray.init(**kwargs)
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # Ray's handler would exit: the coordinator decides
                    self.connected = True
                    try:
                        self.node_id = self.ray.get_runtime_context().get_node_id()
                    except Exception:
                        self.node_id = None  # Ray Client: the heartbeat checks only that the cluster answers
                    threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True).start()
                    return True
                except Exception as exc:
                    if auth_refused(exc):
                        self.send("refused", auth_problem())
                        return False  # the main thread exits: a new driver reads the token afresh
                    problem = brief(exc)
            self.send("unreachable", problem)
            self.stopping.wait(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)
        return False

    def _sizes(self) -> tuple[int, float, int]:
        """How many workers, with how many GPUs and CPUs each (``auto``s resolved against the cluster)."""
        resources = self.ray.cluster_resources()
        cluster_gpus, cluster_cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
        cpus = int(self.options["cpus_per_worker"])
        gpus = self.options.get("gpus_per_worker")
        if gpus is None:
            gpus = 1.0 if cluster_gpus >= 1 and self.settings.device != "cpu" else 0.0
        workers = self.options["workers"]
        if workers == "auto":
            workers = int(cluster_gpus // gpus) if gpus > 0 else int(cluster_cpus // cpus)
        return max(1, int(workers)), float(gpus), cpus

    def _new_actor(self, index: int) -> Any:
        remote = self.ray.remote(concurrency_groups={CONTROL: 4})(RenderWorker)
        return remote.options(
            name=f"photostyle-{self.settings.owner}-ray-{index}", namespace=NAMESPACE,
            num_cpus=self._cpus, num_gpus=self.gpus,
            max_restarts=-1, max_task_retries=0,  # restarted when it dies; its photos are requeued by us, not retried
        ).remote(self.spec_ref, self.version, self._cpus)

    def _describe(self, slot: Slot, info: dict[str, Any]) -> None:
        slot.node, slot.device, slot.pid = info["node"], info["device"], info["pid"]
        slot.node_id = info.get("node_id") or None
        slot.healthy = info["error"] is None
        if info["error"] is not None:
            slot.last_error = " ".join(str(info["error"]).split())

    def start_workers(self) -> bool:
        """Create the actors and wait until each has loaded the network; a setup error is fatal."""
        count, self.gpus, self._cpus = self._sizes()
        with self.lock:
            self._put_spec()
            self.slots = [Slot(index, self._new_actor(index)) for index in range(count)]
        pending = {slot.actor.describe.options(concurrency_group=CONTROL).remote(): slot for slot in self.slots}
        began, noted = time.monotonic(), False
        while pending and not self.stopping.is_set():
            ready, _ = self.ray.wait(list(pending), num_returns=len(pending), timeout=1.0)
            for ref in ready:
                slot = pending.pop(ref)
                try:
                    info = self.ray.get(ref)
                except Exception as exc:
                    self.send("fatal", PhotostyleError(f"a Ray worker could not start: {brief(exc)}"))
                    return False
                if info["error"] is not None:
                    self.send("fatal", info["error"])
                    return False
                self._describe(slot, info)
            if pending and not noted and time.monotonic() - began > START_NOTE_SECONDS:
                noted = True
                self.send("note", f"{len(pending)} of {count} Ray workers are still starting (each needs "
                                  f"{self._cpus} CPU and {self.gpus:g} GPU; is the cluster big enough?)")
        if self.stopping.is_set():
            return False
        resources = self.ray.cluster_resources()
        self.send("ready", {"workers": count, "gpus_per_worker": self.gpus, "cpus_per_worker": self._cpus,
                            "cluster": self.cluster_id(),
                            "nodes": len([node for node in self.ray.nodes() if node.get("Alive")]),
                            "cluster_cpus": resources.get("CPU", 0.0), "cluster_gpus": resources.get("GPU", 0.0),
                            "workers_state": [slot.state() for slot in self.slots]})
        return True

    # -- watching the workers ----------------------------------------------------------------------

    def send_states(self) -> None:
        with self.lock:
            states = [slot.state() for slot in self.slots]
        if states != self._sent_states:
            self._sent_states = states
            self.send("workers", states)

    def _poll(self) -> None:
        """Ask each worker for its running photo's progress, and check on those whose call failed."""
        ray = self.ray
        with self.lock:
            for slot in self.slots:
                if slot.healthy and slot.progress_ref is None:
                    slot.progress_ref = slot.actor.progress.options(concurrency_group=CONTROL).remote()
                if not slot.healthy and slot.check_ref is None:
                    slot.check_ref = slot.actor.describe.options(concurrency_group=CONTROL).remote()
            refs = [ref for slot in self.slots for ref in (slot.progress_ref, slot.check_ref) if ref is not None]
        if not refs:
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=STATUS_SECONDS)
        done = set(ready)
        for slot in list(self.slots):
            if slot.progress_ref in done:
                ref, slot.progress_ref = slot.progress_ref, None
                try:
                    running = ray.get(ref)
                except Exception:
                    running = None
                    slot.healthy = False
                with self.lock:
                    slot.running = running
            if slot.check_ref in done:
                ref, slot.check_ref = slot.check_ref, None
                try:
                    info = ray.get(ref)
                except self.ray.exceptions.ActorDiedError:  # killed for good (ray.kill): a new one takes its place
                    self._replace(slot)
                except Exception:
                    pass  # restarting, or unreachable for now: asked again next time
                else:
                    with self.lock:
                        self._describe(slot, info)
                        slot.running = None

    def _replace(self, slot: Slot) -> None:
        with self.lock:
            try:
                slot.actor = self._new_actor(slot.index)
            except ValueError:  # the dead actor's name not yet released: try again next time
                return
            slot.running = None
            slot.last_error = f"{slot.name} was gone for good; started a new one"

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                self._poll()
            except Exception as exc:  # never let status polling take the driver down
                self.send("note", f"Ray worker status unavailable: {brief(exc)}")
                self.stopping.wait(5.0)
            self._flush_backlog()
            self.send_states()
            self.stopping.wait(STATUS_SECONDS)

    def run(self) -> None:
        threading.Thread(target=self.read_commands, name="commands", daemon=True).start()
        try:
            if self.connect() and self.start_workers():
                self.serve()
        finally:
            if self.connected:
                try:
                    self.ray.shutdown()  # the actors belong to this driver: they end with it
                except Exception:
                    pass


def auth_refused(error: BaseException) -> bool:
    """Whether ``ray.init`` failed because the cluster refused this process's token (InvalidAuthToken).

    Ray wraps the cause in a ConnectionError whose cause holds the traceback as
    text, so the whole chain is searched by type name and by Ray's status word.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def token_source() -> str:
    """Where Ray takes this process's token from, as a user would fix it."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the RAY_AUTH_TOKEN environment variable"
    configured = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = os.path.expanduser(configured) if configured else os.path.join(os.path.expanduser("~"), ".ray",
                                                                          "auth_token")
    where = f"{path} (RAY_AUTH_TOKEN_PATH)" if configured else path
    return f"the token file {where}" + ("" if os.path.isfile(path) else ", which does not exist")


def auth_problem() -> str:
    """One line for a refused token, naming where the token came from and what to do."""
    try:
        from ray._raylet import AuthenticationMode, get_authentication_mode

        sent = get_authentication_mode() == AuthenticationMode.TOKEN
    except Exception:  # Ray's internals moved: say what is known
        sent = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    source = token_source()
    if sent:
        return (f"the Ray cluster refused the authentication token from {source} (InvalidAuthToken): put the "
                f"cluster's token there (`ray get-auth-token` on the head prints it) or point RAY_AUTH_TOKEN_PATH "
                f"at a file holding it")
    return (f"the Ray cluster requires an authentication token and none was sent (InvalidAuthToken; RAY_AUTH_MODE "
            f"is not 'token'): set RAY_AUTH_MODE=token in the daemon's environment, with the cluster's token in "
            f"{source.removeprefix('the ')}")


def ray_missing(error: BaseException, config_path: str) -> ConfigError:
    """The one line a config asking for Ray gets when Ray cannot be imported."""
    return ConfigError([f"{config_path}: executor.kind is ray, but Ray cannot be imported "
                        f"({' '.join(str(error).split())}); {RAY_MISSING}"])


def main(argv: list[str]) -> int:
    """Entry point of the child process: ``python -m pipeline.execution.ray.driver FD``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and SIGTERM are the coordinator's to handle
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # `kill -USR2`: every thread's stack to the driver log
    conn = Connection(int(argv[1]))
    try:
        settings: DriverSettings = conn.recv()
    except (EOFError, OSError):
        return 0
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        conn.send(("fatal", ray_missing(exc, settings.config_path)))
        return 2
    Driver(conn, settings).run()
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    os._exit(code)  # Ray's threads must not keep the process alive
