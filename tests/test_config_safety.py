"""config.yaml as untrusted input: preset names that would escape their folders, folders that alias
each other, YAML alias bombs. Each is refused by `check` with a FILE:LINE error, before anything runs."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, problems_of, run_cli, synthetic_photo, synthetic_style, write_text
from pipeline.app import load_app


SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def preset_config(project: Path, name: str) -> Path:
    return write_text(project / "config.yaml", f"""
        device: cpu
        model: {{weights: random}}
        default_preset: ok
        presets:
          ok: {{style: art/stripes.png, size: 32, iterations: 3}}
          {name}: {{style: art/stripes.png, size: 32, iterations: 3}}
    """)


@pytest.mark.parametrize("name", ["'../../x'", "/abs", "a/b", "'..'", "'.'", "''", ".hidden", "'a\\\\b'", "'x y'"])
def test_a_preset_name_that_is_not_a_plain_folder_name_is_refused_at_its_line(project: Path, name: str) -> None:
    config = preset_config(project, name)
    [problem] = problems_of(config)
    assert problem.startswith(f"{config}:6: presets.")
    assert "a preset name is a folder name: ASCII letters, digits, '_', '-' and '.', not starting with '.'" in problem


def test_process_with_an_escaping_preset_name_writes_nothing_outside_the_outbox(project: Path) -> None:
    config = preset_config(project, "'../../escaped'")
    photo = project / "photo.jpg"
    synthetic_photo().save(photo)
    result = run_cli("process", photo, "--preset", "../../escaped", "-c", config)
    assert result.returncode == 2, result.stderr
    assert f"{config}:6: presets.../../escaped: a preset name is a folder name" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project.parent / "escaped").exists() and not (project / "outbox").exists()


def test_a_refused_preset_name_comes_with_a_safe_one_to_use(project: Path) -> None:
    config = preset_config(project, "Café crème")
    [problem] = problems_of(config)
    assert problem.endswith("(got 'Café crème'; try 'Cafe_creme')")


def test_ordinary_preset_names_are_accepted(project: Path) -> None:
    config = preset_config(project, "Van_Gogh-2.v1")
    assert "Van_Gogh-2.v1" in load_app(config).config.presets


@pytest.mark.parametrize("stem", ["..", "...x", "a b/c", "Nuit étoilée", "$(rm -rf)", "x" * 300, "\udcff\udcfe", "-"])
def test_style_file_names_become_safe_preset_names(stem: str) -> None:
    from pipeline.config import style_preset_name

    name = style_preset_name(stem)
    assert SAFE_NAME.fullmatch(name) and len(name) <= 100 and not name.startswith(".")


def test_style_folder_presets_get_safe_names(project: Path) -> None:
    styles = project / "styles"
    styles.mkdir()
    for file_name in ("Nuit étoilée.png", "a..b.png", "-- x --.jpg", "___.png"):
        synthetic_style().save(styles / file_name)
    config = write_text(project / "config.yaml", """
        default_preset: p
        presets:
          p: {style: art/stripes.png}
    """)
    presets = load_app(config).config.presets
    assert sorted(presets) == ["Nuit_etoilee", "a_b", "p", "style", "x"]
    assert all(SAFE_NAME.fullmatch(name) for name in presets)


FOLDER_CASES = [
    # (config lines, the line and key blamed, words in the message)
    ("outbox: out\nprocessed: out", "2: processed", "is the same folder as outbox"),
    ("state: outbox/state", "1: state", "is inside outbox"),
    ("styles: inbox", "1: styles", "is the same folder as inbox"),
    ("styles: outbox/mosaic", "1: styles", "is inside outbox"),
    ("styles: processed", "1: styles", "is the same folder as processed"),
    ("failed: state", "1: failed", "is the same folder as state"),
    ("processed: inbox/done", "1: processed", "is inside the inbox"),
    ("inbox: outbox/drop", "1: inbox", "is inside outbox"),
    ("inbox: x/in\noutbox: x", "1: inbox", "is inside outbox"),
    ("failed: processed/failed", "1: failed", "is inside processed"),
    ("outbox: ./inbox/../failed", "1: outbox", "is the same folder as failed"),
]


@pytest.mark.parametrize(("lines", "where", "words"), FOLDER_CASES)
def test_folders_that_alias_or_nest_are_refused_at_their_line(project: Path, lines: str, where: str, words: str) -> None:
    config = project / "config.yaml"
    config.write_text(lines + "\ndefault_preset: p\npresets:\n  p: {style: art/stripes.png}\n")
    problems = problems_of(config)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{config}:{where}: ") and words in problems[0], problems[0]


def test_a_symlink_cannot_hide_an_aliased_folder(project: Path) -> None:
    (project / "results").mkdir()
    (project / "published").symlink_to(project / "results")
    config = write_text(project / "config.yaml", """
        outbox: results
        state: published/state
        default_preset: p
        presets:
          p: {style: art/stripes.png}
    """)
    [problem] = problems_of(config)
    assert problem.startswith(f"{config}:2: state: ") and "is inside outbox" in problem


def test_separate_folders_are_accepted(project: Path) -> None:
    config = write_text(project / "config.yaml", """
        inbox: sync/in
        outbox: sync/out
        processed: archive/done
        failed: archive/failed
        state: .state
        styles: art
        default_preset: p
        presets:
          p: {style: art/stripes.png}
    """)
    assert load_app(config).config.outbox == project / "sync" / "out"


def billion_laughs(levels: int, width: int) -> str:
    """``levels`` anchors, each a list of ``width`` aliases of the one before: width**levels values."""
    lines = ["default_preset: p", "presets:", "  p: {style: art/stripes.png}", "l0: &l0 [lol]"]
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_config_is_refused_quickly_in_small_memory(project: Path) -> None:
    """Nine levels of nine aliases (387 million values) once used 21 GB. Here the parser runs in a
    child process limited to 1 GiB of address space: without the bound it dies of MemoryError."""
    config = project / "config.yaml"
    config.write_text(billion_laughs(9, 9))
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from pipeline.config.yamlsource import YamlSyntaxError, read_yaml
        try:
            read_yaml(__import__("pathlib").Path({str(config)!r}))
        except YamlSyntaxError as exc:
            print("\\n".join(exc.format("config.yaml")))
            sys.exit(2)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                            env={"PYTHONPATH": str(REPO)}, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stdout.splitlines()
    assert line.startswith("config.yaml:8: l4.5: aliases ('*name') expand the document past 10000 values here")


def test_check_refuses_an_alias_bomb_with_its_line(project: Path) -> None:
    config = project / "config.yaml"
    config.write_text(billion_laughs(6, 10))  # a million values: small enough not to hurt without the bound
    result = run_cli("check", "-c", config)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{config}:8: l4.3: aliases ('*name') expand the document past 10000 values")
    assert "Traceback" not in result.stderr


def test_modest_aliases_and_merge_keys_still_work(project: Path) -> None:
    config = write_text(project / "config.yaml", """
        default_preset: a
        presets:
          a: &base
            style: art/stripes.png
            size: 64
          b:
            <<: *base
            size: 128
          c: *base
    """)
    presets = load_app(config).config.presets
    assert (presets["a"].size, presets["b"].size, presets["c"].size) == (64, 128, 64)
    assert presets["b"].style == project / "art" / "stripes.png"


@pytest.mark.parametrize("name", ["index.html", "Index.HTML"])
def test_a_preset_named_like_the_outbox_s_own_files_is_refused_by_check(project: Path, name: str) -> None:
    """Seen: a preset ``index.html`` passed ``check``, and its results could never be saved ("File exists",
    retried forever): ``outbox/index.html`` is the gallery page."""
    config = preset_config(project, name)
    result = run_cli("check", "-c", config)
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"{config}:6: presets.{name}: '{name}' is taken: outbox/index.html is the gallery page")
    assert "Traceback" not in result.stderr


def test_every_name_photostyle_keeps_at_the_top_of_the_outbox_is_refused_as_a_preset_name() -> None:
    from pipeline.config import OUTBOX_OWN_NAMES, preset_name_problem
    from pipeline.gallery.page import INDEX_NAME
    from pipeline.gallery.thumbnails import THUMBS_DIR

    assert {INDEX_NAME, THUMBS_DIR} <= set(OUTBOX_OWN_NAMES)
    assert all(preset_name_problem(name) for name in OUTBOX_OWN_NAMES)
    assert preset_name_problem("index") is None and preset_name_problem("index.htm") is None


def test_an_alias_that_contains_itself_is_refused_at_its_line_before_it_costs_memory(project: Path) -> None:
    """Seen: ``cyc: &c [*c]`` in a 413-byte config cost 425 MB: the loop was walked, one level deeper per
    step, until the alias limit stopped it. It is now found on the composed graph, before any walk."""
    import tracemalloc

    from pipeline.config.yamlsource import YamlSyntaxError, parse_yaml

    config = project / "config.yaml"
    config.write_text("default_preset: p\npresets:\n  p: {style: art/stripes.png}\nloop: &loop [1, *loop]\n")
    [problem] = problems_of(config)
    assert problem.startswith(f"{config}:4: loop.1: an alias ('*name') here refers to a value that contains it")

    config.write_text("default_preset: p\npresets:\n  p: {style: art/stripes.png}\ncyc: &c [*c]\n")
    result = run_cli("check", "-c", config)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"{config}:4: cyc.0: an alias ('*name') here refers to a value that contains it")
    assert "Traceback" not in result.stderr

    tracemalloc.start()
    try:
        for text in ("cyc: &c [*c]\n", "a: &m {b: {c: [1, {d: *m}]}}\n", "m: &m {x: 1, <<: *m}\n"):
            with pytest.raises(YamlSyntaxError, match="refers to a value that contains it"):
                parse_yaml(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"{peak} bytes to refuse three loops of a few bytes each"


def test_aliases_that_stack_deep_nesting_are_refused_in_small_memory() -> None:
    """Without a loop, aliases can still stack a file's nesting many times over; every value's key path
    is as long as its depth, so depth is bounded too."""
    import tracemalloc

    from pipeline.config.yamlsource import YamlSyntaxError, parse_yaml

    lines = ["l0: &l0 " + "[" * 50 + "x" + "]" * 50]
    lines += [f"l{n}: &l{n} " + "[" * 50 + f"*l{n - 1}" + "]" * 50 for n in range(1, 100)]
    tracemalloc.start()
    try:
        with pytest.raises(YamlSyntaxError) as refused:
            parse_yaml("\n".join(lines) + "\n")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, f"{peak} bytes for a 10 KB file"
    [problem] = refused.value.format("c.yaml")
    assert re.fullmatch(r"c\.yaml:2: l1: values nest more than \d+ levels deep here: .*", problem), problem
