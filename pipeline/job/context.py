"""What hooks receive: the worker's long-lived resources and one job's context.

Nothing here is global: a worker (the local worker thread, or a Ray actor on
another machine) owns its :class:`WorkerResources`, and each photo gets a fresh
:class:`JobContext`, so a job can run anywhere its inputs can be sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


def _no_progress(done: int, total: int, message: str) -> None:
    """Default progress sink: ignore."""


def _never_stop() -> bool:
    return False


@dataclass
class WorkerResources:
    """Owned by one worker for its whole life and shared by its jobs.

    ``cache`` is where plugins keep expensive things between photos (a loaded
    network, style targets); key entries by everything that determines them.
    """

    config: Any
    device: str
    cache: dict[Any, Any] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("photostyle"))
    #: The plugins' hooks (pluggy's ``pm.hook``), so one plugin can ask the others without importing
    #: them: ``resources.hook.style_preparation(preset=...)``. The worker sets it when it is made
    #: (and the plugin host again before ``prepare``, for resources made elsewhere).
    hook: Any = None


@dataclass(frozen=True)
class StylePreparation:
    """How a stage changes the photo and the style images a style-transfer engine sees (hook ``style_preparation``).

    ``key`` names everything the prepared style depends on (for a colour mode: the
    mode and the photo's rounded statistics); an engine that caches style targets
    adds it to their key, so they are reused only where it is the same.
    """

    key: list[Any]
    content: Callable[[Image.Image], Image.Image]
    style: Callable[[Image.Image], Image.Image]


@dataclass
class JobContext:
    """One photo's trip through the stages."""

    job_id: str
    source: Path
    preset_name: str
    preset: Any
    resources: WorkerResources
    original: Image.Image | None = None  # the photo as loaded: RGB, upright, full size
    alpha: Image.Image | None = None  # its transparency mask ("L"), when it had one
    exif: Image.Exif | None = None
    icc_profile: bytes | None = None
    report: dict[str, Any] = field(default_factory=dict)  # plugins add figures (losses, settings)
    progress: Callable[[int, int, str], None] = _no_progress  # (done, total, message)
    should_stop: Callable[[], bool] = _never_stop  # long stages poll this and raise Cancelled

    @property
    def config(self) -> Any:
        return self.resources.config

    @property
    def device(self) -> str:
        return self.resources.device

    @property
    def cache(self) -> dict[Any, Any]:
        return self.resources.cache

    @property
    def log(self) -> logging.Logger:
        return self.resources.log


@dataclass
class JobResult:
    """What a finished job produced; ``report`` holds what plugins reported (losses, settings)."""

    job_id: str
    source: Path
    output: Path
    preset: str
    seconds: float
    timings: dict[str, float]
    report: dict[str, Any]
    sidecar: Path | None = None  # <output>.json, once written (None if it could not be)

    def as_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "input": str(self.source),
            "output": str(self.output),
            "preset": self.preset,
            "seconds": round(self.seconds, 3),
            "timings": {stage: round(seconds, 3) for stage, seconds in self.timings.items()},
            "sidecar": str(self.sidecar) if self.sidecar is not None else None,
        }
        record.update(self.report)
        return record
