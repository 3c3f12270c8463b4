"""config.yaml: validation with FILE:LINE errors, relative paths, defaults, the schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, problems_of, run_cli, synthetic_style, write_text
from pipeline.app import load_app
from pipeline.cli import main


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    (folder / "art").mkdir(parents=True)
    (folder / "styles").mkdir()
    synthetic_style().save(folder / "art" / "stripes.png")
    return folder


def test_bundled_config_is_valid_and_offers_presets() -> None:
    app = load_app(REPO / "config.yaml")
    assert len(app.config.presets) >= 6
    assert app.config.default_preset in app.config.presets
    assert app.config.model.weights == "torchvision"


def test_bundled_config_points_editors_at_the_schema() -> None:
    first_line = (REPO / "config.yaml").read_text().splitlines()[0]
    assert first_line.startswith("# yaml-language-server: $schema=")
    schema_file = REPO / first_line.split("$schema=", 1)[1].strip()
    assert json.loads(schema_file.read_text()) == json.loads(run_cli("schema", "-c", REPO / "config.yaml").stdout), (
        "config.schema.json is stale: regenerate with `photostyle schema > config.schema.json`"
    )


def test_paths_are_relative_to_the_config_file(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_text(project / "config.yaml", """
        inbox: drop
        default_preset: p
        presets:
          p: {style: art/stripes.png}
    """)
    monkeypatch.chdir(tmp_path)
    app = load_app(config)
    assert app.config.inbox == project / "drop"
    assert app.config.outbox == project / "outbox"
    assert app.config.presets["p"].style == project / "art" / "stripes.png"


def test_defaults_follow_the_paper(project: Path) -> None:
    config = write_text(project / "config.yaml", """
        default_preset: p
        presets:
          p: {style: art/stripes.png}
    """)
    preset = load_app(config).config.presets["p"]
    assert preset.content_layers == ["conv4_2"]
    assert preset.style_layers == ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
    assert preset.layer_weights == pytest.approx([0.2] * 5)
    assert preset.style_scale == 1.0 and preset.init == "content"
    assert preset.preserve_color == "none" and preset.resize is None and preset.watermark is None


def test_preset_defaults_apply_and_presets_override_them(project: Path) -> None:
    config = write_text(project / "config.yaml", """
        default_preset: a
        preset_defaults:
          size: 200
          output: {format: png}
        presets:
          a: {style: art/stripes.png}
          b: {style: art/stripes.png, size: 300, output: {quality: 50}}
    """)
    presets = load_app(config).config.presets
    assert presets["a"].size == 200 and presets["b"].size == 300
    assert presets["b"].output.format == "png" and presets["b"].output.quality == 50


def test_style_blend_list(project: Path) -> None:
    synthetic_style(seed=4).save(project / "art" / "other.png")
    config = write_text(project / "config.yaml", """
        default_preset: p
        presets:
          p:
            style:
              - {image: art/stripes.png, weight: 3}
              - {image: art/other.png}
    """)
    refs = load_app(config).config.presets["p"].style_images
    assert [(ref.image.name, ref.weight) for ref in refs] == [("stripes.png", 3.0), ("other.png", 1.0)]


BROKEN = """
    inbox: inbox
    outbox: inbox/results
    default_preset: nope
    device: gpu
    colour: true
    presets:
      p:
        style: art/stripes.png
        size: large
        style_weight: -5
        style_layers: [conv1_1, conv6_1]
      q:
        style: styles/missing.png
"""


def test_every_problem_is_reported_with_its_line(project: Path) -> None:
    """Pydantic's problems and the cross-field ones (folders, default_preset) together, each once at its line."""
    config = write_text(project / "config.yaml", BROKEN)
    problems = problems_of(config)
    prefix = f"{config}:"
    assert all(p.startswith(prefix) for p in problems)
    found = {p[len(prefix):].split(":", 2)[1].strip(): int(p[len(prefix):].split(":", 1)[0]) for p in problems}
    assert found == {
        "outbox": 2,
        "default_preset": 3,
        "device": 4,
        "colour": 5,
        "presets.p.size": 9,
        "presets.p.style_weight": 10,
        "presets.p.style_layers.1": 11,
        "presets.q.style": 13,
    }
    assert len(problems) == len(found)
    assert any(p.startswith(f"{config}:2: outbox: ") and "inside the inbox" in p for p in problems)
    assert any(p.startswith(f"{config}:3: default_preset: unknown preset 'nope'") for p in problems)
    assert any(p.startswith(f"{config}:13: presets.q.style: style image not found") for p in problems)


def test_a_presets_own_mistake_is_reported_at_the_preset(project: Path) -> None:
    config = write_text(project / "config.yaml", """
        default_preset: p
        preset_defaults:
          output: {format: png}
        presets:
          p: {style: art/stripes.png, output: {quality: 500}}
          q: {style: art/stripes.png}
    """)
    [problem] = problems_of(config)
    assert problem.startswith(f"{config}:5: presets.p.output.quality: Input should be less than or equal to 100")


def test_wrong_type_for_a_section(project: Path) -> None:
    config = write_text(project / "config.yaml", """
        default_preset: p
        limits: 5
        presets:
          p: {style: art/stripes.png, style_layer_weights: [1, 2]}
    """)
    problems = problems_of(config)
    assert len(problems) == 2
    assert problems[0].startswith(f"{config}:2: limits: Input should be a valid dictionary")
    assert problems[1].startswith(f"{config}:4: presets.p.style_layer_weights: has 2 weights for 5 style layers")


def test_check_prints_problems_and_exits_2_and_other_commands_refuse_the_same_way(project: Path, photo: Path) -> None:
    config = write_text(project / "config.yaml", BROKEN)
    checked = run_cli("check", "-c", config)
    assert checked.returncode == 2
    lines = checked.stderr.strip().splitlines()
    assert len(lines) == 8 and all(line.startswith(f"{config}:") for line in lines)
    assert "Traceback" not in checked.stderr
    for command in (["presets"], ["plugins"], ["process", str(photo)]):
        refused = run_cli(*command, "-c", config)
        assert refused.returncode == 2, command
        assert refused.stderr.strip().splitlines() == lines
    assert not (project / "outbox").exists()


def test_check_accepts_a_valid_config(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(config_file)]) == 0
    assert "OK" in capsys.readouterr().out


def test_config_comes_from_the_environment_or_the_current_folder(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PHOTOSTYLE_CONFIG", str(config_file))
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 0
    monkeypatch.delenv("PHOTOSTYLE_CONFIG")
    monkeypatch.chdir(config_file.parent)
    assert main(["check"]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_schema_is_json_schema_including_plugin_keys(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "-c", str(config_file)]) == 0
    schema = json.loads(capsys.readouterr().out)
    preset = schema["$defs"]["Preset"]["properties"]
    for key in ("style", "size", "style_weight", "preserve_color", "resize", "watermark", "output"):
        assert key in preset
    assert schema["additionalProperties"] is False
    assert "WatermarkOptions" in schema["$defs"]


def test_images_in_the_styles_folder_become_presets(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synthetic_style().save(project / "styles" / "stripes.png")
    synthetic_style(seed=5).save(project / "styles" / "Blue Period.jpg")
    synthetic_style(seed=6).save(project / "styles" / "tuned.png")
    (project / "styles" / "notes.txt").write_text("not an image")
    config = write_text(project / "config.yaml", """
        default_preset: stripes
        preset_defaults:
          size: 222
        presets:
          tuned:
            style_weight: 5
          explicit:
            style: styles/stripes.png
            size: 100
    """)
    app = load_app(config)
    presets = app.config.presets
    assert sorted(presets) == ["Blue_Period", "explicit", "stripes", "tuned"]
    assert presets["Blue_Period"].style == project / "styles" / "Blue Period.jpg"
    assert presets["Blue_Period"].size == 222  # preset_defaults apply to dropped-in styles
    assert presets["tuned"].style == project / "styles" / "tuned.png" and presets["tuned"].style_weight == 5
    assert presets["explicit"].size == 100
    assert main(["presets", "-c", str(config)]) == 0
    listing = capsys.readouterr().out
    assert f"[from {project / 'styles' / 'stripes.png'} (styles folder)]" in listing
    assert f"explicit: size 100 px, style {project / 'styles' / 'stripes.png'}  [from {config}:7]" in listing
