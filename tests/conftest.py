"""Shared test helpers: synthetic photos, tiny configs with seeded random weights, CLI runners.

Tests make their own images (nothing from outside the repository) and run the
engine with random VGG19 weights at a few dozen pixels, so they take seconds.
"""

from __future__ import annotations

import os

# One thread for torch (and numpy) here and in every subprocess the tests start, set before either is
# imported: at a few dozen pixels, threads only synchronise, and on a busy machine two threads waiting
# on each other cost ten times the CPU of one (measured: 0.66 s against 0.06 s of CPU for one VGG19
# forward and backward pass at 32 x 24 px under load). The code under test is the same either way.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def one_scale() -> dict[str, Any]:
    """A schedule without a coarse pyramid level (the default one adds 60 evaluations where the size allows).

    A fresh dict each time: YAML would write a shared one as an anchor and aliases.
    """
    return {"pyramid": [], "pyramid_iterations": []}


def synthetic_photo(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """A photo-like RGB image: smooth gradients, a bright disc and some noise."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 255 * x / max(1, width - 1)
    green = 255 * y / max(1, height - 1)
    blue = 128 + 100 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0)
    disc = ((x - width * 0.6) ** 2 + (y - height * 0.4) ** 2) < (min(width, height) * 0.2) ** 2
    image = np.stack([red, green, blue], axis=-1)
    image[disc] = [250, 240, 60]
    image += rng.normal(0, 6, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="RGB")


def synthetic_style(size: tuple[int, int] = (64, 64), seed: int = 1) -> Image.Image:
    """A stripy, high-contrast texture to use as a style image."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    stripes = (np.sin((x + 2 * y) / 3.0 + seed) > 0).astype(np.float64)
    image = np.stack([stripes * 230, (1 - stripes) * 200, 40 + stripes * 150], axis=-1)
    return Image.fromarray(image.astype(np.uint8), mode="RGB")


def write_config(folder: Path, extra: dict[str, Any] | None = None, preset: dict[str, Any] | None = None) -> Path:
    """A valid tiny config in ``folder``: random weights, 32 px, 3 evaluations, one scale, a generated style."""
    folder.mkdir(parents=True, exist_ok=True)
    style = folder / "style.png"
    if not style.exists():
        synthetic_style().save(style)
    data: dict[str, Any] = {
        "device": "cpu",
        "model": {"weights": "random"},
        "default_preset": "tiny",
        "presets": {"tiny": {"style": "style.png", "size": 32, "iterations": 3, "schedule": one_scale(),
                             **(preset or {})}},
    }
    data.update(extra or {})
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def problems_of(path: Path) -> list[str]:
    """The ``FILE:LINE: key: message`` problems that loading ``path`` reports."""
    from pipeline.app import load_app
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_app(path)
    return info.value.problems


def write_text(path: Path, text: str) -> Path:
    """Write dedented text (for hand-written YAML whose line numbers tests check)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def run_cli(*args: str | os.PathLike[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``photostyle`` in a subprocess (as a user would), capturing its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout,
    )


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A synthetic JPEG photo in a temp dir."""
    path = tmp_path / "photos" / "holiday.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    synthetic_photo().save(path, quality=95)
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path / "project")


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    def make(extra: dict[str, Any] | None = None, preset: dict[str, Any] | None = None) -> Path:
        return write_config(tmp_path / "project", extra, preset)

    return make


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder for a config under test, with a style image at art/stripes.png (config files name it)."""
    folder = tmp_path / "project"
    (folder / "art").mkdir(parents=True)
    synthetic_style().save(folder / "art" / "stripes.png")
    return folder
