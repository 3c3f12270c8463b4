"""Colour preservation measured as colour: CIE L*a*b* statistics of results, not just pixels moving.

``preserve_color: histogram`` recolours the style image to the photo's colour mean
and covariance before the transfer, and ``luminance_transfer`` lets the network see only
luminance (Gatys, Bethge, Hertzmann & Shechtman 2016). The end-to-end tests run
``photostyle process`` / the worker with seeded random weights at 48 px from noise,
so every colour in the result is drawn by the style term, and check what the
result's colours are made of.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run_cli, synthetic_photo, write_config
from PIL import Image

from pipeline.app import load_app
from pipeline.cli import main
from pipeline.job.runner import JobRequest
from pipeline.execution.worker import Worker
from plugins.color import (
    LUMA_PER_MILLE,
    ColorStatistics,
    LuminanceStatistics,
    lab_to_srgb,
    luminance,
    match_channels,
    match_color,
    srgb_to_lab,
    style_preparation,
    transfer_matrix,
    with_photo_chroma,
)

# The histogram test's tolerance, in CIE a*/b* units (a just-noticeable difference is about 2):
# the result's a*/b* means within MEAN_TOLERANCE of the photo's, their spreads within
# SPREAD_TOLERANCE (a fraction) of the photo's. Measured here: histogram 0.5 units and 10% off;
# no colour preservation 14.6 units and 290% off, per-channel matching (``channels``, the old
# ``histogram``) 7.5 units and 144% off (the test below checks they fail it).
MEAN_TOLERANCE = 3.0
SPREAD_TOLERANCE = 0.25
SIZE = 48
# From noise, with enough evaluations for the style term to paint every pixel (at 48 px they cost
# milliseconds); a strong style weight so the colours come from the (recoloured) style, not the photo.
END_TO_END: dict[str, Any] = {
    "size": SIZE, "init": "noise", "iterations": 40, "schedule": {"pyramid": [], "pyramid_iterations": []}, "style_weight": 1e9,
    "precision": "fp32", "output": {"format": "png"},
}


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def lab_statistics(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread (standard deviation) of (a*, b*) over the image."""
    ab = srgb_to_lab(image)[..., 1:].reshape(-1, 2)
    return ab.mean(axis=0), ab.std(axis=0)


def palette_error(result: Image.Image, photo: Image.Image) -> tuple[float, float]:
    """(largest |Δmean| of a*, b*; largest relative error of their spreads)."""
    result_mean, result_spread = lab_statistics(result)
    photo_mean, photo_spread = lab_statistics(photo.resize(result.size, Image.Resampling.LANCZOS))
    return float(np.abs(result_mean - photo_mean).max()), float(np.abs(result_spread / photo_spread - 1).max())


def dusk_photo(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A muted photo whose channels move together, as in most photos: a blue-grey sky over a red
    bridge and green hills (golden-gate-like), light falling off towards the bottom."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    light = 80 + 100 * (1 - y / height) + 15 * np.sin(x / 6.0)
    tint = np.where((y < height * 0.45)[..., None], [-20, -2, 28], [-16, 14, -10])  # sky / hills
    bridge = (np.abs(y - height * 0.55 - 0.2 * (x - width / 2)) < height * 0.08) | (np.abs(x - width * 0.7) < 3)
    tint[bridge] = [50, -18, -22]
    rng = np.random.default_rng(0)
    image = light[..., None] + tint + rng.normal(0, 4, (height, width, 3))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def carnival_style(size: tuple[int, int] = (64, 64)) -> Image.Image:
    """Saturated patches whose channels vary independently: a palette nothing like the photo's."""
    rng = np.random.default_rng(5)
    cells = rng.choice([[230, 40, 60], [40, 200, 70], [250, 220, 30], [120, 40, 220], [20, 160, 230]], (8, 8))
    return Image.fromarray(cells.astype(np.uint8)).resize(size, Image.Resampling.NEAREST)


# --- the maths -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pca", "cholesky"])
def test_transfer_matrix_maps_one_covariance_onto_the_other(method: str) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    source, target = a @ a.T * 100 + np.eye(3), b @ b.T * 100 + np.eye(3)
    matrix = transfer_matrix(source, target, method)
    assert np.allclose(matrix @ (source + 1e-2 * np.eye(3)) @ matrix.T, target + 1e-2 * np.eye(3), rtol=1e-6)


def test_lab_conversion_round_trips_and_knows_its_landmarks() -> None:
    photo = dusk_photo()
    assert np.array_equal(np.asarray(lab_to_srgb(srgb_to_lab(photo))), np.asarray(photo))
    swatches = Image.fromarray(np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]]], dtype=np.uint8))
    lab = srgb_to_lab(swatches)[0]
    assert np.allclose(lab[0], [100, 0, 0], atol=0.05) and np.allclose(lab[1], [0, 0, 0], atol=0.05)
    assert np.allclose(lab[2], [53.24, 80.09, 67.20], atol=0.05)  # sRGB red, from the CIE formulas
    assert np.allclose(lab[3], [32.30, 79.19, -107.86], atol=0.05)  # sRGB blue


@pytest.mark.parametrize("space", ["rgb", "lab"])
@pytest.mark.parametrize("method", ["pca", "cholesky"])
def test_match_color_gives_the_style_the_photos_colour_mean_and_covariance(space: str, method: str) -> None:
    photo = dusk_photo()
    style = carnival_style().resize((64, 64), Image.Resampling.BILINEAR)  # some in-between colours
    target = ColorStatistics.of(photo, space)
    recoloured = ColorStatistics.of(match_color(style, target, method), space)
    assert np.abs(np.subtract(recoloured.mean, target.mean)).max() <= 3  # clipping to the gamut moves it a little
    assert np.abs(np.subtract(recoloured.covariance, target.covariance)).max() <= 0.08 * np.abs(target.covariance).max()
    # ...while keeping the style's structure: a linear map is one-to-one, so colours the style tells
    # apart stay apart (up to 8-bit rounding), and so do its strokes' edges.
    def colours(image: Image.Image) -> int:
        return len(np.unique(np.asarray(image).reshape(-1, 3), axis=0))

    assert colours(match_color(style, target, method)) >= 0.8 * colours(style)


def test_colour_statistics_are_rounded_so_they_can_name_cached_targets() -> None:
    photo = dusk_photo()
    stats = ColorStatistics.of(photo, "lab")
    assert stats.key()[0] == "lab" and len(stats.key()) == 10
    assert all(float(v).is_integer() for v in stats.key()[1:])
    assert ColorStatistics.of(photo.copy(), "lab") == stats
    assert ColorStatistics.of(synthetic_photo((64, 48)), "lab") != stats


def test_with_photo_chroma_keeps_the_photos_chroma_and_takes_the_new_luminance() -> None:
    photo = dusk_photo()
    y = np.random.default_rng(2).uniform(60, 190, (48, 64))
    result = with_photo_chroma(y, photo)
    assert np.abs(luminance(result) - y).max() <= 1.0  # the given luminance (8-bit rounding)
    # YCbCr's (and YIQ's) chroma is a linear function of R − Y and B − Y: both equal the photo's.
    for channel in (0, 2):
        difference = arr(result)[..., channel] - luminance(result)
        assert np.abs(difference - (arr(photo)[..., channel] - luminance(photo))).max() <= 1.5


def test_luminance_preparation_shows_the_network_grey_images_at_the_photos_light() -> None:
    photo = dusk_photo()
    preparation = style_preparation("luminance_transfer", photo)
    assert preparation is not None and preparation.key[0] == "luminance_transfer"
    content, style = arr(preparation.content(photo)), arr(preparation.style(carnival_style()))
    for grey in (content, style):
        assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    assert np.abs(content[..., 0] - luminance(photo)).max() <= 0.5
    light = LuminanceStatistics.of(photo)
    assert abs(style[..., 0].mean() - light.mean) < 1 and abs(style[..., 0].std() - light.std) < 1
    assert style_preparation("none", photo) is None and style_preparation("luminance", photo) is None


# --- end to end: the result's colours ------------------------------------------------------------


class Runs:
    """``photostyle process`` of the dusk photo with the carnival style, once per colour mode."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.photo = root / "dusk.png"
        dusk_photo().save(self.photo)
        self._results: dict[str, Image.Image] = {}

    def result(self, mode: str) -> Image.Image:
        if mode not in self._results:
            config = write_config(self.root / f"project-{mode}", preset={**END_TO_END, "preserve_color": mode})
            carnival_style().save(config.parent / "style.png")
            outdir = self.root / f"out-{mode}"
            assert main(["process", str(self.photo), "-c", str(config), "-o", str(outdir)]) == 0
            with Image.open(outdir / "dusk.png") as image:
                self._results[mode] = image.convert("RGB")
        return self._results[mode]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("colour"))


def test_histogram_result_has_the_photos_palette_in_lab(runs: Runs) -> None:
    photo = dusk_photo()
    mean_error, spread_error = palette_error(runs.result("histogram"), photo)
    assert mean_error <= MEAN_TOLERANCE, f"a*/b* mean {mean_error:.1f} units from the photo's"
    assert spread_error <= SPREAD_TOLERANCE, f"a*/b* spread {spread_error:.0%} from the photo's"


@pytest.mark.parametrize("mode", ["none", "channels"])
def test_the_palette_check_fails_without_histogram_matching(runs: Runs, mode: str) -> None:
    """The tolerance above discriminates: no colour preservation keeps the style's palette, and
    per-channel matching (the old ``histogram``) gets each channel's tones but not their colours."""
    mean_error, spread_error = palette_error(runs.result(mode), dusk_photo())
    assert mean_error > MEAN_TOLERANCE or spread_error > SPREAD_TOLERANCE, (mean_error, spread_error)


def test_channels_mode_is_per_channel_matching_of_the_plain_result(runs: Runs) -> None:
    photo = dusk_photo().resize(runs.result("none").size, Image.Resampling.LANCZOS)
    expected = match_channels(runs.result("none"), photo)
    assert np.abs(arr(runs.result("channels")) - arr(expected)).max() <= 1


def test_luminance_transfer_result_has_exactly_the_photos_chroma(runs: Runs) -> None:
    result = runs.result("luminance_transfer")
    photo = dusk_photo().resize(result.size, Image.Resampling.LANCZOS)
    for channel in (0, 2):
        chroma = arr(result)[..., channel] - luminance(result)
        photo_chroma = arr(photo)[..., channel] - luminance(photo)
        unclipped = (arr(result).min(-1) > 0) & (arr(result).max(-1) < 255)
        assert unclipped.mean() > 0.8
        assert np.abs(chroma - photo_chroma)[unclipped].max() <= 1.5
    assert np.abs(luminance(result) - luminance(photo)).mean() > 5  # the luminance is the transfer's


def recoloured_twin(photo: Image.Image) -> Image.Image:
    """The photo with other colours but exactly the same luminance: an 8-bit shift with no luma
    (299·26 − 587·8 − 114·27 = 0). The photo's values must stay 27 levels clear of 0 and 255."""
    shift = np.array([26, -8, -27])
    assert LUMA_PER_MILLE @ shift == 0
    return Image.fromarray((arr(photo) + shift).astype(np.uint8))


def mid_range(photo: Image.Image) -> Image.Image:
    """The photo's values squeezed into [38, 217], so a twin's shift never clips."""
    return Image.fromarray((arr(photo) * 0.7 + 38).astype(np.uint8))


def test_luminance_transfer_sees_only_the_photos_luminance(tmp_path: Path) -> None:
    """Two photos that differ only in colour give the same stylised luminance with ``luminance_transfer``
    (the network never saw their colours), different ones with ``luminance`` (after the transfer). The photos
    are at the working size: resizing rounds each channel and would blur the equality."""
    photo = mid_range(dusk_photo((SIZE, SIZE * 3 // 4)))
    twin = recoloured_twin(photo)
    assert np.array_equal(luminance(twin), luminance(photo)) and np.abs(arr(twin) - arr(photo)).mean() > 10
    difference = {}
    for mode in ("luminance_transfer", "luminance"):
        config = write_config(tmp_path / mode, preset={**END_TO_END, "preserve_color": mode, "init": "content"})
        outputs = []
        for name, image in (("photo", photo), ("twin", twin)):
            image.save(tmp_path / f"{name}.png")
            outdir = tmp_path / f"out-{mode}-{name}"
            assert main(["process", str(tmp_path / f"{name}.png"), "-c", str(config), "-o", str(outdir)]) == 0
            with Image.open(outdir / f"{name}.png") as result:
                outputs.append(arr(result))
        # Where the photo's chroma pushes a channel past 0 or 255 the saved luminance is clipped,
        # differently for each twin: compare the pixels neither result clipped.
        unclipped = np.all([(values.min(-1) > 0) & (values.max(-1) < 255) for values in outputs], axis=0)
        assert unclipped.mean() > 0.5
        lights = [(values @ LUMA_PER_MILLE / 1000)[unclipped] for values in outputs]
        difference[mode] = float(np.abs(lights[0] - lights[1]).mean())
    assert difference["luminance_transfer"] < 0.5, difference  # the same up to rounding
    assert difference["luminance"] > 5, difference


# --- caching and batches -------------------------------------------------------------------------


def test_histogram_style_targets_are_cached_per_photo_colours(tmp_path: Path) -> None:
    """The recoloured style depends on the photo: another photo computes its own targets; the same
    photo again (here under another name) reuses them, from memory and after a restart from disk."""
    config = write_config(tmp_path / "project", preset={**END_TO_END, "iterations": 2, "preserve_color": "histogram"})
    photos = tmp_path / "photos"
    photos.mkdir()
    dusk_photo().save(photos / "a.png")
    dusk_photo().save(photos / "a-again.png")
    synthetic_photo((64, 48)).save(photos / "b.png")

    def sources(*names: str) -> list[str]:
        result = run_cli("process", *(photos / name for name in names), "-c", config, "-o", tmp_path / "out", "--json")
        assert result.returncode == 0, result.stderr
        import json
        return [json.loads(line)["style_targets"]["source"] for line in result.stdout.splitlines() if line.strip()]

    assert sources("a.png", "b.png", "a-again.png") == ["computed", "computed", "memory"]
    assert sources("b.png") == ["disk"]


def test_a_batch_in_histogram_mode_gives_each_photo_its_own_palette(tmp_path: Path) -> None:
    config = write_config(tmp_path / "project", preset={**END_TO_END, "preserve_color": "histogram"})
    carnival_style().save(config.parent / "style.png")
    dusk = mid_range(dusk_photo())
    photos = {"dusk.png": dusk, "warm.png": recoloured_twin(dusk)}
    for name, image in photos.items():
        image.save(tmp_path / name)
    worker = Worker(load_app(config))
    results = worker.run_batch([JobRequest(tmp_path / name, "tiny", output_dir=tmp_path / "out") for name in photos])
    assert [result.report["engine"]["batch"] for result in results] == [2, 2]
    for result, photo in zip(results, photos.values(), strict=True):
        with Image.open(result.output) as image:
            own = palette_error(image.convert("RGB"), photo)
        assert own[0] <= MEAN_TOLERANCE, own


def test_config_accepts_the_colour_modes_and_names_them_when_wrong(tmp_path: Path) -> None:
    for mode in ("none", "histogram", "luminance", "luminance_transfer", "channels"):
        assert run_cli("check", "-c", write_config(tmp_path / mode, preset={"preserve_color": mode})).returncode == 0
    result = run_cli("check", "-c", write_config(tmp_path / "typo", preset={"preserve_color": "colour"}))
    assert result.returncode == 2
    assert "preserve_color" in result.stdout + result.stderr and "luminance_transfer" in result.stdout + result.stderr
