"""Built-in postprocess: keep the photo's colours (Gatys, Bethge, Hertzmann & Shechtman 2016,
"Preserving Color in Neural Artistic Style Transfer").

``preserve_color`` (per preset):

- ``none`` — the result keeps the style's colours.
- ``luminance`` — luminance-only transfer: the result's luminance (Y of YCbCr),
  shifted and scaled to the photo's mean and spread of luminance, combined with
  the photo's own chroma (Cb, Cr). The brushwork comes from the style, every
  colour from the photo.
- ``histogram`` — colour-histogram matching: each RGB channel of the result is
  remapped so its distribution (histogram) equals the photo's. Keeps more of the
  style's local colour variation than ``luminance`` while adopting the photo's palette.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import Field

from pipeline.context import JobContext
from pipeline.hookspecs import hookimpl

ColorMode = Literal["none", "luminance", "histogram"]


def luminance_transfer(stylized: Image.Image, photo: Image.Image) -> Image.Image:
    """Stylised luminance, matched to the photo's mean and standard deviation, with the photo's chroma."""
    y_styl = np.asarray(stylized.convert("YCbCr"), dtype=np.float64)[..., 0]
    ycbcr_photo = np.asarray(photo.convert("YCbCr"), dtype=np.float64)
    y_photo = ycbcr_photo[..., 0]
    spread = y_styl.std()
    y = (y_styl - y_styl.mean()) * (y_photo.std() / spread if spread > 1e-6 else 1.0) + y_photo.mean()
    out = np.stack([y, ycbcr_photo[..., 1], ycbcr_photo[..., 2]], axis=-1)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode="YCbCr").convert("RGB")


def _match_channel(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Remap 8-bit values so the source's cumulative histogram follows the reference's."""
    source_cdf = np.cumsum(np.bincount(source.ravel(), minlength=256)) / source.size
    # Interpolate over the values the photo actually has, not all 256 bins: unused bins make the
    # reference CDF flat, and np.interp on a flat stretch picks its far end, so the result's
    # brightest pixels (quantile 1.0) became 255 and the darkest fell below the photo's minimum,
    # whatever the photo's own range was.
    reference_values, reference_counts = np.unique(reference.ravel(), return_counts=True)
    reference_cdf = np.cumsum(reference_counts) / reference.size
    mapping = np.interp(source_cdf, reference_cdf, reference_values)  # value -> value with the same quantile
    return np.clip(np.rint(mapping), 0, 255).astype(np.uint8)[source]


def match_histograms(stylized: Image.Image, photo: Image.Image) -> Image.Image:
    """Per-channel histogram matching of the result to the photo."""
    source = np.asarray(stylized.convert("RGB"))
    reference = np.asarray(photo.convert("RGB"))
    channels = [_match_channel(source[..., c], reference[..., c]) for c in range(3)]
    return Image.fromarray(np.stack(channels, axis=-1), mode="RGB")


@hookimpl
def preset_options() -> dict[str, tuple[Any, Any]]:
    return {
        "preserve_color": (
            ColorMode,
            Field("none", description="Keep the photo's colours: none | luminance | histogram."),
        )
    }


@hookimpl
def postprocess(image: Image.Image, ctx: JobContext) -> Image.Image:
    mode = getattr(ctx.preset, "preserve_color", "none")
    if mode == "none" or ctx.original is None:
        return image
    photo = ctx.original.resize(image.size, Image.Resampling.LANCZOS)
    return luminance_transfer(image, photo) if mode == "luminance" else match_histograms(image, photo)
