"""One photo through the stages: load, preprocess, stylize, postprocess, save, then its sidecar.

This is the single code path behind ``photostyle process`` and the daemon. It
knows the stage *hooks*, never a particular stage: which plugins run is the
plugin host's business. Failures become a :class:`~pipeline.errors.PhotostyleError`
naming the stage (and plugin), after the ``job_failed`` hook has been told.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
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


def run_job(
    request: JobRequest,
    host: PluginHost,
    resources: WorkerResources,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> JobResult:
    """Run one photo through every stage and save it; raise PhotostyleError on failure."""
    config = resources.config
    ctx = JobContext(
        job_id=request.job_id or uuid.uuid4().hex[:12],
        source=request.source,
        preset_name=request.preset,
        preset=config.presets[request.preset],
        resources=resources,
    )
    if progress is not None:
        ctx.progress = progress
    if should_stop is not None:
        ctx.should_stop = should_stop
    output_dir = request.output_dir or config.outbox / request.preset
    clock = _Stopwatch()
    try:
        host.notify("job_started", fatal=True, ctx=ctx)
        image = clock.run("load", lambda: _load(ctx))
        image = clock.run("preprocess", lambda: host.chain("preprocess", image, ctx=ctx))
        image = clock.run("stylize", lambda: _stylize(host, image, ctx))
        image = clock.run("postprocess", lambda: host.chain("postprocess", image, ctx=ctx))
        output = clock.run("save", lambda: _save(image, ctx, output_dir))
    except Cancelled:
        raise
    except PhotostyleError as exc:
        host.notify("job_failed", fatal=False, ctx=ctx, error=str(exc))
        raise
    except OSError as exc:  # the outbox could not be written: disk full, permission denied
        error = OutputError(str(output_dir), exc.strerror or str(exc))
        host.notify("job_failed", fatal=False, ctx=ctx, error=str(error))
        raise error from exc
    result = JobResult(
        job_id=ctx.job_id,
        source=request.source,
        output=output,  # type: ignore[arg-type]
        preset=request.preset,
        seconds=clock.total,
        timings=clock.timings,
        report=ctx.report,
    )
    result.sidecar = clock.run("sidecar", lambda: _record(result, ctx))  # type: ignore[assignment]
    host.notify("job_finished", fatal=False, ctx=ctx, result=result)
    return result
