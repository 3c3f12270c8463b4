"""``photostyle preview``: one photo in several presets on a labelled contact sheet, outside the outbox."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.app import load_app
from pipeline.cli import main
from pipeline.commands.preview import EVALUATIONS, SheetLayout, shrink_preset

TINY = {"style": "style.png", "size": 32, "iterations": 3}
BOLD = {"style": "style.png", "size": 512, "iterations": 300, "seed": 7, "style_weight": 1e7, "resize": 2048}
TWO_PRESETS = {"presets": {"tiny": TINY, "bold": {**BOLD, "iterations": 4}}}  # few evaluations: seconds, not minutes


def _cells_are_drawn(sheet: Image.Image, layout: SheetLayout, failed: tuple[int, ...] = ()) -> None:
    """Every cell holds a picture (a flat grey placeholder where it failed) and has dark label text below it."""
    pixels = np.asarray(sheet.convert("L"), dtype=np.float64)
    for index in range(layout.cells):
        left, top, right, bottom = layout.box(index)
        cell = pixels[top:bottom, left:right]
        if index in failed:
            assert cell.std() == 0 and 200 < cell.mean() < 250, f"cell {index} is not a placeholder"
        else:
            assert cell.std() > 5 and cell.mean() < 250, f"cell {index} is blank"
        label = pixels[bottom:bottom + layout.label, left:right]
        assert label.min() < 128, f"cell {index} has no label"
    for index in range(layout.cells, layout.columns * layout.rows):  # unused grid positions stay white
        left, top, right, bottom = layout.box(index)
        assert pixels[top:bottom, left:right].min() == 255


def test_contact_sheet_has_the_original_and_every_preset_by_default(
    photo: Path, make_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(extra=TWO_PRESETS)
    workdir = tmp_path / "here"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    assert main(["preview", str(photo), "-c", str(config), "--size", "32"]) == 0
    sheet_path = workdir / "holiday-preview.png"
    assert capsys.readouterr().out.strip() == str(sheet_path)
    layout = SheetLayout(cells=3, cell_width=32, cell_height=24)  # original, tiny, bold; the photo is 64x48
    assert (layout.columns, layout.rows) == (3, 1)
    with Image.open(sheet_path) as sheet:
        assert sheet.format == "PNG" and sheet.size == (layout.width, layout.height)
        _cells_are_drawn(sheet, layout)
    assert not (config.parent / "outbox").exists(), "preview writes nothing to the outbox (nor a gallery)"
    assert sorted(p.name for p in workdir.iterdir()) == ["holiday-preview.png"]


def test_chosen_presets_to_a_named_sheet(photo: Path, make_config, tmp_path: Path) -> None:
    config = make_config(extra=TWO_PRESETS)
    sheet_path = tmp_path / "sheets" / "choice.png"
    assert main(["preview", str(photo), "-c", str(config), "--presets", "bold", "-o", str(sheet_path),
                 "--size", "40"]) == 0
    layout = SheetLayout(cells=2, cell_width=40, cell_height=30)
    with Image.open(sheet_path) as sheet:
        assert sheet.size == (layout.width, layout.height)
        _cells_are_drawn(sheet, layout)
    assert not (config.parent / "outbox").exists()


def test_a_failing_preset_gets_a_placeholder_cell_and_exit_1(photo: Path, make_config, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    plugin = tmp_path / "project" / "grumpy.py"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    plugin.write_text(
        "from pipeline import hookimpl\n\n\n"
        "@hookimpl\n"
        "def postprocess(image, ctx):\n"
        "    if ctx.preset_name == 'bold':\n"
        "        raise RuntimeError('no bold today')\n"
        "    return image\n"
    )
    config = make_config(extra={**TWO_PRESETS, "plugins": {"paths": ["grumpy.py"]}})
    sheet_path = tmp_path / "sheet.png"
    assert main(["preview", str(photo), "-c", str(config), "-o", str(sheet_path), "--size", "32"]) == 1
    [line] = capsys.readouterr().err.splitlines()[-1:]
    assert line.startswith("error: bold: ") and "no bold today" in line
    layout = SheetLayout(cells=3, cell_width=32, cell_height=24)
    with Image.open(sheet_path) as sheet:
        _cells_are_drawn(sheet, layout, failed=(2,))  # a grey placeholder, still labelled


def test_unknown_preset_exits_2_and_writes_nothing(photo: Path, config_file: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    sheet_path = tmp_path / "sheet.png"
    assert main(["preview", str(photo), "-c", str(config_file), "--presets", "tiny,nope", "-o", str(sheet_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nope'" in err and "presets: tiny" in err
    assert not sheet_path.exists()
    assert main(["preview", str(photo), "-c", str(config_file), "--size", "4", "-o", str(sheet_path)]) == 2
    assert "--size 4" in capsys.readouterr().err


def test_previews_are_the_presets_shrunk_not_a_second_pipeline(make_config) -> None:
    app = load_app(make_config(extra={"presets": {"tiny": TINY, "bold": BOLD}}))
    bold = app.config.presets["bold"]
    small = shrink_preset(bold, 160)
    assert (small.size, small.iterations, small.resize, small.output.format) == (160, EVALUATIONS, None, "png")
    assert (small.seed, small.style, small.style_weight) == (bold.seed, bold.style, bold.style_weight)
    assert (bold.size, bold.iterations, bold.resize) == (512, 300, 2048), "the config itself is left alone"
    assert shrink_preset(app.config.presets["tiny"], 160).iterations == 3  # never more than the preset's own


def test_sheet_layout_wraps_after_four_columns() -> None:
    layout = SheetLayout(cells=6, cell_width=40, cell_height=30)
    assert (layout.columns, layout.rows) == (4, 2)
    assert layout.width == 4 * 40 + 5 * layout.gap
    assert layout.height == 2 * (30 + layout.label) + 3 * layout.gap
    assert layout.box(4) == (layout.gap, 2 * layout.gap + 30 + layout.label,
                             layout.gap + 40, 2 * layout.gap + 60 + layout.label)
