"""Issue 17 item 8: the Ray driver recovers from a head restart, a lost cluster costs no photo an attempt, a
stalled driver is replaced, and a refused Ray token is one line naming the token file.

Two kinds of tests:

- The coordinator's side (:class:`~pipeline.execution.ray.executor.RayExecutor`) against a fake driver: a short script
  speaking the driver's protocol, told by the test how each driver generation behaves (stalls, says the cluster
  is lost, crashes, finds it unreachable, serves). No Ray needed; the thresholds are shortened by monkeypatching.
- End to end on a real ``ray start --head --block`` on loopback: private temp dir, ports and ``$HOME`` (so no
  ``~/.ray/auth_token`` of the machine's leaks in), in a process session of its own that teardown kills whole
  (never ``ray stop``, which would stop every Ray on the machine). Skipped without Ray.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, run_cli, write_config
from daemon_support import GATE_PLUGIN, DaemonProcess, drop, files_under, jpeg_bytes, wait_for

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (pip install -e '.[ray]')")


# -- the coordinator against a fake driver ------------------------------------------------------------------

FAKE_DRIVER = r'''
"""A stand-in for pipeline.execution.ray.driver: each generation takes the next behaviour from PLAN."""
import json, os, sys, threading, time
from multiprocessing.connection import Connection

conn = Connection(int(sys.argv[1]))
settings = conn.recv()
plan_path = os.environ["FAKE_DRIVER_PLAN"]
with open(plan_path) as handle:
    plan = json.load(handle)
item, rest = (plan[0], plan[1:]) if plan else ("serve", [])
behaviour, _, cluster = item.partition("@")  # "crash@A": crash, on the cluster whose id is A
with open(plan_path, "w") as handle:
    json.dump(rest, handle)
with open(plan_path + ".log", "a") as handle:
    handle.write(behaviour + "\n")
lock = threading.Lock()


def send(*message):
    with lock:
        conn.send(message)


if behaviour == "unreachable":
    send("unreachable", "127.0.0.1:1: Connection refused")
    os._exit(1)
if behaviour == "refused":
    send("refused", "the Ray cluster refused the authentication token from the token file /x/.ray/auth_token")
    os._exit(75)
state = {"name": "ray-0", "node": "fake", "device": "cpu"}
send("ready", {"workers": 1, "gpus_per_worker": 0.0, "cpus_per_worker": 1, "nodes": 1, "cluster": cluster or None,
              "workers_state": [state]})
beating = threading.Event()
beating.set()


def beat():
    while True:
        if beating.is_set():
            send("alive")
        time.sleep(0.2)


threading.Thread(target=beat, daemon=True).start()
if behaviour == "stall":  # alive for a moment, then nothing at all: a driver stuck for good
    time.sleep(0.6)
    lock.acquire()
    time.sleep(3600)
while True:
    try:
        message = conn.recv()
    except EOFError:
        os._exit(0)
    if message[0] == "shutdown":
        os._exit(0)
    if message[0] != "submit":
        continue
    if behaviour == "lost":
        send("lost", "this driver's Ray node is no longer a live member of the cluster")
        os._exit(75)
    if behaviour == "crash":
        os._exit(1)
    send("done", message[1], ["ok"] * len(message[2]), "ray-0")
'''


@pytest.fixture
def fake_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Start a RayExecutor on fake drivers following ``plan``; yields a starter, shuts every executor down."""
    from pipeline.execution.ray import executor as ray_executor
    from pipeline.app import load_app

    script = tmp_path / "fake_driver.py"
    script.write_text(FAKE_DRIVER)
    monkeypatch.setattr(ray_executor, "DRIVER_COMMAND", [sys.executable, str(script)])
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the fake unpickles DriverSettings
    monkeypatch.setattr(ray_executor, "RETRY_SECONDS", 0.2)
    started: list[Any] = []

    def start(plan: list[str], max_attempts: int = 3) -> Any:
        plan_path = tmp_path / "plan.json"
        plan_path.write_text(json.dumps(plan))
        monkeypatch.setenv("FAKE_DRIVER_PLAN", str(plan_path))
        config = write_config(tmp_path / "p", extra={"executor": {"kind": "ray", "max_attempts": max_attempts}})
        app = load_app(config)
        executor = ray_executor.RayExecutor(app.config.executor, threading.Event())
        started.append(executor)
        executor.start(app)
        return executor

    yield start
    for executor in started:
        executor.shutdown(time.monotonic() + 1.0)


def outcome_of(executor: Any, batch_id: str, timeout: float = 60) -> list[Any]:
    from pipeline.execution.protocol import Submission

    executor.submit(Submission(batch_id, [f"{batch_id}-photo"]))
    [completion] = wait_for(lambda: executor.completions(), timeout, f"the outcome of {batch_id}")
    assert completion.batch_id == batch_id
    return completion.outcomes


def generations(tmp_path: Path) -> list[str]:
    return (tmp_path / "plan.json.log").read_text().split()


def test_a_stalled_driver_is_killed_and_replaced_and_its_photo_costs_no_attempt(
        fake_driver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.execution.ray import executor as ray_executor

    monkeypatch.setattr(ray_executor, "HEARTBEAT_STALL_SECONDS", 2.0)
    executor = fake_driver(["stall", "serve"], max_attempts=1)  # one counted attempt would fail the photo
    assert executor.healthy()
    assert outcome_of(executor, "b1") == ["ok"]
    assert generations(tmp_path) == ["stall", "serve"]
    assert "the Ray driver stopped answering; starting a new one" in caplog.text
    assert executor.healthy()


def test_a_driver_that_cannot_be_replaced_stops_the_watchdog(
        fake_driver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """healthy() gates the systemd watchdog: it goes false once a stalled driver outlives its replacement."""
    from pipeline.execution.ray import executor as ray_executor

    monkeypatch.setattr(ray_executor, "HEARTBEAT_STALL_SECONDS", 1.0)
    monkeypatch.setattr(ray_executor, "SUPERVISOR_STALL_SECONDS", 1.0)
    kill = ray_executor.RayExecutor._kill_driver
    allowed = threading.Event()
    monkeypatch.setattr(ray_executor.RayExecutor, "_kill_driver", lambda self: kill(self) if allowed.is_set() else None)
    executor = fake_driver(["stall"])
    assert executor.healthy()
    wait_for(lambda: not executor.healthy(), 30, "healthy() to turn false")
    allowed.set()
    executor._kill_driver()  # replaced now: healthy again
    wait_for(executor.healthy, 30, "healthy() to turn true again")


def test_while_the_cluster_is_unreachable_the_executor_is_visibly_reconnecting(fake_driver: Any) -> None:
    executor = fake_driver(["unreachable"] * 50)
    assert executor.free_slots() == 0
    assert executor.condition().startswith("waiting for the Ray cluster (127.0.0.1:1: Connection refused")
    time.sleep(2)  # several drivers come and go: still healthy (the watchdog is pinged), nothing fatal
    assert executor.healthy()


def test_a_lost_cluster_costs_no_attempt(fake_driver: Any, tmp_path: Path) -> None:
    executor = fake_driver(["lost", "lost", "serve"], max_attempts=1)
    assert outcome_of(executor, "b1") == ["ok"]
    assert generations(tmp_path) == ["lost", "lost", "serve"]


def test_a_driver_that_ends_unexplained_counts_only_if_the_cluster_was_up(fake_driver: Any, tmp_path: Path) -> None:
    from pipeline.execution.protocol import WorkerLost

    executor = fake_driver(["crash", "unreachable", "serve"], max_attempts=1)
    assert outcome_of(executor, "b1") == ["ok"]  # the next driver found the cluster down: not the photo's doing
    executor.shutdown(time.monotonic() + 1.0)
    executor = fake_driver(["crash", "crash", "serve"], max_attempts=2)
    [outcome] = outcome_of(executor, "b2")
    assert isinstance(outcome, WorkerLost) and "the Ray driver ended 2 times with it in flight" in str(outcome)
    executor.shutdown(time.monotonic() + 1.0)
    # The next driver is on a new cluster (a restarted head), however fast it came back: the old one was lost.
    executor = fake_driver(["crash@A", "serve@B"], max_attempts=1)
    assert outcome_of(executor, "b3") == ["ok"]
    executor.shutdown(time.monotonic() + 1.0)
    executor = fake_driver(["crash@A", "serve@A"], max_attempts=1)
    [outcome] = outcome_of(executor, "b4")
    assert isinstance(outcome, WorkerLost) and "the Ray driver ended 1 time with it in flight" in str(outcome)


def test_a_refused_token_is_one_line_and_the_condition(fake_driver: Any, caplog: pytest.LogCaptureFixture) -> None:
    executor = fake_driver(["refused"] * 50)
    wait_for(lambda: len(generations_of(executor)) >= 3, 30, "three refused drivers")
    lines = [r for r in caplog.records if "refused this daemon's authentication token" in r.getMessage()]
    assert len(lines) == 1
    assert "/x/.ray/auth_token" in executor.condition()
    [worker] = executor.workers()
    assert "/x/.ray/auth_token" in worker.last_error  # what `photostyle status` shows
    assert executor.healthy()


def generations_of(executor: Any) -> list[str]:
    return Path(os.environ["FAKE_DRIVER_PLAN"] + ".log").read_text().split()


def test_auth_failures_are_recognised_through_rays_wrapping() -> None:
    from pipeline.execution.ray.driver import auth_refused

    class AuthenticationError(Exception):
        pass

    try:
        try:
            raise RuntimeError("Failed to connect to GCS. Last connection error: Traceback ...\nray.exceptions."
                               "AuthenticationError: RPC error: InvalidAuthToken: Authentication token is missing")
        except RuntimeError as inner:
            raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379") from inner
    except ConnectionError as wrapped:
        assert auth_refused(wrapped)
    assert auth_refused(AuthenticationError("x"))
    assert not auth_refused(ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379"))


def test_the_token_source_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pipeline.execution.ray.driver import token_source

    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert token_source() == f"the token file {tmp_path}/.ray/auth_token, which does not exist"
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t" * 32)
    assert token_source() == f"the token file {tmp_path}/.ray/auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "elsewhere"))
    assert token_source() == f"the token file {tmp_path}/elsewhere (RAY_AUTH_TOKEN_PATH), which does not exist"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t" * 32)
    assert token_source() == "the RAY_AUTH_TOKEN environment variable"


# -- end to end on a real head ---------------------------------------------------------------------------------



def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def group_members(pgid: int) -> dict[int, str]:
    """Live processes (pid -> name) of a process group."""
    members = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members[int(entry)] = name
    return members


def children_named(parent: int, word: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == parent and word in command:
            found.append(int(entry))
    return found


class Head:
    """``ray start --head --block`` on loopback: private temp dir, ports and HOME, a process session of its own."""

    def __init__(self, folder: Path, env: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.home = folder / "head-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.temp = Path(tempfile.mkdtemp(prefix="psray-", dir="/tmp"))  # short: Ray's socket paths are limited
        self.port = free_port()
        self.ports = [free_port() for _ in range(7)]
        self.env = {**os.environ, "HOME": str(self.home), "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            self.env.pop(name, None)
        self.process: subprocess.Popen[bytes] | None = None
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        out = self.folder / f"head-{time.time_ns()}.log"
        ray = str(Path(sys.executable).parent / "ray")
        node, objects, agent, agent_grpc, runtime_env, metrics, dashboard = self.ports
        command = [ray, "start", "--head", "--block", f"--port={self.port}", "--node-ip-address=127.0.0.1",
                   "--num-cpus=1", "--num-gpus=0", f"--temp-dir={self.temp}", "--include-dashboard=false",
                   "--disable-usage-stats", f"--node-manager-port={node}", f"--object-manager-port={objects}",
                   f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                   f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
                   f"--dashboard-port={dashboard}"]
        with open(out, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        wait_for(lambda: "Ray runtime started" in out.read_text(errors="replace") or self.process.poll() is not None,
                 180, "the Ray head to start")
        assert self.process.poll() is None, out.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """As ``ray stop`` does, but only this head's processes: the raylet, then the others, then the GCS."""
        assert self.process is not None
        pgid = self.process.pid
        for chosen in (lambda name: name == "raylet", lambda name: name not in ("raylet", "gcs_server"),
                       lambda name: name == "gcs_server"):
            pids = [pid for pid, name in group_members(pgid).items() if chosen(name) and pid != pgid]
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and set(pids) & set(group_members(pgid)):
                time.sleep(0.1)
        self.kill()

    def kill(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)
        wait_for(lambda: not group_members(self.process.pid), 30, "every process of the Ray head to end")

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture
def head(tmp_path: Path) -> Iterator[Head]:
    head = Head(tmp_path)
    head.start()
    try:
        yield head
    finally:
        head.close()


def daemon_env(home: Path) -> dict[str, str]:
    """Ray's own defaults (no shortened GCS timeout: the bug hides behind it), a HOME of the test's."""
    home.mkdir(parents=True, exist_ok=True)
    return {"HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "PYTHONPATH": str(REPO)}


def gated_config(root: Path, address: str, gate: Path, **executor: Any) -> Path:
    from daemon_support import daemon_config

    gate.mkdir(parents=True, exist_ok=True)
    (root / "plugins").mkdir(parents=True, exist_ok=True)
    (root / "plugins" / "gate.py").write_text(GATE_PLUGIN.format(gate=str(gate)))
    return daemon_config(root, plugins={"disabled": ["gallery"], "paths": [str(root / "plugins")]},
                         executor={"kind": "ray", "address": address, "workers": 1, "cpus_per_worker": 1,
                                   **executor})


def running_on(root: Path) -> list[str]:
    try:
        workers = json.loads((root / "state" / "status.json").read_text()).get("workers", [])
    except (OSError, ValueError):
        return []
    return [Path(w["running"]["file"]).name for w in workers if w.get("running")]


@needs_ray
@pytest.mark.parametrize("how", ["in ray stop's order", "all at once"])
def test_the_head_restarted_after_a_driver_was_replaced_is_reconnected_and_costs_no_attempt(
        head: Head, tmp_path: Path, how: str) -> None:
    """The item's sequence: the driver replaced (SIGKILL), then the head stopped and started again on the same
    port. Before, a head lost all at once left the new driver connected to nothing for good ("1 waiting" for
    minutes: Ray's client reconnects it to the new GCS, which knows none of its actors), and a head stopped in
    ``ray stop``'s order (the raylet first) counted the running photo as a worker loss."""
    gate = tmp_path / "gate"
    config = gated_config(tmp_path / "p", head.address, gate, max_attempts=2)
    root = config.parent
    drop(root / "inbox" / "gated.jpg", jpeg_bytes(1))
    with DaemonProcess(config, env=daemon_env(tmp_path / "home")) as daemon:
        wait_for(lambda: running_on(root) == ["gated.jpg"], 240, "the gated photo to run")
        [driver] = children_named(daemon.process.pid, "pipeline.execution.ray.driver")
        os.kill(driver, signal.SIGKILL)  # an unexplained end while the cluster is up: one attempt (max 2)
        killed = time.monotonic()
        daemon.wait_msg("connected to the Ray cluster", 240, count=2)
        print(f"\ndriver SIGKILL: reconnected in {time.monotonic() - killed:.1f} s")
        wait_for(lambda: running_on(root) == ["gated.jpg"], 120, "the gated photo to run again")

        head.stop() if how == "in ray stop's order" else head.kill()
        time.sleep(3)  # down for a while (well within Ray's 60 s in which a driver reconnects to a new GCS)
        head.start()
        back = time.monotonic()
        daemon.wait_msg("connected to the Ray cluster", 180, count=3)
        lost = daemon.messages("lost the Ray cluster; photos in flight will be sent again, reconnecting")
        print(f"head stopped {how}: reconnected {time.monotonic() - back:.1f} s after it came back; why the driver "
              f"ended: {lost[-1]['reason']}")
        wait_for(lambda: running_on(root) == ["gated.jpg"], 120, "the gated photo to run on the new cluster")
        (gate / "gated.jpg").touch()
        daemon.wait_msg("done", 120)
        assert daemon.stop() == 0
    assert len(daemon.messages("lost the Ray cluster; photos in flight will be sent again, reconnecting")) == 2
    assert not daemon.messages("worker lost with the photo in flight; queued again")
    assert not (root / "failed").exists() or not files_under(root / "failed")
    assert [p.name for p in files_under(root / "outbox", "*.jpg")] == ["gated.jpg"]
    assert "Traceback" not in daemon.text()


@needs_ray
def test_a_token_the_cluster_refuses_is_one_line_naming_the_file_and_status_shows_it(tmp_path: Path) -> None:
    """A ``~/.ray/auth_token`` that is not the cluster's (another Ray user's): one line and the status name it,
    and once the right token is in place the daemon connects without a restart."""
    head = Head(tmp_path, env={"RAY_AUTH_MODE": "token"})
    (head.home / ".ray").mkdir(parents=True)
    (head.home / ".ray" / "auth_token").write_text("a" * 32)
    head.start()
    try:
        home = tmp_path / "home"
        token = home / ".ray" / "auth_token"
        token.parent.mkdir(parents=True)
        token.write_text("b" * 32)  # someone else's
        config = gated_config(tmp_path / "p", head.address, tmp_path / "gate")
        root = config.parent
        drop(root / "inbox" / "photo.jpg", jpeg_bytes(2))
        # RAY_gcs_server_port_wait_time_s: ray.init retries a refused GCS for 1 s instead of 20 (the same error).
        env = {**daemon_env(home), "RAY_AUTH_MODE": "token", "RAY_gcs_server_port_wait_time_s": "1"}
        with DaemonProcess(config, env=env) as daemon:
            [line] = daemon.wait_msg("the Ray cluster refused this daemon's authentication token; photos wait in "
                                     "the queue, retrying with back-off", 180)
            assert str(token) in line["reason"] and "InvalidAuthToken" in line["reason"]
            shown = wait_for(lambda: str(token) in (out := run_cli("status", "-c", config).stdout) and out, 60,
                             "status to name the token file")
            assert "refused the authentication token" in shown
            print(f"log: {line['msg']} reason={line['reason']}", *shown.splitlines(), sep="\n")
            time.sleep(4)  # more refusals: still one line
            assert len(daemon.messages("the Ray cluster refused this daemon's authentication token; photos wait "
                                       "in the queue, retrying with back-off")) == 1
            assert not daemon.messages("cannot reach the Ray cluster; photos wait in the queue, retrying with "
                                       "back-off")
            token.write_text("a" * 32)  # fixed: the next driver reads it afresh
            daemon.wait_msg("connected to the Ray cluster", 240)
            daemon.wait_msg("done", 120)
            assert daemon.stop() == 0
    finally:
        head.close()
