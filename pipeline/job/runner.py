"""One photo through the stages, in two halves: *render* (where the engine is) and *publish* (where the files are).

- :func:`render_jobs` runs in a worker: decode the photo's bytes, ``job_started``,
  preprocess, stylize, postprocess, encode. It returns the encoded result and the
  report, and writes no file, so a worker can be a thread here or a Ray actor on
  another machine.
- :func:`publish` runs where the outbox is (``process``, the daemon's coordinator):
  write the result under a free name, write its sidecar, then ``job_finished``.
  The result only counts once both are on disk; a sidecar that cannot be written
  takes the result back, so a full disk means "retry later", never a result the
  gallery and ``photostyle show`` cannot explain.

:func:`run_job`/:func:`run_jobs` do both in one process. This module knows the
stage *hooks*, never a particular stage: which plugins run is the plugin host's
business. Failures become a :class:`~pipeline.errors.PhotostyleError` naming the
stage (and plugin), after the ``job_failed`` hook has been told.

Metadata that cannot be carried (EXIF or an ICC profile the output format cannot
hold, a CMYK profile no transform can be built from) is dropped, not fatal: each
such note is logged as a warning and added to the report's ``warnings``, which
the sidecar keeps. A failed photo's error is kept without the frames it was
raised through (they held its bytes and pixels), and the memory is given back
(:mod:`pipeline.job.memory`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.job.context import JobContext, JobResult, WorkerResources
from pipeline.errors import Cancelled, OutputError, PhotostyleError, StageError
from pipeline.files.fileops import write_new_file
from pipeline.job.imageio import EXTENSIONS, Photo, decode_photo, encode, load_photo
from pipeline.job.memory import drop_tracebacks, release_memory
from pipeline.plugin_host import PluginHost
from pipeline.job.sidecar import write_sidecar

ProgressSink = Callable[[int, int, str], None]


@dataclass(frozen=True)
class JobRequest:
    """What to do: which photo, with which preset, written where."""

    source: Path
    preset: str
    output_dir: Path | None = None  # default: outbox/<preset>/
    job_id: str | None = None
    data: bytes | None = field(default=None, repr=False)  # the photo's bytes, when already read (see module doc)


@dataclass
class Rendered:
    """A worker's product: the encoded result and its report; nothing written to disk yet."""

    job_id: str
    preset: str
    data: bytes = field(repr=False)
    suffix: str
    report: dict[str, Any]
    timings: dict[str, float]
    seconds: float


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


def _read_photo(request: JobRequest, max_pixels: int) -> Photo:
    if request.data is not None:
        return decode_photo(request.data, str(request.source), max_pixels)
    return load_photo(request.source, max_pixels)


def warn(ctx: JobContext, message: str) -> None:
    """A warning about this photo: logged, and kept in its report (so in its sidecar)."""
    ctx.log.warning("%s: %s", ctx.source, message)
    ctx.report.setdefault("warnings", []).append(message)


@contextmanager
def _own_stage(stage: str) -> Iterator[None]:
    """Any error of a stage photostyle runs itself (not a plugin's) fails this photo alone, naming the stage."""
    try:
        yield
    except PhotostyleError:
        raise
    except Exception as exc:
        raise StageError(stage, None, f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc


def _load(ctx: JobContext, request: JobRequest) -> object:
    with _own_stage("load"):
        photo = _read_photo(request, ctx.config.limits.max_pixels)
    ctx.original, ctx.alpha = photo.image, photo.alpha
    ctx.exif, ctx.icc_profile = photo.exif, photo.icc_profile
    ctx.report["input_format"] = photo.format
    for message in photo.warnings:
        warn(ctx, message)
    if photo.frames > 1:
        ctx.log.info("%s: animated (%d frames); using the first frame", ctx.source, photo.frames)
    return photo.image


def _stylize(host: PluginHost, image: object, ctx: JobContext) -> object:
    result, plugin = host.first_result("stylize", image=image, ctx=ctx)
    if result is None:
        raise StageError("stylize", None, "no plugin implements stylize (is vgg_style disabled?)")
    ctx.report["stylized_by"] = plugin
    return result


def _encode(image: object, ctx: JobContext) -> bytes:
    options = ctx.preset.output
    keep = options.keep_metadata
    dropped: list[str] = []
    with _own_stage("encode"):
        data = encode(
            image,  # type: ignore[arg-type]
            options.format,
            quality=options.quality,
            alpha=ctx.alpha,
            exif=ctx.exif if keep else None,
            icc_profile=ctx.icc_profile if keep else None,
            dropped=dropped,
        )
    for message in dropped:
        warn(ctx, message)
    return data


def new_context(request: JobRequest, resources: WorkerResources) -> JobContext:
    """A fresh context for one photo of ``request.preset``."""
    return JobContext(
        job_id=request.job_id or uuid.uuid4().hex[:12],
        source=request.source,
        preset_name=request.preset,
        preset=resources.config.presets[request.preset],
        resources=resources,
    )


@contextmanager
def _told_on_failure(host: PluginHost, ctx: JobContext) -> Iterator[None]:
    """Tell ``job_failed`` about any failure; an OSError while writing becomes a retryable OutputError."""
    try:
        yield
    except Cancelled:
        raise
    except PhotostyleError as exc:
        host.notify("job_failed", fatal=False, ctx=ctx, error=str(exc))
        raise


class _Job:
    """One photo's context, clock and stages on the worker, so single and batched runs share every step."""

    def __init__(
        self,
        request: JobRequest,
        host: PluginHost,
        resources: WorkerResources,
        progress: ProgressSink | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.request = request
        self.host = host
        self.ctx = new_context(request, resources)
        if progress is not None:
            self.ctx.progress = progress
        if should_stop is not None:
            self.ctx.should_stop = should_stop
        self.clock = _Stopwatch()

    def failures(self) -> Any:
        return _told_on_failure(self.host, self.ctx)

    def prepare_image(self) -> object:
        """job_started, load, preprocess: the image the stylize stage receives."""
        ctx = self.ctx
        self.host.notify("job_started", fatal=True, ctx=ctx)
        image = self.clock.run("load", lambda: _load(ctx, self.request))
        return self.clock.run("preprocess", lambda: self.host.chain("preprocess", image, ctx=ctx))

    def stylize(self, image: object) -> object:
        return self.clock.run("stylize", lambda: _stylize(self.host, image, self.ctx))

    def finish(self, image: object) -> Rendered:
        """postprocess and encode: the result as bytes, ready to publish."""
        ctx = self.ctx
        image = self.clock.run("postprocess", lambda: self.host.chain("postprocess", image, ctx=ctx))
        data = self.clock.run("encode", lambda: _encode(image, ctx))
        return Rendered(
            job_id=ctx.job_id,
            preset=self.request.preset,
            data=data,  # type: ignore[arg-type]
            suffix=EXTENSIONS[ctx.preset.output.format],
            report=ctx.report,
            timings=self.clock.timings,
            seconds=self.clock.total,
        )


def render_jobs(
    requests: list[JobRequest],
    host: PluginHost,
    resources: WorkerResources,
    *,
    progress: ProgressSink | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[tuple[Rendered | PhotostyleError, JobContext]]:
    """Render photos of one preset (in one batch when a plugin implements ``stylize_batch``).

    Each photo succeeds or fails on its own: the list holds, in order, the
    rendered result or the error for each request, with its context. A photo the
    batch plugin declines (or every photo, when none accepts) goes through
    ``stylize`` alone. ``Cancelled`` propagates.
    """
    jobs = [_Job(request, host, resources, progress, should_stop) for request in requests]
    outcomes: list[Rendered | PhotostyleError | None] = [None] * len(jobs)
    images: dict[int, object] = {}
    for index, job in enumerate(jobs):
        try:
            with job.failures():
                images[index] = job.prepare_image()
        except PhotostyleError as exc:
            if isinstance(exc, Cancelled):
                raise
            outcomes[index] = _failed(exc, job.ctx)
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
                outcomes[index] = _failed(exc, jobs[index].ctx)
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
        except PhotostyleError as exc:
            if isinstance(exc, Cancelled):
                raise
            outcomes[index] = _failed(exc, job.ctx)
    if any(isinstance(outcome, PhotostyleError) for outcome in outcomes):
        images.clear()
        stylized.clear()
        release_memory()
    return [(outcome, job.ctx) for outcome, job in zip(outcomes, jobs, strict=True)]  # type: ignore[misc]


def _failed(error: PhotostyleError, ctx: JobContext) -> PhotostyleError:
    """A photo's error as kept for its report: without the frames it came through, nor the photo's pixels.

    The frames hold the photo's bytes and every decoded copy (and, through this
    function's caller, the whole batch's): kept with the error until the garbage
    collector found the cycle, five failed 900 MB files held 2.5 GB.
    """
    drop_tracebacks(error)
    ctx.original = ctx.alpha = None
    return error


def publish(
    rendered: Rendered,
    request: JobRequest,
    host: PluginHost,
    resources: WorkerResources,
    *,
    ctx: JobContext | None = None,
    on_saved: Callable[[Path], None] | None = None,
) -> JobResult:
    """Write a rendered result and its sidecar, then tell ``job_finished``; return the record.

    ``on_saved`` is called right after the result has its final name (the daemon
    records it in the ledger there, so a crash after this point is completed at the
    next start, not redone). If the sidecar cannot be written, the result is removed
    again and an :class:`OutputError` says why: both are retried later.
    ``ctx`` is the worker's context when rendering happened in this process; for a
    result rendered elsewhere a fresh one is made, with the original decoded again
    for ``job_finished`` plugins (the gallery's thumbnails).
    """
    config = resources.config
    output_dir = request.output_dir or config.outbox / request.preset
    if ctx is None:
        ctx = new_context(request, resources)
        ctx.report = rendered.report
        if request.data is not None:
            try:
                ctx.original = decode_photo(request.data, str(request.source), config.limits.max_pixels).image
            except PhotostyleError:
                ctx.original = None  # rendered fine elsewhere; only the thumbnail will be missing
    clock = _Stopwatch()
    with _told_on_failure(host, ctx):
        try:
            output = clock.run("save", lambda: write_new_file(rendered.data, output_dir, request.source.stem,
                                                             rendered.suffix))
        except OSError as exc:
            raise OutputError(str(output_dir), exc.strerror or str(exc)) from exc
        assert isinstance(output, Path)
        result = JobResult(
            job_id=rendered.job_id,
            source=request.source,
            output=output,
            preset=request.preset,
            seconds=rendered.seconds + clock.total,
            timings={**rendered.timings, **clock.timings},
            report=rendered.report,
        )
        if on_saved is not None:
            on_saved(output)
        try:
            result.sidecar = clock.run("sidecar", lambda: write_sidecar(result, ctx))  # type: ignore[assignment]
        except OSError as exc:
            output.unlink(missing_ok=True)  # ours, named a moment ago: no result without its record
            raise OutputError(str(output_dir), f"sidecar not written ({exc.strerror or exc})") from exc
        result.timings["sidecar"] = clock.timings["sidecar"]
    host.notify("job_finished", fatal=False, ctx=ctx, result=result)
    return result


def run_jobs(
    requests: list[JobRequest],
    host: PluginHost,
    resources: WorkerResources,
    *,
    progress: ProgressSink | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[JobResult | PhotostyleError]:
    """Render and publish several photos of one preset in this process; a result or error each, in order."""
    results: list[JobResult | PhotostyleError] = []
    for (outcome, ctx), request in zip(render_jobs(requests, host, resources, progress=progress,
                                                   should_stop=should_stop), requests, strict=True):
        if isinstance(outcome, Rendered):
            try:
                outcome = publish(outcome, request, host, resources, ctx=ctx)
            except PhotostyleError as exc:
                outcome = _failed(exc, ctx)
        results.append(outcome)
    return results


def run_job(
    request: JobRequest,
    host: PluginHost,
    resources: WorkerResources,
    *,
    progress: ProgressSink | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> JobResult:
    """Run one photo through every stage and save it; raise PhotostyleError on failure."""
    [outcome] = run_jobs([request], host, resources, progress=progress, should_stop=should_stop)
    if isinstance(outcome, PhotostyleError):
        raise outcome
    return outcome
