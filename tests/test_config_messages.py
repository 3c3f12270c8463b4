"""Config errors that teach: duplicate keys, one error per mistake, choices and near matches, plain YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO, problems_of, run_cli, write_text
from pipeline.app import load_app


SNIPPET = """
plugins:
  paths: [sepia.py]
presets:
  old_photo:
    style: styles/ink_wash.png
    sepia: {strength: 0.8}
"""


def test_a_second_plugins_and_presets_section_appended_to_the_bundled_config_is_refused(tmp_path: Path) -> None:
    """What happened when the README's plugin snippet was appended as-is: YAML kept the last
    `presets:`, the six tuned presets silently lost their settings, and `check` said OK."""
    config = tmp_path / "config.yaml"
    config.write_text((REPO / "config.yaml").read_text() + SNIPPET)
    lines = config.read_text().splitlines()
    first_plugins = lines.index("plugins:") + 1
    first_presets = lines.index("presets:") + 1
    second_plugins, second_presets = len(lines) - 5, len(lines) - 3
    result = run_cli("check", "-c", config)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{config}:{second_plugins}: plugins: duplicate key (first at line {first_plugins})",
        f"{config}:{second_presets}: presets: duplicate key (first at line {first_presets})",
    ]


def test_duplicate_keys_are_refused_at_any_depth(project: Path) -> None:
    config = write_text(project / "config.yaml", """
        default_preset: p
        presets:
          p:
            style: art/stripes.png
            size: 64
            output: {format: png, format: jpeg}
            size: 128
    """)
    assert problems_of(config) == [
        f"{config}:6: presets.p.output.format: duplicate key (first at line 6)",
        f"{config}:7: presets.p.size: duplicate key (first at line 5)",
    ]


def test_a_mistake_in_preset_defaults_is_reported_once_at_its_own_line(project: Path) -> None:
    """Every preset starts from preset_defaults: a typo or a bad value there is one problem, at its own line,
    however many presets inherit it (here six do, and one sets the key itself)."""
    presets = "\n".join(f"  p{index}: {{style: art/stripes.png}}" for index in range(6))
    config = project / "config.yaml"
    config.write_text("default_preset: p0\npreset_defaults:\n  iteratons: 80\n  iterations: many\n"
                      f"presets:\n{presets}\n  r: {{style: art/stripes.png, iterations: 7}}\n")
    assert problems_of(config) == [
        f"{config}:3: preset_defaults.iteratons: unknown key; did you mean 'iterations'?",
        f"{config}:4: preset_defaults.iterations: Input should be a valid integer, unable to parse string as an "
        "integer (got 'many')",
    ]


def test_a_device_that_does_not_exist_lists_the_choices_and_the_nearest(project: Path) -> None:
    config = write_text(project / "config.yaml", """
        device: gpu
        default_preset: p
        presets:
          p: {style: art/stripes.png}
    """)
    assert problems_of(config) == [
        f"{config}:1: device: unknown device 'gpu'; did you mean 'cuda'? (choose auto, cpu, cuda, cuda:N or mps)"
    ]
    config.write_text(config.read_text().replace("device: gpu", "device: cdua:1"))
    [problem] = problems_of(config)
    assert "did you mean 'cuda'?" in problem and "pattern" not in problem


@pytest.mark.parametrize(("text", "expected"), [
    ("devise: cpu", "1: devise: unknown key; did you mean 'device'?"),
    ("watch: {stable_secs: 2}", "1: watch.stable_secs: unknown key; did you mean 'stable_seconds'?"),
    ("limits: {max_pixel: 5}", "1: limits.max_pixel: unknown key; did you mean 'max_pixels'?"),
])
def test_an_unknown_key_suggests_the_nearest_allowed_key(project: Path, text: str, expected: str) -> None:
    config = project / "config.yaml"
    config.write_text(f"{text}\ndefault_preset: p\npresets:\n  p: {{style: art/stripes.png}}\n")
    problems = problems_of(config)
    assert problems == [f"{config}:{expected}"]


def test_unknown_keys_in_presets_and_plugin_sections_suggest_their_own_keys(project: Path) -> None:
    config = write_text(project / "config.yaml", """
        default_preset: p
        presets:
          p:
            style: art/stripes.png
            style_wieght: 5
            watermark: {txt: hello}
            output: {fromat: png}
            perserve_color: luminance
    """)
    assert problems_of(config) == [
        f"{config}:5: presets.p.style_wieght: unknown key; did you mean 'style_weight'?",
        f"{config}:6: presets.p.watermark.txt: unknown key; did you mean 'text'?",
        f"{config}:7: presets.p.output.fromat: unknown key; did you mean 'format'?",
        f"{config}:8: presets.p.perserve_color: unknown key; did you mean 'preserve_color'?",
    ]


def test_unknown_preset_layer_and_choice_suggest_the_nearest(project: Path) -> None:
    config = write_text(project / "config.yaml", """
        default_preset: swirl
        presets:
          swirls:
            style: art/stripes.png
            style_layers: [conv1_1, conv6_1]
            init: nois
    """)
    problems = problems_of(config)
    assert problems[0] == f"{config}:1: default_preset: unknown preset 'swirl'; did you mean 'swirls'? (presets: swirls)"
    assert problems[1] == (
        f"{config}:5: presets.swirls.style_layers.1: unknown layer 'conv6_1'; did you mean 'conv5_1'? "
        "(VGG19 layers are conv1_1 … conv5_4)"
    )
    assert problems[2].startswith(f"{config}:6: presets.swirls.init: Input should be 'content' or 'noise'; "
                                  "did you mean 'noise'?")
    assert len(problems) == 3


@pytest.mark.parametrize(("text", "where", "words"), [
    ("presets:\n  p: {style: art/stripes.png}\n default_preset: p\n", "3:2", "indentation doesn't match the lines above"),
    ("default_preset: p\npresets:\n\tp: {style: art/stripes.png}\n", "3:1", "a tab character: YAML indents with spaces"),
    ("default_preset: 'p\npresets: {}\n", "3:1", "the quote at line 1, column 17 is not closed"),
    ("default_preset: p\npresets: {p: {style: x}\n", "3:1", "the '{' at line 2, column 10 is not closed with '}'"),
    ("default_preset: p\nstyles: [a, b\npresets: {}\n", "3:8", "the '[' at line 2, column 9 is not closed with ']'"),
    ("default_preset: p\npresets: [oops\nother: 1\n", "3:6", "the '[' at line 2, column 10 is not closed"),
    ('default_preset: p\nstyles: "C:\\styles"\n', "2:13",
     "an unknown '\\' escape in a double-quoted string: use single quotes for paths with '\\'"),
    ("default_preset: p: q\n", "1:18", "a ':' where none belongs"),
    ("default_preset: *p\n", "1:17", "alias '*p' is used before (or without) an anchor '&p'"),
])
def test_yaml_syntax_errors_are_said_plainly_with_line_and_column(
    project: Path, text: str, where: str, words: str
) -> None:
    config = project / "config.yaml"
    config.write_text(text)
    [problem] = problems_of(config)
    assert problem.startswith(f"{config}:{where}: YAML syntax error: {words}"), problem
    assert "<block" not in problem and "but found" not in problem


def test_the_readme_plugin_snippet_merged_as_it_says_is_accepted(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text().split("## Writing a plugin", 1)[1]
    (tmp_path / "sepia.py").write_text(readme.split("```python\n", 1)[1].split("```", 1)[0])
    snippet = yaml.safe_load(readme.split("```yaml\n", 1)[1].split("```", 1)[0])
    data = yaml.safe_load((REPO / "config.yaml").read_text())
    data["plugins"].update(snippet["plugins"])
    data["presets"].update(snippet["presets"])
    (tmp_path / "styles").symlink_to(REPO / "styles")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    presets = load_app(config).config.presets
    assert presets["old_photo"].sepia.strength == 0.8
    assert presets["ink_wash"].style_weight == 10000.0  # the tuned presets keep their settings
