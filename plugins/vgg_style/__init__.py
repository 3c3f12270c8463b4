"""Built-in ``stylize``: neural style transfer by optimisation (Gatys, Ecker & Bethge 2016) on VGG19.

Only the hooks live here; the work is in :mod:`plugins.vgg_style.transfer`, imported
on the first call. Every command loads the plugins, but only those that stylise
need torch, whose import alone takes 2 to 3 s on a CPU: ``photostyle check``,
``status`` or ``service install`` answer without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from pipeline.hookspecs import hookimpl

if TYPE_CHECKING:
    from PIL import Image

    from pipeline.job.context import JobContext, WorkerResources
    from pipeline.job.training import TrainedModel, TrainingCallbacks, TrainingRequest

Engine = Literal["optimize", "fast", "fast+refine"]


@hookimpl
def preset_options() -> dict[str, tuple[Any, Any]]:
    return {
        "engine": (
            Engine,
            Field("optimize", description="optimize (VGG19 optimisation, any style at once) | fast (the preset's "
                  "trained network at the photo's own resolution: `photostyle train PRESET`) | fast+refine "
                  "(the optimisation, started from the network's output). Without a current model: optimize."),
        )
    }


@hookimpl
def prepare(preset_name: str, preset: Any, resources: WorkerResources) -> None:
    """Load the network and the preset's style targets before the first photo.

    Missing weights stop the run before any photo is touched; the daemon calls
    this for the default preset at start, so its first photo spends nothing on style.
    """
    from plugins.vgg_style import transfer

    transfer.prepare(preset_name, preset, resources)


@hookimpl
def stylize(image: Image.Image, ctx: JobContext) -> Image.Image:
    """The preset's engine: its trained network (``fast``, ``fast+refine``) when it has a current one, else the
    optimisation at the preset's size (reduced to fit the memory limit); out of memory, retry at 3/4 of it."""
    if ctx.preset.engine != "optimize":
        from plugins.vgg_style import fast

        result = fast.stylize(image, ctx)
        if result is not None:
            return result
    from plugins.vgg_style import transfer

    return transfer.stylize(image, ctx)


@hookimpl
def stylize_batch(images: list[Image.Image], ctxs: list[JobContext]) -> list[Image.Image] | None:
    """Batch photos whose working sizes match; decline (photo by photo) otherwise or when memory runs out."""
    from plugins.vgg_style import transfer

    return transfer.stylize_batch(images, ctxs)


@hookimpl
def train_model(preset: Any, request: TrainingRequest, resources: WorkerResources,
                callbacks: TrainingCallbacks) -> TrainedModel:
    """Distil the preset into the feed-forward network of Johnson et al. (2016), on its own objective."""
    from plugins.vgg_style import fast

    return fast.train_model(preset, request, resources, callbacks)
