"""The local worker: owns the device and the engine's caches, and runs jobs one at a time.

``photostyle process`` and the daemon both hand photos to a :class:`Worker`; it is
the one place a loaded network lives, so the model is loaded once and reused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pipeline.app import App
from pipeline.job.context import JobResult, WorkerResources
from pipeline.engine.device import resolve_device
from pipeline.errors import PhotostyleError, StageError, brief
from pipeline.job.runner import JobRequest, Rendered, render_jobs, run_job, run_jobs
from pipeline.job.training import TrainedModel, TrainingCallbacks, TrainingRequest

log = logging.getLogger(__name__)


def batch_size(setting: str | int, *, on_gpu: bool) -> int:
    """``watch.batch_size``: ``auto`` is 4 on a GPU, which does several photos in about the time of one, and
    1 on a CPU, which gains nothing from batching."""
    if setting == "auto":
        return 4 if on_gpu else 1
    return int(setting)


class Worker:
    """Runs jobs for one :class:`~pipeline.app.App` on one device."""

    def __init__(self, app: App, cache: dict | None = None) -> None:
        """``cache`` carries loaded models over from a previous worker (a config reload)."""
        self.app = app
        self.resources = WorkerResources(config=app.config, device=resolve_device(app.config.device),
                                         hook=app.host.pm.hook)
        if cache is not None:
            self.resources.cache = cache
        self._prepared: set[str] = set()

    def prepare(self, preset: str) -> None:
        """Let plugins load what the preset needs; errors here refuse to start (missing weights)."""
        if preset in self._prepared:
            return
        self.app.host.prepare(preset_name=preset, preset=self.app.config.presets[preset], resources=self.resources)
        self._prepared.add(preset)

    @property
    def batch_size(self) -> int:
        """How many queued photos of one preset the daemon stylises together (``watch.batch_size``)."""
        return batch_size(self.app.config.watch.batch_size, on_gpu=self.resources.device.startswith("cuda"))

    def render(self, requests: list[JobRequest], *, progress: Callable[[int, int, str], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> list[Rendered | PhotostyleError]:
        """A submission's photos rendered to bytes, one outcome each, never raising but for the caller's bugs.

        The one function both executors run (the local thread, a Ray actor). A
        failure of the whole submission (missing weights for the preset, Cancelled)
        is every photo's outcome; an error in photostyle itself fails them with one
        line each and is logged with its traceback, and the worker lives on (a
        batch that fails as a whole is then split by the coordinator).
        """
        try:
            for preset in dict.fromkeys(request.preset for request in requests):
                self.prepare(preset)
            pairs = render_jobs(requests, self.app.host, self.resources, progress=progress, should_stop=should_stop)
        except PhotostyleError as exc:  # Cancelled, or every photo waits (weights missing for this preset)
            return [exc] * len(requests)
        except Exception as exc:
            log.exception("internal error", extra={"fields": {"photos": len(requests)}})
            error = StageError("processing", None, f"internal error: {brief(exc)}")
            return [error] * len(requests)
        return [outcome for outcome, _ in pairs]

    def train(self, request: TrainingRequest, callbacks: TrainingCallbacks) -> TrainedModel:
        """Train a fast preset's network here (the local process, or a Ray task); see ``photostyle train``."""
        self.prepare(request.preset)
        model = self.app.host.pm.hook.train_model(preset=self.app.config.presets[request.preset], request=request,
                                                  resources=self.resources, callbacks=callbacks)
        if model is None:
            raise PhotostyleError(f"preset {request.preset!r}: no plugin trains a fast model for it "
                                  "(the built-in vgg_style is disabled?)")
        return model

    def run_batch(
        self,
        requests: list[JobRequest],
        *,
        progress: Callable[[int, int, str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[JobResult | PhotostyleError]:
        """Several photos; each result or error in order (see :func:`~pipeline.job.runner.run_jobs`)."""
        for preset in dict.fromkeys(request.preset for request in requests):
            self.prepare(preset)
        return run_jobs(requests, self.app.host, self.resources, progress=progress, should_stop=should_stop)

    def run(
        self,
        request: JobRequest,
        *,
        progress: Callable[[int, int, str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> JobResult:
        self.prepare(request.preset)
        return run_job(request, self.app.host, self.resources, progress=progress, should_stop=should_stop)
