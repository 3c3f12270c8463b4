"""Plugins: loading from all three sources, hook order, blame on failure, the README example."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, run_cli, write_text
from pipeline.app import load_app
from pipeline.cli import main
from pipeline.errors import PluginError


def plugin_file(folder: Path, name: str, body: str) -> Path:
    header = "from PIL import Image, ImageOps\nfrom pipeline import hookimpl\n\n"
    return write_text(folder / f"{name}.py", header + textwrap.dedent(body))


def test_builtins_are_listed_with_source_and_hooks(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "-c", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"vgg_style\s+\(built-in\)\n\s+hooks: prepare, preset_options, stylize, stylize_batch, train_model", out)
    for name in ("color", "resize", "watermark"):
        assert re.search(rf"{name}\s+\(built-in\)\n\s+hooks: postprocess, preset_options", out)


@pytest.mark.parametrize("command", ["check", "plugins", "presets", "status"])
def test_commands_that_do_not_stylise_load_every_plugin_without_importing_torch(
    config_file: Path, command: str
) -> None:
    # Importing torch takes 2-3 s on a CPU; vgg_style imports it on its first hook call, not when loaded.
    script = (
        "import sys; from pipeline.cli import main\n"
        f"code = main([{command!r}, '-c', {str(config_file)!r}])\n"
        "print('exit', code, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.stdout.splitlines()[-1] == "exit 0 False", result.stdout + result.stderr


def test_builtin_postprocess_order_is_color_resize_watermark_then_plugins(make_config, tmp_path: Path) -> None:
    extra = plugin_file(tmp_path / "plug", "late", """
        @hookimpl
        def postprocess(image, ctx):
            return image
    """)
    app = load_app(make_config(extra={"plugins": {"paths": [str(extra)]}}))
    order = [impl.plugin_name for impl in app.host._ordered("postprocess")]
    assert order == ["color", "resize", "watermark", "late"]


def test_local_plugin_file_and_folder_are_loaded_and_listed(make_config, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    single = plugin_file(tmp_path / "one", "single", "@hookimpl\ndef job_started(ctx):\n    pass\n")
    folder = tmp_path / "many"
    plugin_file(folder, "first", "@hookimpl\ndef job_finished(ctx, result):\n    pass\n")
    plugin_file(folder, "second", "@hookimpl\ndef job_failed(ctx, error):\n    pass\n")
    write_text(folder / "_helper.py", "raise RuntimeError('private modules are not plugins')\n")
    config = make_config(extra={"plugins": {"paths": [str(single), str(folder)]}})
    assert main(["plugins", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"single  ({single})" in out and "hooks: job_started" in out
    assert f"first  ({folder / 'first.py'})" in out and f"second  ({folder / 'second.py'})" in out


def test_entry_point_plugins_are_loaded(make_config, tmp_path: Path) -> None:
    site = tmp_path / "site"
    plugin_file(site, "photostyle_shout", "@hookimpl\ndef job_started(ctx):\n    pass\n")
    dist = site / "photostyle_shout-1.2.dist-info"
    write_text(dist / "METADATA", "Metadata-Version: 2.1\nName: photostyle-shout\nVersion: 1.2\n")
    write_text(dist / "entry_points.txt", "[photostyle]\nshout = photostyle_shout\n")
    config = make_config()
    result = run_cli("plugins", "-c", config, env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    assert "shout  (entry point (photostyle-shout 1.2))" in result.stdout
    disabled = make_config(extra={"plugins": {"disabled": ["shout"]}})
    result = run_cli("plugins", "-c", disabled, env={"PYTHONPATH": str(site)})
    assert "shout" not in result.stdout


def test_misspelled_hook_fails_at_start_naming_plugin_and_hook(make_config, tmp_path: Path, photo: Path) -> None:
    typo = plugin_file(tmp_path / "plug", "typo", "@hookimpl\ndef postproces(image, ctx):\n    return image\n")
    config = make_config(extra={"plugins": {"paths": [str(typo)]}})
    result = run_cli("process", photo, "-c", config)
    assert result.returncode == 2
    assert "plugin 'typo'" in result.stderr and "unknown hook 'postproces'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (config.parent / "outbox").exists()


def test_plugin_that_fails_to_import_is_reported(make_config, tmp_path: Path) -> None:
    broken = write_text(tmp_path / "plug" / "broken.py", "import does_not_exist\n")
    config = make_config(extra={"plugins": {"paths": [str(broken)]}})
    with pytest.raises(PluginError, match=r"broken\.py: plugin failed to import: ModuleNotFoundError"):
        load_app(config)


def test_hook_with_arguments_the_spec_lacks_is_refused(make_config, tmp_path: Path) -> None:
    odd = plugin_file(tmp_path / "plug", "odd", "@hookimpl\ndef postprocess(image, ctx, colour):\n    return image\n")
    with pytest.raises(PluginError, match=r"plugin 'odd'.*colour"):
        load_app(make_config(extra={"plugins": {"paths": [str(odd)]}}))


def test_raising_plugin_fails_that_photo_with_its_name_only(make_config, tmp_path: Path, photo: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    picky = plugin_file(tmp_path / "plug", "picky", """
        @hookimpl
        def preprocess(image, ctx):
            if ctx.source.stem.startswith("bad"):
                raise ValueError("I do not like this one")
            return image
    """)
    bad = photo.with_name("bad_photo.jpg")
    bad.write_bytes(photo.read_bytes())
    config = make_config(extra={"plugins": {"paths": [str(picky)]}})
    assert main(["process", str(bad), str(photo), "-c", str(config)]) == 1
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert str(bad) in line and "preprocess stage (plugin 'picky') failed: ValueError: I do not like this one" in line
    assert (config.parent / "outbox" / "tiny" / "holiday.jpg").is_file()
    assert not (config.parent / "outbox" / "tiny" / "bad_photo.jpg").exists()


def test_chain_hook_returning_nothing_fails_the_photo_with_blame(make_config, tmp_path: Path, photo: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    forgetful = plugin_file(tmp_path / "plug", "forgetful", "@hookimpl\ndef postprocess(image, ctx):\n    pass\n")
    config = make_config(extra={"plugins": {"paths": [str(forgetful)]}})
    assert main(["process", str(photo), "-c", str(config)]) == 1
    assert "postprocess stage (plugin 'forgetful') failed: returned no image" in capsys.readouterr().err


def test_a_plugin_can_replace_the_stylize_engine(make_config, tmp_path: Path, photo: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    invert = plugin_file(tmp_path / "plug", "invert", """
        @hookimpl
        def stylize(image, ctx):
            return ImageOps.invert(image)
    """)
    config = make_config(extra={"plugins": {"paths": [str(invert)]}}, preset={"output": {"format": "png"}})
    assert main(["process", str(photo), "-c", str(config), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["stylized_by"] == "invert"
    with Image.open(photo) as original, Image.open(record["output"]) as result:
        assert result.size == original.size  # the engine's working size was never applied
        diff = np.abs(np.asarray(result, dtype=int) - (255 - np.asarray(original, dtype=int)))
        assert diff.mean() < 1


def test_disabling_the_engine_leaves_no_stylize_stage(make_config, photo: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(extra={"plugins": {"disabled": ["vgg_style", "watermark"]}})
    assert main(["plugins", "-c", str(config)]) == 0
    listed = capsys.readouterr().out
    assert "vgg_style" not in listed and "watermark" not in listed and "color" in listed
    assert main(["process", str(photo), "-c", str(config)]) == 1
    assert "no plugin implements stylize" in capsys.readouterr().err


def test_lifecycle_hooks_are_told_about_success_and_failure(make_config, tmp_path: Path, photo: Path) -> None:
    log = tmp_path / "events.log"
    notify = plugin_file(tmp_path / "plug", "notify", f"""
        LOG = {str(log)!r}

        def _write(line):
            with open(LOG, "a") as handle:
                handle.write(line + "\\n")

        @hookimpl
        def job_started(ctx):
            _write("started " + ctx.source.name)

        @hookimpl
        def job_finished(ctx, result):
            _write("finished " + result.output.name)

        @hookimpl
        def job_failed(ctx, error):
            _write("failed " + ctx.source.name + " " + error)
    """)
    broken = tmp_path / "broken.jpg"
    broken.write_text("nope")
    config = make_config(extra={"plugins": {"paths": [str(notify)]}})
    assert main(["process", str(photo), str(broken), "-c", str(config)]) == 1
    events = log.read_text().splitlines()
    assert events[:3] == ["started holiday.jpg", "finished holiday.jpg", "started broken.jpg"]
    assert events[3].startswith("failed broken.jpg") and "not an image" in events[3]


def test_failing_notification_after_save_does_not_fail_the_photo(make_config, tmp_path: Path, photo: Path) -> None:
    grumpy = plugin_file(tmp_path / "plug", "grumpy", """
        @hookimpl
        def job_finished(ctx, result):
            raise RuntimeError("mail server down")
    """)
    config = make_config(extra={"plugins": {"paths": [str(grumpy)]}})
    assert main(["process", str(photo), "-c", str(config)]) == 0


def test_plugin_options_are_validated_with_the_config(make_config, tmp_path: Path) -> None:
    plugin_file(tmp_path / "plug", "opts", """
        from pydantic import BaseModel, Field

        class Options(BaseModel):
            level: int = Field(1, ge=1, le=3)

        @hookimpl
        def preset_options():
            return {"opts": (Options | None, None)}
    """)
    config = write_text(tmp_path / "project" / "config.yaml", f"""
        model: {{weights: random}}
        default_preset: p
        plugins:
          paths: [{tmp_path / 'plug'}]
        presets:
          p:
            style: style.png
            opts:
              level: 7
    """)
    from conftest import synthetic_style

    synthetic_style().save(config.parent / "style.png")
    result = run_cli("check", "-c", config)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"{config}:9: presets.p.opts.level: Input should be less than or equal to 3 (got 7)"
    )


def test_two_plugins_claiming_one_preset_key_is_an_error(make_config, tmp_path: Path) -> None:
    clash = plugin_file(tmp_path / "plug", "clash", """
        @hookimpl
        def preset_options():
            return {"resize": (int, 5)}
    """)
    with pytest.raises(PluginError, match=r"plugins 'resize' and 'clash' both define preset key 'resize'"):
        load_app(make_config(extra={"plugins": {"paths": [str(clash)]}}))


def readme_plugin_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Writing a plugin", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_plugin_example_works_as_documented(tmp_path: Path, make_config, photo: Path) -> None:
    sepia = tmp_path / "plug" / "sepia.py"
    sepia.parent.mkdir()
    sepia.write_text(readme_plugin_example())
    plain = make_config(preset={"output": {"format": "png"}})
    assert main(["process", str(photo), "-c", str(plain), "-o", str(tmp_path / "plain")]) == 0
    toned = make_config(extra={"plugins": {"paths": [str(sepia)]}},
                        preset={"output": {"format": "png"}, "sepia": {"strength": 1.0}})
    assert main(["process", str(photo), "-c", str(toned), "-o", str(tmp_path / "toned")]) == 0
    with Image.open(tmp_path / "toned" / "holiday.png") as result:
        rgb = np.asarray(result, dtype=int)
    # fully sepia: every pixel lies on the dark-brown-to-cream ramp, so red >= green >= blue
    assert (rgb[..., 0] >= rgb[..., 1]).all() and (rgb[..., 1] >= rgb[..., 2]).all()
    with Image.open(tmp_path / "plain" / "holiday.png") as untouched:
        plain_rgb = np.asarray(untouched, dtype=int)
    assert not ((plain_rgb[..., 0] >= plain_rgb[..., 1]).all() and (plain_rgb[..., 1] >= plain_rgb[..., 2]).all())
