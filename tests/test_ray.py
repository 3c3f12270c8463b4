"""Scale-out on Ray: the daemon and ``process`` on Ray actors, with the same exactly-once guarantees.

One simulated two-node cluster (``ray.cluster_utils.Cluster`` in a child process)
serves the whole module; daemons join it with ``executor.address``. The pytest
process never becomes a Ray driver: a driver is terminated by Ray when its
cluster goes away, and one test takes the cluster away on purpose. Actors are
killed from a short helper process instead.

Tests that need no cluster (config validation, errors' pickling, shipping a
config to a worker, Ray missing) run whether Ray is installed or not.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, run_cli, synthetic_photo, write_config
from daemon_support import GATE_PLUGIN, DaemonProcess, daemon_config, drop, files_under, jpeg_bytes, wait_for

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (pip install -e '.[ray]')")


def gate_plugin(gate: Path) -> str:
    gate.mkdir(parents=True, exist_ok=True)
    return GATE_PLUGIN.format(gate=str(gate))


def open_gate(gate: Path, *names: str) -> None:
    for name in names:
        (gate / name).touch()


# Photos named poison* kill the worker process that reads them.
POISON_PLUGIN = '''
import os

from pipeline import hookimpl


@hookimpl
def preprocess(image, ctx):
    if ctx.source.name.startswith("poison"):
        os._exit(1)
    return image
'''

CLUSTER_HOST = '''
import signal, sys, time
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "gcs_server_port": int(sys.argv[1]),
                                                        "include_dashboard": False})
cluster.add_node(num_cpus=1)  # a second node: photos travel between nodes through the object store
print("ADDRESS", cluster.address, flush=True)


def stop(*_):
    cluster.shutdown()
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(3600)
'''

KILL_ACTORS = '''
import os, signal, sys
import ray

ray.init(address=sys.argv[1], namespace="photostyle", log_to_driver=False, logging_level="ERROR")
for name, how in zip(sys.argv[2::2], sys.argv[3::2]):
    actor = ray.get_actor(name, namespace="photostyle")
    if how == "ray.kill":
        ray.kill(actor)  # gone for good (no_restart): the driver must replace it
    else:
        pid = ray.get(actor.describe.options(concurrency_group="control").remote())["pid"]
        os.kill(pid, signal.SIGKILL)  # the process dies; Ray restarts the actor
    print("killed", name, how, flush=True)
'''

RAY_ENV = {"RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO),
           "RAY_gcs_rpc_server_reconnect_timeout_s": "5"}  # a driver whose cluster is gone ends within 5 s


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ClusterHost:
    """A two-node Ray cluster in a child process, on a fixed GCS port, that a test may kill and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.address = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.folder / f"cluster-{time.time_ns()}.log"
        with open(out, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-c", CLUSTER_HOST, str(self.port)], stdout=log,
                                            stderr=subprocess.STDOUT, env={**os.environ, **RAY_ENV})
        line = wait_for(lambda: next((x for x in out.read_text().splitlines() if x.startswith("ADDRESS")), None)
                        or self.process.poll() is not None, 180, "the Ray cluster to start")
        assert isinstance(line, str), out.read_text()
        self.address = line.split()[1]

    def kill(self) -> None:
        """The whole cluster lost at once (its processes share the host's fate)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHost]:
    host = ClusterHost(tmp_path_factory.mktemp("ray-cluster"))
    host.start()
    yield host
    host.stop()


def ray_config(folder: Path, cluster: ClusterHost | None, plugin: str | None = None, workers: int = 2,
               watch: dict[str, Any] | None = None, **executor: Any) -> Path:
    """A daemon config rendering on the test cluster with ``workers`` one-CPU actors (and a test plugin)."""
    plugins: dict[str, Any] = {"disabled": ["gallery"]}
    if plugin is not None:
        (folder / "plugins").mkdir(parents=True, exist_ok=True)
        (folder / "plugins" / "test_stage.py").write_text(plugin)
        plugins["paths"] = [str(folder / "plugins")]
    options = {"kind": "ray", "workers": workers, "cpus_per_worker": 1, **executor}
    if cluster is not None:
        options["address"] = cluster.address
    return daemon_config(folder, watch=watch, plugins=plugins, executor=options)


def ledger_rows(root: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(root / "state" / "ledger.sqlite3") as db:
        return [(Path(os.fsdecode(source)).name, state)
                for source, state in db.execute("SELECT source, state FROM jobs ORDER BY created")]


def status_json(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / "state" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def running_on(root: Path) -> dict[str, str]:
    """Worker name -> the file it is rendering now, from the daemon's status file."""
    return {worker["name"]: Path(worker["running"]["file"]).name
            for worker in status_json(root).get("workers", []) if worker.get("running")}


def actor_name(daemon: DaemonProcess, worker: str) -> str:
    return f"photostyle-{socket.gethostname()}-{daemon.process.pid}-{worker}"


def kill_actors(cluster: ClusterHost, *pairs: tuple[str, str]) -> None:
    args = [item for pair in pairs for item in pair]
    done = subprocess.run([sys.executable, "-c", KILL_ACTORS, cluster.address, *args], capture_output=True, text=True,
                          env={**os.environ, **RAY_ENV}, timeout=180)
    assert done.returncode == 0 and done.stdout.count("killed") == len(pairs), done.stderr[-2000:]


def assert_each_done_once(daemon: DaemonProcess, root: Path, names: list[str]) -> None:
    assert sorted(Path(entry["file"]).name for entry in daemon.messages("done")) == sorted(names)
    assert sorted(p.name for p in files_under(root / "outbox", "*.jpg")) == sorted(names)  # no name-1.jpg
    assert sorted(p.name for p in files_under(root / "processed")) == sorted(names)
    assert sorted(ledger_rows(root)) == sorted((name, "done") for name in names)
    assert "Traceback" not in daemon.text()


# -- no cluster needed ------------------------------------------------------------------------------


def test_photostyle_errors_survive_pickling() -> None:
    """Workers send errors back pickled; classes with their own __init__ must rebuild from their arguments."""
    from pipeline.errors import ConfigError, OutputError, StageError, WeightsError

    for error in (StageError("preprocess", "sepia", "boom"), OutputError("/out", "disk full"),
                  ConfigError(["a.yaml:1: x: bad", "a.yaml:2: y: bad"]), WeightsError("no weights")):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error) and vars(again) == vars(error)


def test_executor_section_is_validated_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    config = write_config(tmp_path / "p", extra={"executor": "local"})
    assert main(["check", "-c", str(config)]) == 0
    config = write_config(tmp_path / "p", extra={"executor": {"kind": "ray", "address": "auto", "workers": "auto",
                                                              "gpus_per_worker": 0.5}})
    assert main(["check", "-c", str(config)]) == 0
    capsys.readouterr()
    config.write_text(config.read_text().split("executor:")[0] + "executor:\n  kind: ray\n  workers: 0\n"
                      "  address: not an address\n  max_in_flight: 0\n")
    assert main(["check", "-c", str(config)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    text = config.read_text().splitlines()
    for key in ("workers", "address", "max_in_flight"):
        [problem] = [line for line in lines if f": executor.{key}: " in line]
        line_number = int(problem.split(":")[1])
        assert text[line_number - 1].strip().startswith(f"{key}:"), (problem, text)
    config.write_text(config.read_text().split("executor:")[0] + "executor:\n  kind: local\n  workers: 2\n")
    assert main(["check", "-c", str(config)]) == 2
    assert "workers only apply to kind: ray" in capsys.readouterr().err


def test_a_worker_needs_none_of_the_coordinators_files(tmp_path: Path) -> None:
    """The spec carries style images and plugin modules; the worker loads it after the originals are gone."""
    from pipeline.app import load_app
    from pipeline.execution.ray.worker import pack_worker_spec, unpack_worker_spec

    (tmp_path / "p" / "styles").mkdir(parents=True)
    synthetic_photo((40, 40), seed=3).save(tmp_path / "p" / "styles" / "Blue Period.png")
    (tmp_path / "p" / "plugins").mkdir()
    (tmp_path / "p" / "plugins" / "stamp.py").write_text(
        "from pipeline import hookimpl\n\n@hookimpl\ndef postprocess(image, ctx):\n    return image\n")
    config = write_config(tmp_path / "p", extra={"plugins": {"paths": ["plugins"]},
                                                 "preset_defaults": {"iterations": 2}})
    app = load_app(config)
    spec = pickle.loads(pickle.dumps(pack_worker_spec(app)))
    shutil.rmtree(tmp_path / "p")  # another node: none of these files exist there
    worker_app = unpack_worker_spec(spec, tmp_path / "node", "cpu")
    assert sorted(worker_app.config.presets) == ["Blue_Period", "tiny"]
    for name, preset in worker_app.config.presets.items():
        assert preset.model_dump(exclude={"style"}) == app.config.presets[name].model_dump(exclude={"style"})
        assert preset.style.is_file() and (tmp_path / "node") in preset.style.parents
    assert "stamp" in worker_app.host.sources and worker_app.config.device == "cpu"


def test_without_ray_installed_a_ray_config_stops_with_one_line_before_any_photo(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    shim = tmp_path / "shim" / "ray"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("No module named \'ray\' (hidden by this test)")\n')
    config = write_config(tmp_path / "p", extra={"executor": {"kind": "ray"}})
    root = config.parent
    drop(root / "inbox" / "waiting.jpg", jpeg_bytes(1))
    photo = tmp_path / "photo.jpg"
    synthetic_photo().save(photo)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path / 'shim'}{os.pathsep}{REPO}")  # for the Ray driver process
    watched = run_cli("watch", "-c", config, timeout=120)
    assert watched.returncode == 2, watched.stderr
    from pipeline.cli import main

    assert main(["process", str(photo), "-c", str(config)]) == 2
    for stderr in (watched.stderr, capsys.readouterr().err):
        [line] = stderr.strip().splitlines()
        assert "pip install -e '.[ray]'" in line and str(config) in line
    assert (root / "inbox" / "waiting.jpg").read_bytes() == jpeg_bytes(1)
    assert not files_under(root / "outbox") and not (root / "failed").exists()


@needs_ray
def test_process_with_an_unreachable_cluster_says_so_in_one_line(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    synthetic_photo().save(photo)
    config = write_config(tmp_path / "p", extra={"executor": {"kind": "ray", "address": f"127.0.0.1:{free_port()}"}})
    result = run_cli("process", photo, "-c", config, env=RAY_ENV, timeout=120)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot reach the Ray cluster at 127.0.0.1:") and "refused" in line
    assert not (tmp_path / "p" / "outbox").exists()


# -- on the cluster ---------------------------------------------------------------------------------


@needs_ray
def test_a_drop_is_done_exactly_once_by_two_actors_and_sigterm_drains(cluster: ClusterHost, tmp_path: Path) -> None:
    config = ray_config(tmp_path / "p", cluster, gate_plugin(tmp_path / "gate"), watch={"shutdown_timeout": 2})
    root = config.parent
    names = [f"photo{index}.jpg" for index in range(6)]
    for index, name in enumerate(names):
        drop(root / "inbox" / name, jpeg_bytes(60 + index))
    with DaemonProcess(config, env=RAY_ENV) as daemon:
        daemon.wait_msg("done", timeout=240, count=6)
        wait_for(lambda: sum(w["done"] for w in status_json(root).get("workers", [])) == 6, 30, "status counts")
        workers = status_json(root)["workers"]
        assert sorted(w["name"] for w in workers) == ["ray-0", "ray-1"]
        assert all(w["done"] >= 1 and w["device"] == "cpu" for w in workers), workers  # both did their share
        shown = run_cli("status", "-c", config).stdout
        assert "workers:" in shown and "ray-0 on " in shown and "ray-1 on " in shown and " done, 0 failed" in shown

        data = yaml.safe_load(config.read_text())
        data["presets"]["tiny"]["size"] = 32  # SIGHUP: the workers take the new settings for the next photo
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        daemon.send(signal.SIGHUP)
        daemon.wait_msg("config reloaded")
        drop(root / "inbox" / "after_reload.jpg", jpeg_bytes(69))
        daemon.wait_msg("done", timeout=120, count=7)
        with Image.open(root / "outbox" / "tiny" / "after_reload.jpg") as result:
            assert result.size == (32, 24)
        drop(root / "inbox" / "gated.jpg", jpeg_bytes(70))  # never passes the gate: SIGTERM must abandon it
        wait_for(lambda: "gated.jpg" in running_on(root).values(), 120, "the gated photo to run")
        assert daemon.stop(signal.SIGTERM) == 0
    assert daemon.messages("abandoned at shutdown; left queued for the next start")
    assert (root / "inbox" / "gated.jpg").is_file()  # redone at the next start, as with the local executor
    names.append("after_reload.jpg")
    assert sorted(ledger_rows(root)) == sorted([(name, "done") for name in names] + [("gated.jpg", "queued")])
    assert sorted(Path(entry["file"]).name for entry in daemon.messages("done")) == sorted(names)
    assert sorted(p.name for p in files_under(root / "outbox", "*.jpg")) == sorted(names)
    assert sorted(p.name for p in files_under(root / "processed")) == sorted(names)
    assert "Traceback" not in daemon.text()
    with Image.open(root / "outbox" / "tiny" / "photo0.jpg") as result:
        assert result.size == (24, 18)
    sidecar = json.loads((root / "outbox" / "tiny" / "photo0.jpg.json").read_text())
    assert sidecar["report"]["engine"]["device"] == "cpu" and sidecar["report"]["loss"]["final"]["total"] > 0
    assert sidecar["settings"]["style"] == str(root / "style.png")  # the coordinator's settings, not the worker's copy


@needs_ray
def test_actors_killed_mid_photo_by_ray_kill_and_sigkill_lose_nothing(cluster: ClusterHost, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    config = ray_config(tmp_path / "p", cluster, gate_plugin(gate))
    root = config.parent
    names = ["gated_a.jpg", "gated_b.jpg", "c.jpg", "d.jpg"]
    for index, name in enumerate(names):
        path = drop(root / "inbox" / name, jpeg_bytes(80 + index))
        os.utime(path, (3_000_000 + index, 3_000_000 + index))  # the gated ones first: one on each actor
    with DaemonProcess(config, env=RAY_ENV) as daemon:
        running = wait_for(lambda: (found := running_on(root)) and len(found) == 2 and found, 240,
                           "both gated photos to be running, one per actor")
        assert sorted(running.values()) == ["gated_a.jpg", "gated_b.jpg"]
        kill_actors(cluster, (actor_name(daemon, "ray-0"), "ray.kill"), (actor_name(daemon, "ray-1"), "SIGKILL"))
        wait_for(lambda: {Path(entry["file"]).name for entry in daemon.messages(
            "worker lost with the photo in flight; queued again")} >= {"gated_a.jpg", "gated_b.jpg"}, 60,
            "both gated photos to be requeued")
        open_gate(gate, "gated_a.jpg", "gated_b.jpg")
        daemon.wait_msg("done", timeout=240, count=4)
        time.sleep(1)
        assert daemon.stop() == 0
    assert_each_done_once(daemon, root, names)


@needs_ray
def test_a_photo_that_kills_its_workers_fails_after_max_attempts_and_the_rest_are_done(
        cluster: ClusterHost, tmp_path: Path) -> None:
    config = ray_config(tmp_path / "p", cluster, POISON_PLUGIN, max_attempts=2)
    root = config.parent
    for index, name in enumerate(["poison.jpg", "good.jpg"]):
        drop(root / "inbox" / name, jpeg_bytes(90 + index))
    with DaemonProcess(config, env=RAY_ENV) as daemon:
        [failed] = daemon.wait_msg("failed", timeout=300)
        daemon.wait_msg("done", timeout=120)
        time.sleep(1)
        assert daemon.stop() == 0
    assert Path(failed["file"]).name == "poison.jpg"
    reason = (root / "failed" / "tiny" / "poison.jpg.error.txt").read_text()
    assert "stopped a worker 2 times (max_attempts 2)" in reason
    assert (root / "failed" / "tiny" / "poison.jpg").read_bytes() == jpeg_bytes(90)
    assert [Path(entry["file"]).name for entry in daemon.messages("done")] == ["good.jpg"]
    assert (root / "outbox" / "tiny" / "good.jpg").is_file() and not (root / "outbox" / "tiny" / "poison.jpg").exists()


@needs_ray
def test_process_on_ray_is_pixel_identical_to_local(cluster: ClusterHost, tmp_path: Path) -> None:
    photos = []
    for index in range(2):
        photos.append(tmp_path / f"shot{index}.jpg")
        synthetic_photo((40, 30), seed=index).save(photos[-1], quality=95)
    preset = {"schedule": {"pyramid": [], "pyramid_iterations": []}, "output": {"format": "png"},
              "precision": "fp32", "iterations": 3}
    local = write_config(tmp_path / "local", preset=preset)
    ray = write_config(tmp_path / "ray", preset=preset, extra={"executor": {
        "kind": "ray", "address": cluster.address, "workers": 2, "cpus_per_worker": 1}})
    # The same torch thread count on both sides: one (cpus_per_worker: 1 sets the actors').
    done_local = run_cli("process", *photos, "-c", local, "--json", env={"OMP_NUM_THREADS": "1"})
    done_ray = run_cli("process", *photos, "-c", ray, "--json", env=RAY_ENV)
    assert done_local.returncode == 0 and done_ray.returncode == 0, done_ray.stderr
    by_input = {json.loads(line)["input"]: json.loads(line) for line in done_ray.stdout.splitlines()}
    for photo in photos:
        ours, theirs = (tmp_path / side / "outbox" / "tiny" / f"{photo.stem}.png" for side in ("local", "ray"))
        assert np.array_equal(np.asarray(Image.open(ours)), np.asarray(Image.open(theirs)))
        assert by_input[str(photo)]["output"] == str(theirs)
        assert json.loads(Path(f"{theirs}.json").read_text())["report"]["loss"] == json.loads(
            Path(f"{ours}.json").read_text())["report"]["loss"]


@needs_ray
def test_cluster_unreachable_at_start_then_lost_while_running_waits_and_reconnects(
        cluster: ClusterHost, tmp_path: Path) -> None:
    """Last in the module: it takes the shared cluster down three times and leaves it down."""
    gate = tmp_path / "gate"
    config = ray_config(tmp_path / "p", cluster, gate_plugin(gate))
    root = config.parent
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.2)
    statuses: list[str] = []
    listening = threading.Event()

    def listen() -> None:  # as systemd does, all the time: a full socket would block the daemon's sends
        while not listening.is_set():
            try:
                statuses.append(notify.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                pass

    def status_lines() -> str:
        return "\n".join(statuses)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()

    cluster.kill()
    env = {**RAY_ENV, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    try:
        with DaemonProcess(config, env=env) as daemon:
            daemon.wait_ready(timeout=120)  # not refused: it waits for the cluster
            drop(root / "inbox" / "early.jpg", jpeg_bytes(100))
            wait_for(lambda: "STATUS=waiting for the Ray cluster" in status_lines(), 30, "a waiting status line")
            time.sleep(4)  # several retries: still one line in the log, and the photo untouched in the inbox
            assert len(daemon.messages("cannot reach the Ray cluster; photos wait in the queue, retrying with "
                                       "back-off")) == 1
            assert (root / "inbox" / "early.jpg").is_file() and ("early.jpg", "queued") in ledger_rows(root)

            cluster.start()
            daemon.wait_msg("done", timeout=240)
            drop(root / "inbox" / "gated.jpg", jpeg_bytes(101))
            wait_for(lambda: "gated.jpg" in running_on(root).values(), 120, "the gated photo to run")
            cluster.kill()
            daemon.wait_msg("lost the Ray cluster; photos in flight will be sent again, reconnecting", timeout=60)
            assert daemon.process.poll() is None
            cluster.start()
            open_gate(gate, "gated.jpg")
            daemon.wait_msg("done", timeout=240, count=2)
            assert len(daemon.messages("connected to the Ray cluster")) == 2
            assert_each_done_once(daemon, root, ["early.jpg", "gated.jpg"])

            # Lost again with a photo in flight, and then SIGTERM: it is left queued for the next start.
            drop(root / "inbox" / "gated_late.jpg", jpeg_bytes(102))
            wait_for(lambda: "gated_late.jpg" in running_on(root).values(), 120, "the late photo to run")
            cluster.kill()
            daemon.wait_msg("lost the Ray cluster; photos in flight will be sent again, reconnecting", timeout=60,
                            count=2)
            assert daemon.stop(signal.SIGTERM) == 0
    finally:
        listening.set()
        listener.join()
        notify.close()
    assert "waiting for the Ray cluster" in "\n".join(statuses)
    assert (root / "inbox" / "gated_late.jpg").is_file() and ("gated_late.jpg", "queued") in ledger_rows(root)
    assert daemon.messages("abandoned at shutdown; left queued for the next start")
