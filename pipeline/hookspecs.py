"""Every hook a photostyle plugin can implement, in the order a photo meets them.

A plugin is any module or object with functions marked ``@hookimpl`` whose names
and argument names match the specs below (a plugin may take fewer arguments than
the spec offers). One photo flows::

    prepare (once per preset) -> job_started -> load -> preprocess* -> stylize
        -> postprocess* -> save -> job_finished   (or job_failed at any point)

``*`` marks a chain: each implementation receives the previous one's image and
returns the next. Chains run ``tryfirst`` implementations first, then the rest in
the order plugins were registered (built-ins, entry points, ``plugins.paths``),
then ``trylast`` ones. Wrappers are not supported on chain hooks.

An exception from a plugin fails that photo with the plugin's name in the
error; it never stops the program.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from PIL import Image

    from pipeline.context import JobContext, JobResult, WorkerResources

PROJECT = "photostyle"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorate a plugin's functions with this (``from pipeline import hookimpl``).
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def preset_options() -> dict[str, tuple[Any, Any]]:
    """Contribute keys to every preset, validated with the rest of the config.

    Called once while the config loads. Return ``{key: (annotation, default)}``:
    the annotation is any pydantic type (often a ``pydantic.BaseModel`` subclass
    for a section of options), the default a value or ``pydantic.Field(...)``.
    Read the validated value in later hooks as ``getattr(ctx.preset, key)``.
    Keys must not clash with the core's preset keys or another plugin's.
    """


@hookspec
def prepare(preset_name: str, preset: Any, resources: WorkerResources) -> None:
    """Get ready to run photos of a preset: load models, warm caches.

    Called by the worker once per preset before its first photo (the daemon calls
    it for the default preset at start). Raise a ``PhotostyleError`` (for example
    ``WeightsError``) to refuse to start: nothing is processed.
    """


@hookspec
def job_started(ctx: JobContext) -> None:
    """Notification: a photo is about to be loaded. Raising fails the photo."""


@hookspec
def preprocess(image: Image.Image, ctx: JobContext) -> Image.Image:
    """Chain: transform the loaded photo (RGB, upright, full size) before style transfer.

    Receives the previous stage's image and returns the image for the next one
    (return the same image to leave it alone). ``ctx.original`` is the photo as loaded.
    """


@hookspec(firstresult=True)
def stylize(image: Image.Image, ctx: JobContext) -> Image.Image | None:
    """Firstresult: turn the preprocessed photo into artwork.

    The first implementation that returns an image wins; return ``None`` to
    pass. The built-in ``vgg_style`` plugin implements the Gatys et al. VGG19
    engine; a plugin may replace it (for example a feed-forward network). Put
    loss figures in ``ctx.report`` and report progress with ``ctx.progress``.
    """


@hookspec(firstresult=True)
def stylize_batch(images: list[Image.Image], ctxs: list[JobContext]) -> list[Image.Image] | None:
    """Firstresult: stylise several photos of one preset together (one optimisation on a GPU).

    Called when a worker runs a batch (the daemon on a GPU, ``watch.batch_size``);
    return one image per input, in order, or ``None`` to decline, and each photo
    then goes through ``stylize`` on its own. The built-in engine batches photos
    whose working sizes match.
    """


@hookspec
def postprocess(image: Image.Image, ctx: JobContext) -> Image.Image:
    """Chain: adjust the stylised image before it is saved.

    Built-ins run in this order: ``color`` (``preserve_color``), ``resize``,
    ``watermark``; plugins from entry points and ``plugins.paths`` follow.
    ``ctx.original`` holds the photo as loaded, for stages that need it.
    """


@hookspec
def job_finished(ctx: JobContext, result: JobResult) -> None:
    """Notification: the output is saved. A raise here is logged, not fatal."""


@hookspec
def job_failed(ctx: JobContext, error: str) -> None:
    """Notification: the photo failed; ``error`` is the one-line reason. A raise here is logged."""
