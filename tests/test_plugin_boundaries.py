"""Plugins through pluggy, and plugins that do not reach into each other.

Notification hooks are called by pluggy itself (``pm.hook.NAME``), in its order, with
a failing plugin still named; an implementation with an option no hook supports
(a wrapper) is refused when registered; and the engine gets the colour
preparation through the ``style_preparation`` hook, never by importing ``color``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, run_cli, write_text
from pipeline.app import load_app
from pipeline.cli import main
from pipeline import hookimpl
from pipeline.errors import PluginError, WeightsError
from pipeline.execution.worker import Worker

HEADER = "from pipeline import hookimpl\n\n"

# Returns the photo as it is: the stylize stage without torch, for tests about the hooks around it.
IDENTITY_ENGINE = """
@hookimpl
def stylize(image, ctx):
    return image
"""


def plugin_file(folder: Path, name: str, body: str) -> Path:
    return write_text(folder / f"{name}.py", HEADER + textwrap.dedent(body))


def without_engine(make_config, folder: Path, **preset) -> Path:
    """A config whose plugins.paths is ``folder`` (with an identity engine in it) and no vgg_style."""
    plugin_file(folder, "aa_engine", IDENTITY_ENGINE)
    return make_config(extra={"plugins": {"paths": [str(folder)], "disabled": ["vgg_style"]}},
                       preset={"output": {"format": "png"}, **preset})


# --- options no hook supports --------------------------------------------------------------------


@pytest.mark.parametrize(("hook", "option", "body"), [
    ("job_finished", "wrapper", "def job_finished(ctx, result):\n    return (yield)\n"),
    ("postprocess", "hookwrapper", "def postprocess(image, ctx):\n    yield\n"),
    ("stylize", "wrapper", "def stylize(image, ctx):\n    return (yield)\n"),
])
def test_a_wrapper_implementation_is_refused_at_register_naming_plugin_and_hook(
    make_config, tmp_path: Path, hook: str, option: str, body: str
) -> None:
    # It used to be dropped without a word: the plugin loaded, and its wrapper was never called.
    wrapping = plugin_file(tmp_path / "plug", "wrapping", f"@hookimpl({option}=True)\n{body}")
    with pytest.raises(PluginError) as info:
        load_app(make_config(extra={"plugins": {"paths": [str(wrapping)]}}))
    message = str(info.value)
    assert "\n" not in message
    assert f"plugin 'wrapping' ({wrapping})" in message and f"hook {hook!r}" in message
    assert f"{option}=True" in message


def test_an_entry_point_plugin_with_a_wrapper_is_refused_with_one_line(make_config, tmp_path: Path) -> None:
    site = tmp_path / "site"
    plugin_file(site, "photostyle_wrap", "@hookimpl(wrapper=True)\ndef job_started(ctx):\n    return (yield)\n")
    dist = site / "photostyle_wrap-1.0.dist-info"
    write_text(dist / "METADATA", "Metadata-Version: 2.1\nName: photostyle-wrap\nVersion: 1.0\n")
    write_text(dist / "entry_points.txt", "[photostyle]\nwrap = photostyle_wrap\n")
    result = run_cli("plugins", "-c", make_config(), env={"PYTHONPATH": str(site)})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "plugin 'wrap'" in line and "hook 'job_started'" in line and "wrapper=True" in line


def test_tryfirst_and_trylast_are_still_accepted(make_config, tmp_path: Path) -> None:
    ordered = plugin_file(tmp_path / "plug", "ordered", """
        @hookimpl(tryfirst=True)
        def job_started(ctx):
            pass

        @hookimpl(trylast=True)
        def postprocess(image, ctx):
            return image
    """)
    app = load_app(make_config(extra={"plugins": {"paths": [str(ordered)]}}))
    assert [impl.plugin_name for impl in app.host._ordered("postprocess")][-1] == "ordered"


# --- notifications through pluggy ----------------------------------------------------------------


NOTIFY_RECORDER = """
import inspect

LOG = {log!r}


def _write(line):
    with open(LOG, "a") as handle:
        handle.write(line + "\\n")


def _caller():
    # who called this implementation: pluggy's hook caller, or photostyle calling the function itself
    modules = [frame.frame.f_globals.get("__name__", "") for frame in inspect.stack()[2:6]]
    return "pluggy" if any(name.startswith("pluggy") for name in modules) else "direct"


@hookimpl
def prepare(preset_name, preset, resources):
    _write("{name} prepare " + _caller())


@hookimpl
def job_started(ctx):
    _write("{name} job_started " + _caller())


@hookimpl
def job_finished(ctx, result):
    _write("{name} job_finished " + _caller())


@hookimpl
def job_failed(ctx, error):
    _write("{name} job_failed " + _caller())
"""


def test_notification_hooks_are_called_through_pluggy_in_its_order(make_config, tmp_path: Path,
                                                                    photo: Path) -> None:
    log = tmp_path / "events.log"
    folder = tmp_path / "plug"
    for name in ("first", "second"):  # registered in this order (a folder's files are sorted)
        plugin_file(folder, name, NOTIFY_RECORDER.format(log=str(log), name=name))
    broken = photo.with_name("broken.jpg")
    broken.write_text("not a photo")
    config = without_engine(make_config, folder)
    assert main(["process", str(photo), str(broken), "-c", str(config), "-o", str(tmp_path / "out")]) == 1
    events = log.read_text().splitlines()
    assert {event.rsplit(" ", 1)[1] for event in events} == {"pluggy"}, events
    # pluggy's order: the plugin registered last is told first
    assert [event.rsplit(" ", 1)[0] for event in events] == [
        "second prepare", "first prepare",
        "second job_started", "first job_started", "second job_finished", "first job_finished",
        "second job_started", "first job_started", "second job_failed", "first job_failed",
    ]


def test_a_failing_notification_is_logged_with_its_plugin_and_the_others_are_still_told(
    make_config, tmp_path: Path, photo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "events.log"
    folder = tmp_path / "plug"
    plugin_file(folder, "first", NOTIFY_RECORDER.format(log=str(log), name="first"))
    plugin_file(folder, "second", """
        @hookimpl
        def job_finished(ctx, result):
            raise RuntimeError("mail server down")
    """)
    plugin_file(folder, "third", NOTIFY_RECORDER.format(log=str(log), name="third"))
    config = without_engine(make_config, folder)
    with caplog.at_level(logging.WARNING):
        assert main(["process", str(photo), "-c", str(config), "-o", str(tmp_path / "out")]) == 0
    finished = [event for event in log.read_text().splitlines() if "job_finished" in event]
    assert finished == ["third job_finished pluggy", "first job_finished pluggy"]  # once each, either side
    assert "job_finished stage (plugin 'second') failed: RuntimeError: mail server down" in caplog.text


def test_a_failing_job_started_fails_that_photo_naming_its_plugin(make_config, tmp_path: Path, photo: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "plug"
    plugin_file(folder, "picky", """
        @hookimpl
        def job_started(ctx):
            if ctx.source.stem == "bad":
                raise ValueError("not this one")
    """)
    bad = photo.with_name("bad.jpg")
    bad.write_bytes(photo.read_bytes())
    config = without_engine(make_config, folder)
    assert main(["process", str(bad), str(photo), "-c", str(config), "-o", str(tmp_path / "out")]) == 1
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert "job_started stage (plugin 'picky') failed: ValueError: not this one" in line
    assert (tmp_path / "out" / "holiday.png").is_file() and not (tmp_path / "out" / "bad.png").exists()


def test_prepare_errors_name_the_plugin_or_pass_through(make_config, tmp_path: Path) -> None:
    folder = tmp_path / "plug"
    plugin_file(folder, "needy", """
        from pipeline.errors import WeightsError

        @hookimpl
        def prepare(preset_name, preset, resources):
            if preset.size == 32:
                raise WeightsError("weights for needy are missing")
            raise KeyError("model")
    """)
    refused = Worker(load_app(without_engine(make_config, folder)))
    with pytest.raises(WeightsError, match="weights for needy are missing"):
        refused.prepare("tiny")
    broken = Worker(load_app(without_engine(make_config, folder, size=40)))
    with pytest.raises(PluginError, match=r"^plugin 'needy': prepare raised KeyError: 'model'$"):
        broken.prepare("tiny")


# --- colour preparation reaches the engine through a hook ----------------------------------------


def test_the_engine_does_not_import_the_color_plugin(make_config, photo: Path, tmp_path: Path) -> None:
    config = make_config(extra={"plugins": {"disabled": ["color"]}})
    script = (
        "import sys; from pipeline.cli import main\n"
        f"code = main(['process', {str(photo)!r}, '-c', {str(config)!r}, '-o', {str(tmp_path / 'out')!r}])\n"
        "print('exit', code, 'torch' in sys.modules, 'plugins.color' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.stdout.splitlines()[-1] == "exit 0 True False", result.stdout + result.stderr


def test_with_color_disabled_the_engine_does_no_colour_work(make_config, tmp_path: Path, photo: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Another plugin may own a ``preserve_color`` key once ``color`` is disabled: it is not the engine's cue."""
    impostor = plugin_file(tmp_path / "plug", "impostor", """
        @hookimpl
        def preset_options():
            return {"preserve_color": (str, "histogram")}
    """)
    config = make_config(extra={"plugins": {"paths": [str(impostor)], "disabled": ["color"]}})
    assert main(["process", str(photo), "-c", str(config), "-o", str(tmp_path / "out"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    # the preset's own style targets, made in advance by prepare: no per-photo (recoloured) ones
    assert record["style_targets"]["source"] == "memory"


def test_a_plugin_prepares_what_the_network_sees_through_the_hook(make_config, tmp_path: Path, photo: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "prepared.log"
    greyish = plugin_file(tmp_path / "plug", "greyish", f"""
        from PIL import ImageOps
        from pipeline.job.context import StylePreparation

        def _noted(what, image):
            with open({str(log)!r}, "a") as handle:
                handle.write(f"{{what}} {{image.size[0]}}x{{image.size[1]}}\\n")
            return ImageOps.grayscale(image).convert("RGB")

        @hookimpl
        def style_preparation(preset):
            return lambda photo: StylePreparation(
                key=["greyish", photo.size[0]],
                content=lambda image: _noted("content", image),
                style=lambda image: _noted("style", image),
            )
    """)
    config = make_config(extra={"plugins": {"paths": [str(greyish)], "disabled": ["color"]}})
    assert main(["process", str(photo), "-c", str(config), "-o", str(tmp_path / "out"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["style_targets"]["source"] == "computed"  # per photo: nothing warmed in advance
    events = log.read_text().splitlines()
    assert "content 32x24" in events and any(event.startswith("style ") for event in events)


def test_no_plugin_imports_another() -> None:
    """Each built-in plugin (a module or a package under ``plugins/``) imports only the core and itself."""
    import ast

    plugins = REPO / "plugins"
    names = {path.stem for path in plugins.glob("*.py") if path.stem != "__init__"}
    names |= {path.name for path in plugins.iterdir() if (path / "__init__.py").is_file()}
    crossings = []
    for name in sorted(names):
        files = [plugins / f"{name}.py"] if (plugins / f"{name}.py").is_file() else sorted((plugins / name).rglob("*.py"))
        for path in files:
            for node in ast.walk(ast.parse(path.read_text())):
                modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                           else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                for module in modules:
                    parts = module.split(".")
                    if parts[0] == "plugins" and len(parts) > 1 and parts[1] != name:
                        crossings.append(f"{path.relative_to(REPO)} imports {module}")
    assert crossings == []


class Mailer:
    """A plugin written as a class: two instances share the code of their hook implementations."""

    def __init__(self, name: str, told: list[str], down: bool = False) -> None:
        self.name, self.told, self.down = name, told, down

    @hookimpl
    def job_failed(self, ctx, error):
        if self.down:
            raise ConnectionError(f"{self.name} is down")
        self.told.append(self.name)


def test_a_failure_is_traced_to_the_instance_that_raised(caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.plugin_host import PluginHost

    host = PluginHost()
    told: list[str] = []
    for name, down in (("office", False), ("home", True), ("phone", False)):
        host.register(Mailer(name, told, down), name, "test")
    with caplog.at_level(logging.WARNING):
        host.notify("job_failed", fatal=False, ctx=None, error="boom")
    assert told == ["phone", "office"]
    assert "job_failed stage (plugin 'home') failed: ConnectionError: home is down" in caplog.text


def test_a_notification_asking_to_stop_is_not_swallowed() -> None:
    from pipeline.errors import Cancelled
    from pipeline.plugin_host import PluginHost

    class Stopper:
        @hookimpl
        def job_finished(self, ctx, result):
            raise Cancelled("shutting down")

    host = PluginHost()
    host.register(Stopper(), "stopper", "test")
    with pytest.raises(Cancelled):
        host.notify("job_finished", fatal=False, ctx=None, result=None)
