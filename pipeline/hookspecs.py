"""Every hook a photostyle plugin can implement, in the order a photo meets them.

A plugin is any module or object with functions marked ``@hookimpl`` whose names
and argument names match the specs below (a plugin may take fewer arguments than
the spec offers). One photo flows::

    prepare (once per preset) -> job_started -> [photostyle loads the photo] -> preprocess*
        -> stylize (stylize_batch for several photos at once) -> postprocess*
        -> [photostyle encodes and saves the result] -> job_finished   (or job_failed at any point)

Loading and saving are photostyle's own steps, not hooks: ``ctx.original`` holds
the photo as loaded from ``preprocess`` on, and ``job_finished`` gets the saved
file in ``result.output``. An engine may ask ``style_preparation`` while it
prepares and stylises (see there).

How each kind of hook is called, and in which order:

- *Notifications* (``prepare``, ``job_started``, ``job_finished``, ``job_failed``)
  are called through pluggy (``pm.hook.NAME(...)``) in pluggy's order:
  ``tryfirst`` implementations, then the others with the last registered first
  (``plugins.paths``, then entry points, then built-ins), then ``trylast`` ones.
  A plugin that raises in ``prepare`` or ``job_started`` stops the call there
  (the start is refused, the photo fails) with the plugin's name in the error;
  one that raises in ``job_finished`` or ``job_failed`` is logged with its name,
  and the plugins after it are still told.
- *First result* hooks (``stylize``, ``stylize_batch``, ``style_preparation``) run in
  pluggy's order too, until one returns something other than ``None``.
- *Chains* (``preprocess``, ``postprocess``, marked ``*`` above): each implementation
  receives the previous one's image and returns the next. They run ``tryfirst``
  implementations first, then the rest **in the order plugins were registered**
  (built-ins, entry points, ``plugins.paths``), then ``trylast`` ones: the
  opposite of pluggy's order, on purpose. A chain's order is the order in which
  stages change the image, and registration order is the documented stage
  order: the built-ins' colour preservation, resize and watermark, then your
  stages, which see the built-ins' result and have the last word.
- ``preset_options`` is collected from every plugin in registration order.

Chains, ``stylize``, ``stylize_batch`` and ``preset_options`` are called one
implementation at a time, so that a failure and the answer (``stylized_by`` in
the report) carry the plugin's name. Implementations may be ordered with
``tryfirst``/``trylast``; no hook takes wrappers (``wrapper=True``,
``hookwrapper=True``): a plugin that declares one is refused when it is
registered, naming the plugin and the hook, instead of being silently skipped.

An exception from a plugin fails that photo with the plugin's name in the
error (a notification after the save is only logged); it never stops the program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from PIL import Image

    from pipeline.job.context import JobContext, JobResult, StylePreparation, WorkerResources
    from pipeline.job.training import TrainedModel, TrainingCallbacks, TrainingRequest

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


@hookspec(firstresult=True)
def style_preparation(preset: Any) -> Callable[[Image.Image], StylePreparation] | None:
    """Firstresult, asked by a style-transfer engine: should it change what its network sees for this preset?

    Return ``None`` to leave the photo and the style images alone, or a function
    that takes the photo at the engine's working size and returns a
    :class:`~pipeline.job.context.StylePreparation`: how to change the photo and the
    style images, and the key that names what the changed style depends on. The
    built-in ``color`` plugin answers for ``preserve_color: histogram`` (the style
    recoloured to the photo's colours) and ``luminance_transfer`` (both reduced
    to luminance). The built-in engine asks ``ctx.resources.hook.style_preparation(preset=...)``
    in ``prepare`` (an answer means its style targets depend on each photo, so
    none are made in advance) and in ``stylize``; with no plugin answering, it
    does no colour work.
    """


@hookspec(firstresult=True)
def train_model(preset: Any, request: TrainingRequest, resources: WorkerResources,
                callbacks: TrainingCallbacks) -> TrainedModel | None:
    """Firstresult, asked by ``photostyle train``: distil the preset into a feed-forward network.

    The built-in ``vgg_style`` plugin trains the network of Johnson et al. (2016) on
    the preset's own objective and renders with it for ``engine: fast``. Return
    ``None`` when the preset is not yours. Report progress and checkpoints through
    ``callbacks``, poll ``callbacks.should_stop()``, and resume from
    ``request.checkpoint`` when it is set.
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
    """Notification: the output is saved. A raise here is logged, not fatal; the other plugins are still told."""


@hookspec
def job_failed(ctx: JobContext, error: str) -> None:
    """Notification: the photo failed; ``error`` is the one-line reason. A raise here is logged, not fatal."""
