"""Built-in postprocess: a text or image watermark, placed in a corner or the centre.

Sizes are relative to the result's long edge, so one preset watermarks a 512 px
preview and a 4000 px print alike. Text uses Pillow's bundled scalable font
unless ``font`` names a TrueType/OpenType file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageDraw, ImageFont
from pydantic import Field, model_validator

from pipeline.config import ConfigPath, Strict
from pipeline.job.context import JobContext
from pipeline.hookspecs import hookimpl

Position = Literal["top-left", "top-right", "bottom-left", "bottom-right", "center"]


class WatermarkOptions(Strict):
    """A preset's ``watermark`` section: exactly one of ``text`` or ``image``."""

    text: str | None = Field(None, min_length=1, description="Text to draw.")
    image: ConfigPath | None = Field(None, description="Image (with alpha) to overlay, relative to the config.")
    position: Position = Field("bottom-right", description="Corner or centre.")
    opacity: float = Field(0.6, ge=0, le=1, description="0 invisible … 1 opaque.")
    margin: float = Field(0.02, ge=0, le=0.5, description="Distance from the edges, as a fraction of the long edge.")
    size: float = Field(
        0.05, gt=0, le=1, description="Text height, or the image's width, as a fraction of the long edge."
    )
    color: str = Field("white", description="Text colour (a CSS colour name or #rrggbb).")
    font: ConfigPath | None = Field(None, description="TrueType/OpenType font file; default: Pillow's bundled font.")

    @model_validator(mode="after")
    def _one_source(self) -> WatermarkOptions:
        if (self.text is None) == (self.image is None):
            raise ValueError("give exactly one of 'text' or 'image'")
        if self.image is not None and not self.image.is_file():
            raise ValueError(f"watermark image not found: {self.image}")
        if self.font is not None and not self.font.is_file():
            raise ValueError(f"font not found: {self.font}")
        return self


def _text_layer(options: WatermarkOptions, long_edge: int) -> Image.Image:
    pixels = max(6, round(options.size * long_edge))
    font = ImageFont.truetype(str(options.font), pixels) if options.font else ImageFont.load_default(size=pixels)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), options.text or "", font=font)
    layer = Image.new("RGBA", (max(1, right - left), max(1, bottom - top)), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((-left, -top), options.text or "", font=font, fill=options.color)
    return layer


def _image_layer(path: Path, options: WatermarkOptions, long_edge: int) -> Image.Image:
    with Image.open(path) as mark:
        mark = mark.convert("RGBA")
    width = max(1, round(options.size * long_edge))
    height = max(1, round(mark.height * width / mark.width))
    return mark.resize((width, height), Image.Resampling.LANCZOS)


def _place(canvas: tuple[int, int], layer: tuple[int, int], position: str, margin: int) -> tuple[int, int]:
    (width, height), (w, h) = canvas, layer
    if position == "center":
        return (width - w) // 2, (height - h) // 2
    x = margin if position.endswith("left") else width - w - margin
    y = margin if position.startswith("top") else height - h - margin
    return x, y


def apply_watermark(image: Image.Image, options: WatermarkOptions) -> Image.Image:
    long_edge = max(image.size)
    layer = _text_layer(options, long_edge) if options.text else _image_layer(options.image, options, long_edge)  # type: ignore[arg-type]
    alpha = layer.getchannel("A").point(lambda a: round(a * options.opacity))
    layer.putalpha(alpha)
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    overlay.paste(layer, _place(image.size, layer.size, options.position, round(options.margin * long_edge)))
    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")


@hookimpl
def preset_options() -> dict[str, tuple[Any, Any]]:
    return {"watermark": (WatermarkOptions | None, Field(None, description="Text or image watermark; unset: none."))}


@hookimpl
def postprocess(image: Image.Image, ctx: JobContext) -> Image.Image:
    options = getattr(ctx.preset, "watermark", None)
    return image if options is None else apply_watermark(image, options)
