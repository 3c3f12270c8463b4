"""Built-in ``job_finished``: thumbnails for the result, then its card added to ``outbox/index.html``.

Thumbnails are made now, while the original is still in memory (``ctx.original``;
the daemon moves the file away afterwards) and the style image is the one that
was used. Only results inside the configured outbox are shown: ``process -o DIR``
and ``photostyle preview`` (which renders into a temp folder) leave the gallery
alone. A gallery that cannot be written never fails the job: it is a view of the
results, and the result itself is already saved. The page is updated from an
index of cards (:func:`pipeline.gallery.page.add_to_gallery`), so a job reads its own
sidecar only, however many results the outbox holds.
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image

from pipeline.job.context import JobContext, JobResult
from pipeline.errors import PhotostyleError
from pipeline.gallery.page import add_to_gallery
from pipeline.hookspecs import hookimpl
from pipeline.job.imageio import load_photo
from pipeline.files.textsafe import printable
from pipeline.gallery.thumbnails import is_inside, thumbnail_paths, write_thumbnail


def _sources(ctx: JobContext, result: JobResult) -> dict[str, Callable[[], Image.Image | None]]:
    max_pixels = ctx.config.limits.max_pixels
    styles = ctx.preset.style_images
    return {
        "original": lambda: ctx.original,
        "style": lambda: load_photo(styles[0].image, max_pixels).image if styles else None,
        "result": lambda: load_photo(result.output, max_pixels).image,
    }


def write_job_thumbnails(ctx: JobContext, result: JobResult) -> None:
    """The three thumbnails of one result; one that cannot be made is logged and shown as missing."""
    targets = thumbnail_paths(ctx.config.outbox, result.output)
    for kind, source in _sources(ctx, result).items():
        try:
            image = source()
            if image is not None:
                write_thumbnail(image, targets[kind])
        except (OSError, ValueError, PhotostyleError) as exc:
            ctx.log.warning("%s: %s thumbnail not written: %s", printable(result.output), kind, printable(exc))


@hookimpl
def job_finished(ctx: JobContext, result: JobResult) -> None:
    outbox = ctx.config.outbox
    if result.sidecar is None or not is_inside(result.output, outbox):
        return  # the gallery lists results with a sidecar in the outbox only
    try:
        write_job_thumbnails(ctx, result)
        add_to_gallery(outbox, result.sidecar)
    except (OSError, ValueError, PhotostyleError) as exc:  # ValueError: a name or index nothing could use
        reason = getattr(exc, "strerror", None) or exc
        ctx.log.warning("%s: gallery not updated: %s", printable(outbox), printable(reason))
