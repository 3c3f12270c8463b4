"""One photo through the stages: load, preprocess, stylize, postprocess, save, then its sidecar.

This is the single code path behind ``photostyle process`` and the daemon. It
knows the stage *hooks*, never a particular stage: which plugins run is the
plugin host's business. Failures become a :class:`~pipeline.errors.PhotostyleError`
naming the stage (and plugin), after the ``job_failed`` hook has been told.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.context import JobContext, JobResult, WorkerResources
from pipeline.errors import Cancelled, OutputError, PhotostyleError, StageError
from pipeline.fileops import write_new_file
from pipeline.imageio import EXTENSIONS, encode, load_photo
from pipeline.plugin_host import PluginHost
from pipeline.sidecar import write_sidecar


@dataclass(frozen=True)
class JobRequest:
    """What to do: which photo, with which preset, written where."""

    source: Path
    preset: str
    output_dir: Path | None = None  # default: outbox/<preset>/
    job_id: str | None = None


class _Stopwatch:
    """Times named stages for the result record and the logs."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.start = time.perf_counter()

    def run(self, stage: str, action: Callable[[], object]) -> object:
        began = time.perf_counter()
        try:
            return action()
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - began

    @property
    def total(self) -> float:
        return time.perf_counter() - self.start


def _load(ctx: JobContext) -> object:
    photo = load_photo(ctx.source, ctx.config.limits.max_pixels)
    ctx.original, ctx.alpha = photo.image, photo.alpha
    ctx.exif, ctx.icc_profile = photo.exif, photo.icc_profile
    ctx.report["input_format"] = photo.format
    if photo.frames > 1:
        ctx.log.info("%s: animated (%d frames); using the first frame", ctx.source, photo.frames)
    return photo.image


def _stylize(host: PluginHost, image: object, ctx: JobContext) -> object:
    result, plugin = host.first_result("stylize", image=image, ctx=ctx)
    if result is None:
        raise StageError("stylize", None, "no plugin implements stylize (is vgg_style disabled?)")
    ctx.report["stylized_by"] = plugin
    return result


def _save(image: object, ctx: JobContext, output_dir: Path) -> Path:
    options = ctx.preset.output
    keep = options.keep_metadata
    data = encode(
        image,  # type: ignore[arg-type]
        options.format,
        quality=options.quality,
        alpha=ctx.alpha,
        exif=ctx.exif if keep else None,
        icc_profile=ctx.icc_profile if keep else None,
    )
    return write_new_file(data, output_dir, ctx.source.stem, EXTENSIONS[options.format])


def _record(result: JobResult, ctx: JobContext) -> Path | None:
    """Write the result's sidecar; a failure leaves a good result without one, so it only warns."""
    try:
        return write_sidecar(result, ctx)
    except OSError as exc:
        ctx.log.warning("%s: sidecar not written: %s", result.output, exc.strerror or exc)
        return None


class _Job:
    """One photo's context, clock and stages, so single and batched runs share every step."""

    def __init__(
        self,
        request: JobRequest,
        host: PluginHost,
        resources: WorkerResources,
        progress: Callable[[int, int, str], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        config = resources.config
        self.request = request
        self.host = host
        self.ctx = JobContext(
            job_id=request.job_id or uuid.uuid4().hex[:12],
            source=request.source,
            preset_name=request.preset,
            preset=config.presets[request.preset],
            resources=resources,
        )
        if progress is not None:
            self.ctx.progress = progress
        if should_stop is not None:
            self.ctx.should_stop = should_stop
        self.output_dir = request.output_dir or config.outbox / request.preset
        self.clock = _Stopwatch()

    @contextmanager
    def failures(self) -> Iterator[None]:
        """Tell ``job_failed`` about any failure; an unwritable outbox becomes a retryable OutputError."""
        try:
            yield
        except Cancelled:
            raise
        except PhotostyleError as exc:
            self.host.notify("job_failed", fatal=False, ctx=self.ctx, error=str(exc))
            raise
        except OSError as exc:  # the outbox could not be written: disk full, permission denied
            error = OutputError(str(self.output_dir), exc.strerror or str(exc))
            self.host.notify("job_failed", fatal=False, ctx=self.ctx, error=str(error))
            raise error from exc

    def prepare_image(self) -> object:
        """job_started, load, preprocess: the image the stylize stage receives."""
        ctx = self.ctx
        self.host.notify("job_started", fatal=True, ctx=ctx)
        image = self.clock.run("load", lambda: _load(ctx))
        return self.clock.run("preprocess", lambda: self.host.chain("preprocess", image, ctx=ctx))

    def stylize(self, image: object) -> object:
        return self.clock.run("stylize", lambda: _stylize(self.host, image, self.ctx))

    def finish(self, image: object) -> JobResult:
        """postprocess, save, sidecar, job_finished."""
        ctx = self.ctx
        image = self.clock.run("postprocess", lambda: self.host.chain("postprocess", image, ctx=ctx))
        output = self.clock.run("save", lambda: _save(image, ctx, self.output_dir))
        result = JobResult(
            job_id=ctx.job_id,
            source=self.request.source,
            output=output,  # type: ignore[arg-type]
            preset=self.request.preset,
            seconds=self.clock.total,
            timings=self.clock.timings,
            report=ctx.report,
        )
        result.sidecar = self.clock.run("sidecar", lambda: _record(result, ctx))  # type: ignore[assignment]
        self.host.notify("job_finished", fatal=False, ctx=ctx, result=result)
        return result


def run_job(
    request: JobRequest,
    host: PluginHost,
    resources: WorkerResources,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> JobResult:
    """Run one photo through every stage and save it; raise PhotostyleError on failure."""
    job = _Job(request, host, resources, progress, should_stop)
    with job.failures():
        return job.finish(job.stylize(job.prepare_image()))


def run_jobs(
    requests: list[JobRequest],
    host: PluginHost,
    resources: WorkerResources,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[JobResult | PhotostyleError]:
    """Several photos of one preset, stylised in one batch when a plugin implements ``stylize_batch``.

    Each photo succeeds or fails on its own: the list holds a result or the
    error for each request, in order. A photo the batch plugin declines (or
    every photo, when none accepts) goes through ``stylize`` alone.
    """
    jobs = [_Job(request, host, resources, progress, should_stop) for request in requests]
    outcomes: list[JobResult | PhotostyleError | None] = [None] * len(jobs)
    images: dict[int, object] = {}
    for index, job in enumerate(jobs):
        try:
            with job.failures():
                images[index] = job.prepare_image()
        except Cancelled:
            raise
        except PhotostyleError as exc:
            outcomes[index] = exc
    stylized: dict[int, object] = {}
    ready = sorted(images)
    if len(ready) > 1:
        began = time.perf_counter()
        try:
            batch, plugin = host.first_result(
                "stylize_batch", images=[images[i] for i in ready], ctxs=[jobs[i].ctx for i in ready]
            )
        except StageError as exc:  # the batch plugin failed: every photo in it fails with its name
            for index in ready:
                host.notify("job_failed", fatal=False, ctx=jobs[index].ctx, error=str(exc))
                outcomes[index] = exc
            ready, batch = [], None
        if batch is not None:
            elapsed = time.perf_counter() - began
            for index, image in zip(ready, batch, strict=True):
                stylized[index] = image
                jobs[index].clock.timings["stylize"] = elapsed
                jobs[index].ctx.report.update(stylized_by=plugin, batch=len(ready))
    for index in ready:
        job = jobs[index]
        try:
            with job.failures():
                image = stylized[index] if index in stylized else job.stylize(images[index])
                outcomes[index] = job.finish(image)
        except Cancelled:
            raise
        except PhotostyleError as exc:
            outcomes[index] = exc
    return outcomes  # type: ignore[return-value]
