"""One Ray worker: the config it is shipped, and the actor that renders photos with it.

Worker nodes need only the package installed, not the coordinator's files, so a
worker is sent everything its config refers to, once:

- :func:`pack_worker_spec` (on the coordinator) dumps the validated config with
  every preset spelled out, collects the files it names (style images, a
  watermark's image or font, ``plugins.paths`` modules) and rewrites those paths
  to names inside a folder of the worker's own;
- :func:`unpack_worker_spec` (on the worker) writes them into a temp folder and
  loads the app from there, through :func:`~pipeline.app.load_app` like any
  other command, so plugins and validation behave exactly as on the coordinator.

The weights are not sent: ``model.weights`` must name a file present on every
node, or be ``torchvision`` (each node's own torchvision cache) or ``random``.

:class:`RenderWorker` is a plain class (Ray turns it into an actor in
:mod:`pipeline.execution.ray.driver`): one :class:`~pipeline.execution.worker.Worker` (network, style
targets, plugin host) running :func:`~pipeline.job.runner.render_jobs`, bytes in and
:class:`~pipeline.job.runner.Rendered` out, writing no photo anywhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from pipeline.app import App, load_app
from pipeline.errors import Cancelled, PhotostyleError, brief
from pipeline.engine.device import set_cpu_threads
from pipeline.job.runner import JobRequest, Rendered
from pipeline.plugin_host import _plugin_files

CONFIG_NAME = "config.yaml"
FOLDER_PREFIX = "photostyle-worker-"


@dataclass
class WorkerSpec:
    """A config a worker can load anywhere: its data, and the files it names (relative path -> bytes)."""

    config: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict, repr=False)


def _paths_in(value: Any) -> Iterator[Path]:
    """Every Path in a validated config, models, lists and dicts included (plugins' sections too)."""
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _paths_in(getattr(value, name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _paths_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _paths_in(item)
    elif isinstance(value, Path):
        yield value


def _rewrite(value: Any, mapping: dict[str, str]) -> Any:
    """``value`` with every string that is a shipped path replaced by its name in the worker's folder."""
    if isinstance(value, dict):
        return {key: _rewrite(item, mapping) for key, item in value.items()}
    if isinstance(value, list):
        return [_rewrite(item, mapping) for item in value]
    if isinstance(value, str):
        return mapping.get(value, value)
    return value


def pack_worker_spec(app: App) -> WorkerSpec:
    """The validated config and the files it refers to, relocatable to any node (see the module docstring)."""
    config = app.config
    files: dict[str, bytes] = {}
    mapping: dict[str, str] = {}
    for path in dict.fromkeys(_paths_in(config)):
        if path.is_file():  # style images, watermark image and font, plugin files; folders are not sent
            relative = f"files/{len(mapping)}/{path.name}"
            files[relative] = path.read_bytes()
            mapping[str(path)] = relative
    for index, folder in enumerate(path for path in config.plugins.paths if path.is_dir()):
        relative = f"plugins/{index}"
        for module in _plugin_files([folder]):
            files[f"{relative}/{module.name}"] = module.read_bytes()
        mapping[str(folder)] = relative
    data = _rewrite(config.model_dump(mode="json"), mapping)
    # Every preset is spelled out above (styles-folder presets and preset_defaults applied), so the
    # worker needs neither; its folders are its own (it never touches the coordinator's).
    data.update(preset_defaults={}, styles="styles", inbox="inbox", outbox="outbox", processed="processed",
                failed="failed", state="state", executor="local")
    data["model"]["weights"] = config.model.weights  # a path present on every node, or torchvision/random
    return WorkerSpec(config=data, files=files)


def unpack_worker_spec(spec: WorkerSpec, folder: Path, device: str) -> App:
    """Write the spec's files under ``folder`` and load the app from there, on ``device``."""
    for relative, data in spec.files.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    config_path = folder / CONFIG_NAME
    config_path.write_text(yaml.safe_dump({**spec.config, "device": device}, sort_keys=False))
    return load_app(config_path)


def worker_device(configured: str, gpu_ids: list[Any]) -> str:
    """``cuda`` when Ray gave this worker a GPU (it sees only its own), else the CPU.

    Ray sets ``CUDA_VISIBLE_DEVICES`` per actor, so an index from the coordinator's
    ``device: cuda:N`` would name the wrong GPU here.
    """
    if configured == "cpu" or not gpu_ids:
        return "cpu"
    return "cuda"


def _remove_stale_folders() -> None:
    """Folders of workers that died (killed, restarted) are left behind: remove those whose process is gone."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*-*"):
        pid = folder.name.removeprefix(FOLDER_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # someone else's process: not ours to judge


class RenderWorker:
    """What a Ray actor holds: one Worker built from a :class:`WorkerSpec`. Methods return, never raise.

    ``render`` runs in the actor's default concurrency group (one at a time);
    ``describe``, ``progress`` and ``stop`` in a control group, so they answer
    while a photo renders.
    """

    def __init__(self, spec: WorkerSpec, version: int, threads: int) -> None:
        set_cpu_threads(threads)  # cpus_per_worker: Ray reserved them for this worker alone
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[str, Any] | None = None
        self._folder: Path | None = None
        self.worker: Any = None
        self.version = -1
        self.error: PhotostyleError | None = None
        self._load(spec, version)

    # -- setting up -------------------------------------------------------------------------

    def _gpu_ids(self) -> list[Any]:
        try:
            import ray

            return list(ray.get_gpu_ids())
        except Exception:  # not in a Ray worker (tests of this class alone)
            return []

    def _load(self, spec: WorkerSpec, version: int) -> None:
        """Build the Worker for this spec; keep loaded models when only settings changed."""
        from pipeline.execution.worker import Worker

        _remove_stale_folders()
        folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-"))
        try:
            app = unpack_worker_spec(spec, folder, worker_device(spec.config.get("device", "auto"), self._gpu_ids()))
            cache = self.worker.resources.cache if self.worker is not None else None
            worker = Worker(app, cache=cache)
            worker.prepare(app.config.default_preset)  # the network and the default style, before any photo
        except PhotostyleError as exc:
            self.error = exc
            shutil.rmtree(folder, ignore_errors=True)
            return
        except Exception as exc:  # a bug or a broken install on this node: say so, do not die in a restart loop
            self.error = PhotostyleError(f"the worker could not start: {brief(exc)}")
            shutil.rmtree(folder, ignore_errors=True)
            return
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        self._folder, self.worker, self.version, self.error = folder, worker, version, None

    # -- control group ------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Where this worker runs, for status (and its setup error, if it could not start)."""
        node, node_id = socket.gethostname(), ""
        try:
            import ray

            context = ray.get_runtime_context()
            node_id = context.get_node_id()
            node = f"{ray.util.get_node_ip_address()} ({socket.gethostname()}, node {node_id[:8]})"
        except Exception:
            pass
        device = self.worker.resources.device if self.worker is not None else "?"
        gpus = self._gpu_ids()
        if gpus:
            device += f" (GPU {','.join(map(str, gpus))})"
        return {"pid": os.getpid(), "node": node, "node_id": node_id, "device": device, "error": self.error}

    def progress(self) -> dict[str, Any] | None:
        with self._lock:
            return dict(self._running) if self._running is not None else None

    def stop(self) -> None:
        """Abandon: the running photo stops at its next evaluation, later ones do not start."""
        self._stop.set()

    # -- rendering -------------------------------------------------------------------------------

    def _progress(self, done: int, total: int, message: str) -> None:
        with self._lock:
            if self._running is not None:
                self._running.update(done=done, total=total, message=message)

    def render(self, version: int, spec_box: list[Any], requests: list[JobRequest]) -> list[Rendered | PhotostyleError]:
        """Render photos of one preset; one outcome each, in order (see :func:`~pipeline.job.runner.render_jobs`).

        ``spec_box`` holds a reference to the current spec: a worker still on an older
        ``version`` (a config reload, or a restart from its first spec) loads it first.
        """
        count = len(requests)
        if self._stop.is_set():
            return [Cancelled("stopped before it started")] * count
        if version != self.version:
            import ray

            self._load(ray.get(spec_box[0]), version)
        if self.error is not None or self.worker is None:
            return [self.error or PhotostyleError("the worker is not set up")] * count
        first = requests[0]
        with self._lock:
            self._running = {"job": first.job_id, "file": str(first.source), "preset": first.preset,
                             "batch": count, "started": time.time(), "done": 0, "total": 0, "message": ""}
        try:
            return self.worker.render(requests, progress=self._progress, should_stop=self._stop.is_set)
        finally:
            with self._lock:
                self._running = None
