"""``photostyle preview PHOTO``: one photo in several presets, small and quick, on one contact sheet.

Choosing a preset by running each at full size takes minutes per preset; a
preview renders each at a small working size with a reduced evaluation budget.
It goes through the same worker, job runner and stages as ``process`` (only the
presets are shrunk, with ``model_copy``), so what it shows is what the presets
do, watermark and colour options included. Results go to a temp folder that is
deleted afterwards: nothing lands in the outbox and the gallery is not touched
(the gallery plugin only acts on results inside the outbox).
"""

from __future__ import annotations

import io
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from pipeline.app import App
from pipeline.commands.process import one_line, progress_bar
from pipeline.errors import ConfigError, PhotostyleError
from pipeline.files.fileops import write_bytes_atomic
from pipeline.job.imageio import load_photo, resize_long_edge
from pipeline.job.runner import JobRequest
from pipeline.execution.worker import Worker

DEFAULT_SIZE = 160  # px, long edge of each cell (the working size of each preview)
MIN_SIZE = 16  # the smallest working size a preset allows
EVALUATIONS = 80  # at most this many evaluations per preset: enough to see the style
MAX_COLUMNS = 4
BACKGROUND = (255, 255, 255)
INK = (40, 40, 46)
PLACEHOLDER = (226, 224, 220)


@dataclass(frozen=True)
class SheetLayout:
    """A grid of cells the photo's shape (every result keeps its aspect), each with a label strip below."""

    cells: int
    cell_width: int  # px: the photo at the preview size
    cell_height: int

    @property
    def columns(self) -> int:
        return min(self.cells, MAX_COLUMNS)

    @property
    def rows(self) -> int:
        return math.ceil(self.cells / self.columns)

    @property
    def label(self) -> int:
        return max(16, max(self.cell_width, self.cell_height) // 7)

    @property
    def gap(self) -> int:
        return max(4, max(self.cell_width, self.cell_height) // 16)

    @property
    def width(self) -> int:
        return self.columns * self.cell_width + (self.columns + 1) * self.gap

    @property
    def height(self) -> int:
        return self.rows * (self.cell_height + self.label) + (self.rows + 1) * self.gap

    def box(self, index: int) -> tuple[int, int, int, int]:
        """The image area of cell ``index`` (row-major) as (left, top, right, bottom)."""
        row, column = divmod(index, self.columns)
        left = self.gap + column * (self.cell_width + self.gap)
        top = self.gap + row * (self.cell_height + self.label + self.gap)
        return left, top, left + self.cell_width, top + self.cell_height


def choose_presets(app: App, names: str | None) -> list[str]:
    """``a,b,c`` in that order (default: every preset); unknown names are a usage error (exit 2)."""
    known = list(app.config.presets)
    if names is None:
        return known
    chosen = list(dict.fromkeys(name.strip() for name in names.split(",") if name.strip()))
    unknown = [name for name in chosen if name not in app.config.presets]
    if unknown or not chosen:
        listed = ", ".join(repr(name) for name in unknown) or "none given"
        raise ConfigError([f"{app.config_path}: unknown preset {listed} (presets: {', '.join(known)})"])
    return chosen


def shrink_preset(preset: Any, size: int) -> Any:
    """The preset at ``size`` px with at most ``EVALUATIONS`` evaluations, delivered at that size as PNG."""
    update: dict[str, Any] = {
        "size": size,
        "iterations": min(preset.iterations, EVALUATIONS),
        "output": preset.output.model_copy(update={"format": "png", "keep_metadata": False}),
    }
    if getattr(preset, "resize", None) is not None:
        update["resize"] = None  # deliver at the working size: the sheet is small
    return preset.model_copy(update=update)


def preview_app(app: App, names: list[str], size: int) -> App:
    """The same config and plugins, with the chosen presets shrunk for previewing."""
    presets = {name: shrink_preset(app.config.presets[name], size) for name in names}
    return App(config_path=app.config_path, config=app.config.model_copy(update={"presets": presets}), host=app.host)


def render_cells(app: App, photo: Path, names: list[str], size: int) -> list[tuple[str, Image.Image | None]]:
    """``[("original", photo), (preset, result or None if it failed), …]``; failures get one line on stderr."""
    original = resize_long_edge(load_photo(photo, app.config.limits.max_pixels).image, size)
    worker = Worker(preview_app(app, names, size))
    for name in names:
        worker.prepare(name)  # missing weights stop here, before any rendering
    cells: list[tuple[str, Image.Image | None]] = [("original", original)]
    with tempfile.TemporaryDirectory(prefix="photostyle-preview-") as scratch:
        for name in names:
            try:
                with progress_bar(f"{photo.name} [{name}]") as progress:
                    result = worker.run(
                        JobRequest(source=photo, preset=name, output_dir=Path(scratch) / name), progress=progress
                    )
                with Image.open(result.output) as rendered:
                    cells.append((name, rendered.convert("RGB")))
            except PhotostyleError as exc:
                print(f"error: {name}: {one_line(photo, exc)}", file=sys.stderr, flush=True)
                cells.append((name, None))
    return cells


def _fit_label(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text``, shortened with an ellipsis until it fits ``width`` px."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def draw_sheet(cells: list[tuple[str, Image.Image | None]]) -> Image.Image:
    """Lay the cells out on a white sheet, each image centred in its cell, its label below.

    The first cell (the original at the preview size) sets the cell size.
    """
    first = cells[0][1]
    assert first is not None, "the original is always there"
    layout = SheetLayout(len(cells), first.width, first.height)
    sheet = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=max(10, layout.label * 2 // 3))
    for index, (label, image) in enumerate(cells):
        left, top, right, bottom = layout.box(index)
        if image is None:
            draw.rectangle((left, top, right - 1, bottom - 1), fill=PLACEHOLDER)
            label = f"{label} (failed)"
        else:
            image = ImageOps.contain(image, (layout.cell_width, layout.cell_height), Image.Resampling.LANCZOS)
            offset = ((layout.cell_width - image.width) // 2, (layout.cell_height - image.height) // 2)
            sheet.paste(image, (left + offset[0], top + offset[1]))
        text = _fit_label(draw, label, font, layout.cell_width)
        draw.text(((left + right) / 2, bottom + layout.label / 2), text, font=font, fill=INK, anchor="mm")
    return sheet


def preview(app: App, photo: Path, presets: str | None, output: Path | None, size: int | None) -> int:
    """Render, draw and write the sheet (replacing an older one); exit status 1 if a preset failed."""
    size = DEFAULT_SIZE if size is None else size
    if size < MIN_SIZE:
        raise ConfigError([f"--size {size}: must be at least {MIN_SIZE} px"])
    names = choose_presets(app, presets)
    target = output or Path.cwd() / f"{photo.stem}-preview.png"
    cells = render_cells(app, photo, names, size)
    buffer = io.BytesIO()
    draw_sheet(cells).save(buffer, format="PNG", optimize=True)
    write_bytes_atomic(target, buffer.getvalue())
    print(target, flush=True)
    return 1 if any(image is None for _, image in cells) else 0
