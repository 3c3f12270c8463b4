"""Tests for the built-in postprocess plugins (colour, resize, watermark) and what reaches the output file.

The pixel effects are checked on the module functions directly; the end-to-end
tests run ``photostyle process`` in-process through the real job chain (random
weights, 32 px, 3 evaluations) and inspect the written file. Runs are seeded and
deterministic, so a ``preserve_color: none`` run gives the very image the colour
stage receives in a run with another mode.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import synthetic_photo, synthetic_style, write_config
from PIL import Image, ImageCms
from pydantic import ValidationError

import plugins.color
import plugins.resize
from pipeline.cli import main
from pipeline.job.context import JobContext, WorkerResources
from pipeline.job.imageio import load_photo
from plugins.color import luminance, luminance_after, match_channels, with_photo_chroma
from plugins.watermark import WatermarkOptions, apply_watermark

ORIENTATION = 0x0112
MAKE = 0x010F
MODEL = 0x0110
WORKING_SIZE = 32  # write_config's preset ``size``
IMAGE_SUFFIXES = {".jpg", ".png", ".webp"}
# Shared end-to-end runs: noise init, so the stylised structure is clearly not the photo's; PNG, lossless.
PNG_NOISE: dict[str, Any] = {"init": "noise", "output": {"format": "png"}}
POSITIONS = ["top-left", "top-right", "bottom-left", "bottom-right", "center"]


@pytest.fixture(autouse=True)
def _restore_pillow_pixel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_photo sets Pillow's process-wide MAX_IMAGE_PIXELS; put it back so later tests are unaffected."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


# --- helpers -----------------------------------------------------------------------------------


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def ycbcr(image: Image.Image) -> np.ndarray:
    return arr(image.convert("RGB").convert("YCbCr"))


def muted(image: Image.Image, keep: float = 0.6) -> Image.Image:
    """Pull colours toward mid-grey, like most real photos: saturated enough to test colour, in gamut."""
    return Image.fromarray(np.clip(arr(image) * keep + 128 * (1 - keep), 0, 255).astype(np.uint8))


def photo_and_stylized(size: tuple[int, int] = (64, 48)) -> tuple[Image.Image, Image.Image]:
    """A photo and a plausible stylised result: its own (stripy) brushwork and colours, some noise."""
    photo = muted(synthetic_photo(size))
    rng = np.random.default_rng(3)
    stylized = arr(muted(synthetic_style(size), 0.5)) * 0.8 + rng.normal(0, 12, (size[1], size[0], 3))
    return photo, Image.fromarray(np.clip(stylized, 0, 255).astype(np.uint8))


def context(preset: Any, original: Image.Image | None = None) -> JobContext:
    return JobContext(
        job_id="test",
        source=Path("photo.jpg"),
        preset_name="test",
        preset=preset,
        resources=WorkerResources(config=None, device="cpu"),
        original=original,
    )


def changed(before: Image.Image, after: Image.Image) -> np.ndarray:
    """Boolean (h, w) mask of pixels that differ at all."""
    return np.any(np.asarray(before) != np.asarray(after), axis=-1)


def corner_boxes(size: tuple[int, int], fraction: float = 0.3) -> dict[str, tuple[slice, slice]]:
    """(rows, cols) slices of the four corner regions, ``fraction`` of each side."""
    width, height = size
    w, h = int(width * fraction), int(height * fraction)
    return {
        "top-left": (slice(0, h), slice(0, w)),
        "top-right": (slice(0, h), slice(width - w, width)),
        "bottom-left": (slice(height - h, height), slice(0, w)),
        "bottom-right": (slice(height - h, height), slice(width - w, width)),
    }


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the True pixels, right/bottom exclusive."""
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def process(tmp_path: Path, photo: Path, name: str, preset: dict[str, Any]) -> Path:
    """Run ``photostyle process`` in-process with a tiny config; return the one output image.

    One evaluation is plenty: these tests look at what the stages after ``stylize`` do.
    """
    config = write_config(tmp_path / f"project-{name}", preset={"iterations": 1, **preset})
    outdir = tmp_path / f"out-{name}"
    assert main(["process", str(photo), "-c", str(config), "-o", str(outdir)]) == 0
    # Only the image: other files (a sidecar report, say) may sit next to it.
    outputs = [path for path in outdir.iterdir() if path.suffix in IMAGE_SUFFIXES]
    assert len(outputs) == 1, list(outdir.iterdir())
    return outputs[0]


def read_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


class SharedRuns:
    """Runs on one lossless photo, shared by the module's tests and each done once (they take a while).

    PNG in and out, so the tests see exactly the pixels the job loads and writes.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.photo = root / "photos" / "garden.png"
        self.photo.parent.mkdir(parents=True)
        muted(synthetic_photo((64, 48))).save(self.photo)
        self._outputs: dict[str, Image.Image] = {}

    def run(self, name: str, preset: dict[str, Any]) -> Image.Image:
        if name not in self._outputs:
            self._outputs[name] = read_rgb(process(self.root, self.photo, name, {**PNG_NOISE, **preset}))
        return self._outputs[name]

    def original(self, size: tuple[int, int]) -> Image.Image:
        """The photo as the job loaded it, at the result's size (what the colour stage compares with)."""
        return load_photo(self.photo, 10_000_000).image.resize(size, Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> SharedRuns:
    return SharedRuns(tmp_path_factory.mktemp("shared"))


# --- colour: luminance (after the transfer; the modes that act before it are in test_color.py) ---


def check_luminance_result(result: Image.Image, photo: Image.Image, stylized: Image.Image) -> None:
    out, src, sty = ycbcr(result), ycbcr(photo), ycbcr(stylized)
    # Every colour from the photo: chroma equal within rounding.
    assert np.abs(out[..., 1:] - src[..., 1:]).mean() < 2
    # Luminance shifted and scaled to the photo's level and contrast...
    assert abs(out[..., 0].mean() - src[..., 0].mean()) < 2
    assert abs(out[..., 0].std() - src[..., 0].std()) < 2
    # ...but its structure (the brushwork) is the stylised image's, not the photo's.
    assert np.corrcoef(out[..., 0].ravel(), sty[..., 0].ravel())[0, 1] > 0.98
    assert np.abs(out[..., 0] - src[..., 0]).mean() > 10


def test_luminance_after_keeps_photo_colours_and_stylised_structure() -> None:
    photo, stylized = photo_and_stylized()
    result = luminance_after(stylized, photo)
    assert result.mode == "RGB" and result.size == photo.size
    check_luminance_result(result, photo, stylized)


def test_luminance_after_of_a_flat_result_does_not_divide_by_zero() -> None:
    photo, _ = photo_and_stylized()
    result = luminance_after(Image.new("RGB", photo.size, (90, 90, 90)), photo)
    y = ycbcr(result)[..., 0]
    assert np.isfinite(y).all() and abs(y.mean() - ycbcr(photo)[..., 0].mean()) < 2


# --- colour: channels (per-channel histogram matching) --------------------------------------------


def check_histograms_match(
    result: Image.Image, photo: Image.Image, quantiles: tuple[float, ...] = (0, 1, 5, 25, 50, 75, 95, 99, 100)
) -> None:
    out, ref = arr(result), arr(photo)
    for channel in range(3):
        got, want = np.sort(out[..., channel].ravel()), np.sort(ref[..., channel].ravel())
        assert np.abs(got - want).mean() < 1.5, channel
        assert np.abs(np.percentile(got, quantiles) - np.percentile(want, quantiles)).max() <= 4, channel


def test_match_channels_adopts_the_photos_distribution_per_channel() -> None:
    photo, stylized = photo_and_stylized()
    result = match_channels(stylized, photo)
    assert result.mode == "RGB" and result.size == photo.size
    check_histograms_match(result, photo)
    assert np.abs(arr(result) - arr(photo)).mean() > 10  # a remapped result, not a copy of the photo
    # Monotonic remapping: the result's local variation still comes from the stylised image.
    for channel in range(3):
        assert np.corrcoef(arr(result)[..., channel].ravel(), arr(stylized)[..., channel].ravel())[0, 1] > 0.9


def test_match_channels_stays_within_the_photos_range() -> None:
    """The brightest result pixels get the photo's brightest value, not pure white (and likewise dark)."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(40, 200, (30, 40, 3), dtype=np.uint8))
    stylized = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    result = arr(match_channels(stylized, photo))
    assert result.min() == 40 and result.max() == 199


# --- colour: the hook ---------------------------------------------------------------------------


def test_color_none_leaves_the_result_unchanged() -> None:
    photo, stylized = photo_and_stylized()
    before = np.asarray(stylized).copy()
    result = plugins.color.postprocess(stylized, context(SimpleNamespace(preserve_color="none"), original=photo))
    assert np.array_equal(np.asarray(result), before)


def test_color_histogram_hook_leaves_the_result_alone() -> None:
    """``histogram`` is done before the transfer (the style is recoloured); nothing is left to do after."""
    photo, stylized = photo_and_stylized()
    result = plugins.color.postprocess(stylized, context(SimpleNamespace(preserve_color="histogram"), original=photo))
    assert np.array_equal(np.asarray(result), np.asarray(stylized))


FINISH = {
    "luminance_transfer": lambda result, photo: with_photo_chroma(luminance(result), photo),
    "luminance": luminance_after,
    "channels": match_channels,
}


@pytest.mark.parametrize("mode", sorted(FINISH))
def test_color_hook_uses_the_photo_at_the_results_size(mode: str) -> None:
    """The job keeps the full-size photo; the hook must scale it to the (smaller) stylised result."""
    photo, stylized = photo_and_stylized((128, 96))
    small = stylized.resize((64, 48), Image.Resampling.LANCZOS)
    result = plugins.color.postprocess(small, context(SimpleNamespace(preserve_color=mode), original=photo))
    assert result.size == (64, 48)
    reference = photo.resize((64, 48), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(result), np.asarray(FINISH[mode](small, reference)))
    assert not np.array_equal(np.asarray(result), np.asarray(small))


# --- resize ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "expected"), [((64, 48), (200, 150)), ((48, 64), (150, 200)), ((400, 300), (200, 150))])
def test_resize_hook_sets_the_long_edge(size: tuple[int, int], expected: tuple[int, int]) -> None:
    result = plugins.resize.postprocess(synthetic_photo(size), context(SimpleNamespace(resize=200)))
    assert result.size == expected


def test_resize_hook_unset_keeps_the_working_size() -> None:
    image = synthetic_photo((64, 48))
    result = plugins.resize.postprocess(image, context(SimpleNamespace(resize=None)))
    assert result.size == (64, 48) and np.array_equal(np.asarray(result), np.asarray(image))


# --- watermark ---------------------------------------------------------------------------------


def text_mark(**options: Any) -> WatermarkOptions:
    return WatermarkOptions(**{"text": "mark", "size": 0.1, "opacity": 1.0, **options})


@pytest.mark.parametrize("position", POSITIONS)
def test_text_watermark_only_touches_its_position(position: str) -> None:
    image = muted(synthetic_photo((240, 160)))
    result = apply_watermark(image, text_mark(position=position, margin=0.05))
    assert result.mode == "RGB" and result.size == image.size
    mask = changed(image, result)
    assert mask.sum() > 50, "the watermark is visible"
    boxes = corner_boxes(image.size)
    for name, (rows, cols) in boxes.items():
        if name != position:
            assert not mask[rows, cols].any(), f"{position} watermark changed the {name} corner"
    left, top, right, bottom = bbox(mask)
    margin = round(0.05 * 240)
    if position == "center":
        assert abs((left + right) / 2 - 120) <= 4 and abs((top + bottom) / 2 - 80) <= 4
    else:
        rows, cols = boxes[position]
        assert mask[rows, cols].sum() == mask.sum(), "everything it drew is in its corner"
        x_edge = left if position.endswith("left") else 240 - right
        y_edge = top if position.startswith("top") else 160 - bottom
        assert margin - 1 <= x_edge <= margin + 3 and margin - 1 <= y_edge <= margin + 3, (x_edge, y_edge)


def test_watermark_opacity_zero_changes_nothing() -> None:
    image = synthetic_photo((120, 80))
    result = apply_watermark(image, text_mark(opacity=0.0))
    assert np.array_equal(np.asarray(result), np.asarray(image))


def test_higher_watermark_opacity_changes_pixels_more() -> None:
    image = muted(synthetic_photo((120, 80)))
    effect = {
        opacity: np.abs(arr(apply_watermark(image, text_mark(opacity=opacity))) - arr(image)).sum()
        for opacity in (0.2, 0.5, 0.9)
    }
    assert 0 < effect[0.2] < effect[0.5] < effect[0.9]
    assert 3 < effect[0.9] / effect[0.2] < 6  # roughly proportional to the opacity


def test_watermark_scales_with_the_image() -> None:
    heights = {}
    for long_edge in (150, 300, 600):
        image = muted(synthetic_photo((long_edge, long_edge * 2 // 3)))
        left, top, right, bottom = bbox(changed(image, apply_watermark(image, text_mark(size=0.08))))
        heights[long_edge] = (right - left, bottom - top)
    for small, large in [(150, 300), (300, 600)]:
        for axis in (0, 1):
            assert 1.7 < heights[large][axis] / heights[small][axis] < 2.3, heights


def write_logo(path: Path) -> Path:
    """A 40x40 opaque red square with a fully transparent 20x20 hole (hidden colour green)."""
    logo = Image.new("RGBA", (40, 40), (255, 0, 0, 255))
    logo.paste((0, 255, 0, 0), (10, 10, 30, 30))
    logo.save(path)
    return path


def test_image_watermark_blends_the_opaque_part_and_leaves_the_hole(tmp_path: Path) -> None:
    image = muted(synthetic_photo((200, 120)))
    opacity = 0.5
    options = WatermarkOptions(
        image=write_logo(tmp_path / "logo.png"), position="bottom-right", size=0.2, margin=0.05, opacity=opacity
    )
    result = arr(apply_watermark(image, options))
    before = arr(image)
    x, y = 200 - 40 - 10, 120 - 40 - 10  # 40 px wide (0.2 x 200), 10 px margin (0.05 x 200)

    ring = np.zeros((120, 200), dtype=bool)
    ring[y : y + 40, x : x + 40] = True
    ring[y + 10 : y + 30, x + 10 : x + 30] = False
    expected = before * (1 - opacity) + np.array([255, 0, 0]) * opacity
    assert np.abs(result[ring] - expected[ring]).max() <= 2  # red blended at half strength
    hole = (slice(y + 11, y + 29), slice(x + 11, x + 29))
    assert np.array_equal(result[hole], before[hole])  # the transparent hole shows the picture untouched
    outside = np.ones((120, 200), dtype=bool)
    outside[y : y + 40, x : x + 40] = False
    assert np.array_equal(result[outside], before[outside])


@pytest.mark.parametrize("long_edge", [100, 400])
def test_image_watermark_scales_with_the_image(tmp_path: Path, long_edge: int) -> None:
    image = muted(synthetic_photo((long_edge, long_edge // 2)))
    options = WatermarkOptions(image=write_logo(tmp_path / "logo.png"), size=0.25, margin=0.0, opacity=1.0)
    left, top, right, bottom = bbox(changed(image, apply_watermark(image, options)))
    assert abs((right - left) - long_edge / 4) <= 2 and abs((bottom - top) - long_edge / 4) <= 2  # square logo
    assert (right, bottom) == (long_edge, long_edge // 2)  # bottom-right by default, no margin


def test_watermark_options_need_exactly_one_source(tmp_path: Path) -> None:
    logo = write_logo(tmp_path / "logo.png")
    with pytest.raises(ValidationError, match="exactly one"):
        WatermarkOptions(text="mark", image=logo)
    with pytest.raises(ValidationError, match="exactly one"):
        WatermarkOptions()
    with pytest.raises(ValidationError, match="not found"):
        WatermarkOptions(image=tmp_path / "missing.png")
    assert WatermarkOptions(text="mark").text == "mark"
    assert WatermarkOptions(image=logo).image == logo


# --- end to end through ``photostyle process`` -------------------------------------------------


def test_end_to_end_colour_modes(shared: SharedRuns) -> None:
    none = shared.run("none", {})
    lum = shared.run("luminance", {"preserve_color": "luminance"})
    hist = shared.run("channels", {"preserve_color": "channels"})

    assert none.size == lum.size == hist.size == (32, 24)
    photo = shared.original(none.size)
    assert np.abs(arr(none) - arr(photo)).mean() > 10  # the style stage did change the picture

    check_luminance_result(lum, photo, none)
    assert np.abs(arr(lum) - arr(luminance_after(none, photo))).max() <= 1

    # A few hundred pixels, and the network's output clips to 0/255 in clumps of equal values that a
    # value-to-value remapping cannot split: compare the distribution away from the extreme tails.
    check_histograms_match(hist, photo, quantiles=(5, 10, 25, 50, 75, 90, 95))
    assert np.abs(arr(hist) - arr(none)).mean() > 5 and np.abs(arr(hist) - arr(photo)).mean() > 5
    assert np.abs(arr(hist) - arr(match_channels(none, photo))).max() <= 1


def test_end_to_end_resize(shared: SharedRuns) -> None:
    assert shared.run("none", {}).size == (WORKING_SIZE, WORKING_SIZE * 3 // 4)  # unset: the working size
    assert shared.run("resized", {"resize": 160}).size == (160, 120)


def test_end_to_end_watermark(shared: SharedRuns) -> None:
    plain = shared.run("resized", {"resize": 160})
    marked = shared.run("watermarked", {"resize": 160, "watermark": {"text": "mark", "position": "top-left"}})
    assert marked.size == (160, 120)
    mask = changed(plain, marked)
    assert mask.any()
    rows, cols = corner_boxes(plain.size, fraction=0.4)["top-left"]
    assert mask[rows, cols].sum() == mask.sum()  # applied after resize, in its corner only


# Made once: a profile's header records the second it was created, so two made apart differ.
CAMERA_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def camera_jpeg(path: Path) -> Path:
    """A landscape JPEG as a phone writes it: sideways pixels, EXIF orientation 6, an sRGB profile."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif[MAKE] = "Acme"
    exif[MODEL] = "Pocket 3"
    synthetic_photo((64, 48)).save(path, exif=exif.tobytes(), icc_profile=CAMERA_ICC, quality=95)
    return path


def test_end_to_end_keeps_metadata(tmp_path: Path) -> None:
    photo = camera_jpeg(tmp_path / "IMG_0001.jpg")
    with Image.open(process(tmp_path, photo, "keep", {})) as out:
        assert out.format == "JPEG"
        assert out.size == (24, 32)  # upright (portrait), at the working size
        exif = out.getexif()
        assert exif[MAKE] == "Acme" and exif[MODEL] == "Pocket 3"
        assert exif[ORIENTATION] == 1  # pixels are upright: a viewer must not turn them again
        assert out.info.get("icc_profile") == CAMERA_ICC


def test_end_to_end_drops_metadata_when_asked(tmp_path: Path) -> None:
    photo = camera_jpeg(tmp_path / "IMG_0001.jpg")
    with Image.open(process(tmp_path, photo, "strip", {"output": {"keep_metadata": False}})) as out:
        assert out.size == (24, 32)  # still upright, though the orientation tag is gone
        assert len(out.getexif()) == 0
        assert not out.info.get("icc_profile")


@pytest.fixture
def cutout_photo(tmp_path: Path) -> Path:
    """An RGBA PNG whose left quarter is fully transparent."""
    image = muted(synthetic_photo((64, 48))).convert("RGBA")
    image.paste((0, 0, 255, 0), (0, 0, 16, 48))
    path = tmp_path / "cutout.png"
    image.save(path)
    return path


def test_end_to_end_alpha_to_png(tmp_path: Path, cutout_photo: Path) -> None:
    with Image.open(process(tmp_path, cutout_photo, "png", {"output": {"format": "png"}})) as out:
        assert out.format == "PNG" and out.mode == "RGBA" and out.size == (32, 24)
        alpha = np.asarray(out.getchannel("A"))
    # The transparent quarter is 8 px wide at this size; Lanczos softens the mask's edge by a few px.
    assert (alpha[:, :4] == 0).all()
    assert (alpha[:, :6] <= 2).all()
    assert (alpha[:, 12:] == 255).all()  # the rest stays opaque


def test_end_to_end_alpha_to_jpeg_is_rgb(tmp_path: Path, cutout_photo: Path) -> None:
    with Image.open(process(tmp_path, cutout_photo, "jpeg", {})) as out:
        assert out.format == "JPEG" and out.mode == "RGB" and out.size == (32, 24)
