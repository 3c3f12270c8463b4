"""Built-in postprocess: resize the result to the preset's ``resize`` long edge (Lanczos, aspect kept).

Style transfer runs at the working ``size``; ``resize`` sets the delivered size
(for example render at 512 px and deliver at 1024 px). Unset keeps the working size.
"""

from __future__ import annotations

from typing import Annotated, Any

from PIL import Image
from pydantic import Field

from pipeline.job.context import JobContext
from pipeline.hookspecs import hookimpl
from pipeline.job.imageio import resize_long_edge


@hookimpl
def preset_options() -> dict[str, tuple[Any, Any]]:
    return {
        "resize": (
            Annotated[int, Field(ge=16, le=32768)] | None,
            Field(None, description="Output long edge in px; unset keeps the working size."),
        )
    }


@hookimpl
def postprocess(image: Image.Image, ctx: JobContext) -> Image.Image:
    long_edge = getattr(ctx.preset, "resize", None)
    return image if long_edge is None else resize_long_edge(image, long_edge)
