"""The local worker: owns the device and the engine's caches, and runs jobs one at a time.

``photostyle process`` and the daemon both hand photos to a :class:`Worker`; it is
the one place a loaded network lives, so the model is loaded once and reused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pipeline.app import App
from pipeline.context import JobResult, WorkerResources
from pipeline.device import resolve_device
from pipeline.errors import PhotostyleError
from pipeline.job import JobRequest, run_job, run_jobs

log = logging.getLogger(__name__)


class Worker:
    """Runs jobs for one :class:`~pipeline.app.App` on one device."""

    def __init__(self, app: App, cache: dict | None = None) -> None:
        """``cache`` carries loaded models over from a previous worker (a config reload)."""
        self.app = app
        self.resources = WorkerResources(config=app.config, device=resolve_device(app.config.device))
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
        size = self.app.config.watch.batch_size
        if size == "auto":  # a GPU does several photos in about the time of one; a CPU gains nothing
            return 4 if self.resources.device.startswith("cuda") else 1
        return int(size)

    def run_batch(
        self,
        requests: list[JobRequest],
        *,
        progress: Callable[[int, int, str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[JobResult | PhotostyleError]:
        """Several photos; each result or error in order (see :func:`~pipeline.job.run_jobs`)."""
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
