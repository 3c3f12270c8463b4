"""``photostyle train`` with ``executor: {kind: ray}``: the training runs as a task on a cluster node.

The task is sent the worker spec (:func:`~pipeline.execution.ray.worker.pack_worker_spec`:
the config and the files it names) and the :class:`~pipeline.job.training.TrainingRequest`
(the photos as bytes), asks for a GPU when the cluster has one, and streams back
progress, checkpoints and the finished model (a Ray streaming generator), which
the command stores here exactly as a local run's. Ctrl-C cancels the task; the
last checkpoint is already stored, so the next ``photostyle train`` resumes it.
"""

from __future__ import annotations

import logging
import queue
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.app import App
from pipeline.errors import PhotostyleError, brief
from pipeline.execution.ray.worker import FOLDER_PREFIX, WorkerSpec, pack_worker_spec, unpack_worker_spec, worker_device
from pipeline.job.training import TrainedModel, TrainingCallbacks, TrainingRequest

NAMESPACE = "photostyle-train"
_DONE = object()


def train_task(spec: WorkerSpec, request: TrainingRequest, threads: int) -> Iterator[tuple[Any, ...]]:
    """The task's body, on the node: train in a thread, yield what it reports as it reports it."""
    import ray

    from pipeline.engine.device import set_cpu_threads
    from pipeline.execution.worker import Worker

    set_cpu_threads(threads)
    reports: queue.Queue[Any] = queue.Queue()
    with tempfile.TemporaryDirectory(prefix=FOLDER_PREFIX) as folder:
        app = unpack_worker_spec(spec, Path(folder), worker_device(spec.config.get("device", "auto"),
                                                                    ray.get_gpu_ids()))
        callbacks = TrainingCallbacks(lambda progress: reports.put(("progress", progress)),
                                      lambda data, step: reports.put(("checkpoint", data, step)), lambda: False)

        def run() -> None:
            try:
                reports.put(("model", Worker(app).train(request, callbacks)))
            except PhotostyleError as exc:
                reports.put(("error", str(exc)))
            except Exception as exc:
                logging.getLogger("photostyle").exception("training failed")
                reports.put(("error", f"internal error: {brief(exc)}"))
            reports.put(_DONE)

        threading.Thread(target=run, name="train", daemon=True).start()
        while (item := reports.get()) is not _DONE:
            yield item


def train_on_cluster(app: App, request: TrainingRequest, callbacks: TrainingCallbacks) -> TrainedModel:
    """Run :func:`train_task` on the configured cluster, relaying its reports to ``callbacks``."""
    try:
        import ray
    except ImportError as exc:
        raise PhotostyleError(f"executor kind ray needs Ray ({exc.name} is not installed): pip install ray") from None
    options = app.config.executor
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False, "logging_level": logging.WARNING}
    kwargs.update(address="local", include_dashboard=False) if options.address is None else kwargs.update(
        address=options.address)
    ray.init(**kwargs)
    try:
        gpus = options.gpus_per_worker
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(train_task).options(num_cpus=options.cpus_per_worker, num_gpus=gpus,
                                              num_returns="streaming")
        stream = task.remote(pack_worker_spec(app), request, options.cpus_per_worker)
        model: TrainedModel | None = None
        try:
            for ref in stream:
                item = ray.get(ref)
                if item[0] == "progress":
                    callbacks.on_progress(item[1])
                elif item[0] == "checkpoint":
                    callbacks.on_checkpoint(item[1], item[2])
                elif item[0] == "model":
                    model = item[1]
                else:
                    raise PhotostyleError(f"training on the cluster failed: {item[1]}")
                if callbacks.should_stop():
                    ray.cancel(stream)
                    raise PhotostyleError("training stopped; the last checkpoint is stored: "
                                          f"`photostyle train {request.preset}` resumes it")
        except KeyboardInterrupt:
            ray.cancel(stream)
            raise
        if model is None:
            raise PhotostyleError("training on the cluster ended without a model")
        return model
    finally:
        ray.shutdown()

