"""The systemd unit and the service's weights: any path reads back intact, sudo installs use the caller's cache.

``systemd-analyze verify`` is the judge of the unit's syntax: it warns about a split
``Environment=`` assignment and fails when ``ExecStart=``'s executable does not
exist, which is what a ``%`` expanded as a specifier or a path split at a space
produces. The units are rendered with a real executable (this Python, as a venv of
links in a folder with the hostile name) so that check means something. ``verify``
is not enough: a unit it accepts may still fail to start (``/usr/bin/env`` took a
path with ``=`` for an assignment), so the command line is also parsed the way
systemd parses it and run.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
import torch

from conftest import run_cli, write_config
from pipeline.app import load_app
from pipeline.cli import main
from pipeline.engine.nst.layers import init_like_torchvision, vgg19_features
from pipeline.service.install import TRAMPOLINE, ServiceAccount, install, plan_install, render_unit, sandbox_warnings
from pipeline.engine.weights import import_weights

HOSTILE_NAMES = [
    "with space",
    "per%cent %h %n %z",
    "quote's \"double\"",
    "back\\slash",
    "dollar $HOME ${USER}",
    "ünïcödé ☃ 写真",
    "all of it: %h $X 'q' \"d\" \\ ü",
    "a=b'c",  # /usr/bin/env read "…/a=b'c/venv/bin/python" as an assignment
    "x=y \"q\" $Z",
]


def _unquote_list(value: str) -> list[str]:
    """Split a list setting the way systemd.syntax(7) says: whitespace separates, quotes group, backslash escapes."""
    words: list[str] = []
    current: list[str] | None = None
    quote = None
    chars = iter(value)
    for char in chars:
        if char == "\\":
            current = (current or []) + [next(chars)]
        elif quote:
            if char == quote:
                quote = None
            else:
                current = (current or []) + [char]
        elif char in "\"'":
            quote, current = char, current or []
        elif char.isspace():
            if current is not None:
                words.append("".join(current))
            current = None
        else:
            current = (current or []) + [char]
    assert quote is None, f"unterminated quote in {value!r}"
    if current is not None:
        words.append("".join(current))
    return words


def _settings(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def _venv_python(venv: Path) -> Path:
    """A Python at ``venv/bin/python`` that imports what this one does (photostyle included), made of links.

    A bare link to a venv's Python would not find the venv (Python looks for ``pyvenv.cfg`` beside the path
    it was started by), so a venv is a ``pyvenv.cfg`` and a link to this venv's ``site-packages``.
    """
    python = venv / "bin" / "python"
    python.parent.mkdir(parents=True)
    if sys.prefix == sys.base_prefix:  # not a venv: the interpreter finds its own prefix through the link
        python.symlink_to(sys.executable)
        return python
    python.symlink_to(os.path.realpath(sys.executable))
    shutil.copyfile(Path(sys.prefix) / "pyvenv.cfg", venv / "pyvenv.cfg")
    purelib = Path(sysconfig.get_paths()["purelib"])
    site = venv / purelib.relative_to(sys.prefix)
    site.parent.mkdir(parents=True)
    site.symlink_to(purelib, target_is_directory=True)
    return python


def _hostile_project(root: Path, name: str) -> tuple[Path, Path, ServiceAccount]:
    """A project, a Python executable and a torch cache, all in folders called ``name``."""
    config = write_config(root / name / "project")
    python = _venv_python(root / name / "venv")
    me = pwd.getpwuid(os.geteuid())
    account = ServiceAccount(me.pw_name, me.pw_uid, me.pw_gid, Path(me.pw_dir), root / name / "torch cache", "test")
    return config, python, account


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_unit_values_read_back_exactly_for_hostile_paths(tmp_path: Path, name: str) -> None:
    config_path, python, account = _hostile_project(tmp_path, name)
    app = load_app(config_path)
    settings = _settings(render_unit(app.config, app.config_path, user=False, account=account, python=python))

    def unspecified(text: str) -> str:
        assert "%" not in text.replace("%%", ""), f"an unescaped specifier in {text!r}"
        return text.replace("%%", "%")

    [exec_start] = settings["ExecStart"]
    executable, *arguments = [unspecified(word) for word in _unquote_list(exec_start)]
    assert all("$" not in arg.replace("$$", "") for arg in arguments), "a $ that systemd would expand"
    arguments = [arg.replace("$$", "$") for arg in arguments]
    if [executable, *arguments[:2]] == TRAMPOLINE:  # the way to run an executable whose path systemd would refuse
        executable, *arguments = arguments[2:]
    assert executable == str(python)
    assert arguments == ["-m", "pipeline", "watch", "-c", str(app.config_path)]
    environment = [unspecified(word) for value in settings["Environment"] for word in _unquote_list(value)]
    assert f"TORCH_HOME={account.torch_home}" in environment
    [working_directory] = settings["WorkingDirectory"]
    assert unspecified(working_directory) == str(app.config_path.parent)
    [read_write] = settings["ReadWritePaths"]
    folders = [unspecified(word) for word in _unquote_list(read_write)]
    root = app.config_path.parent
    assert folders == [f"-{root / f}" for f in ("inbox", "outbox", "processed", "failed", "state")] + [
        f"-{account.torch_home / 'hub'}"
    ]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (apt-get install systemd); it is the judge of unit syntax")
@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_systemd_analyze_verify_accepts_units_for_hostile_paths(tmp_path: Path, user: bool) -> None:
    for index, name in enumerate(HOSTILE_NAMES):
        config_path, python, account = _hostile_project(tmp_path, name)
        app = load_app(config_path)
        unit = tmp_path / f"units-{index}" / "photostyle.service"
        unit.parent.mkdir()
        unit.write_text(render_unit(app.config, app.config_path, user=user, account=account, python=python))
        verified = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                                  capture_output=True, text=True, timeout=120)
        complaints = [line for line in (verified.stdout + verified.stderr).splitlines() if "photostyle" in line]
        assert verified.returncode == 0 and not complaints, f"{name!r}:\n{verified.stdout}{verified.stderr}"


def _systemd_argv(exec_start: str) -> list[str]:
    """``ExecStart=``'s value as the argv systemd executes (systemd.unit(5), systemd.syntax(7), systemd.service(5)).

    Specifiers first (only ``%%`` is written), then the split into words (quotes group, backslash escapes), then
    variables in the arguments (``$$`` is a ``$``; no variable is ever meant). The executable takes no prefix.
    """
    assert re.fullmatch(r"(?:[^%]|%%)*", exec_start), f"a specifier systemd would expand in {exec_start!r}"
    words = _unquote_list(exec_start.replace("%%", "%"))
    assert words and words[0].startswith("/"), f"not an absolute executable: {words!r}"
    for argument in words[1:]:
        assert "$" not in argument.replace("$$", ""), f"a variable systemd would expand in {argument!r}"
    return [words[0]] + [argument.replace("$$", "$") for argument in words[1:]]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_the_unit_s_command_line_runs_as_systemd_parses_it(tmp_path: Path, name: str) -> None:
    """Seen: a venv under ``/tmp/a=b'c/`` gave a unit that ``verify`` accepted but that could not start, because
    ``/usr/bin/env`` took the Python's path for an assignment. The command line is parsed as systemd parses it and
    run, with ``check`` for ``watch`` (the only change), in the unit's working folder and environment."""
    config_path, python, account = _hostile_project(tmp_path, name)
    app = load_app(config_path)
    settings = _settings(render_unit(app.config, app.config_path, user=True, account=account, python=python))
    [exec_start] = settings["ExecStart"]
    argv = _systemd_argv(exec_start)
    assert argv.count("watch") == 1 and argv[-4:] == ["pipeline", "watch", "-c", str(app.config_path)], argv
    argv[argv.index("watch")] = "check"
    environment = dict(word.replace("%%", "%").split("=", 1)
                       for value in settings["Environment"] for word in _unquote_list(value))
    [folder] = settings["WorkingDirectory"]
    run = subprocess.run(argv, cwd=folder.replace("%%", "%"), env={**os.environ, **environment},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{name!r}: {argv!r}\n{run.stdout}{run.stderr}"
    assert run.stdout.startswith(f"{app.config_path}: OK"), run.stdout  # the config's path arrived intact
    if not any(char in str(python) for char in "\"'\\"):
        assert argv[0] == str(python), "the Python is run directly when systemd accepts its path"


def test_a_path_with_a_newline_is_refused_with_one_line(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "new\nline")
    assert main(["service", "install", "--dry-run", "-c", str(config)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and "control character" in line


@pytest.mark.skipif(os.geteuid() != 0, reason="a system unit under sudo is written by root")
def test_a_system_unit_written_under_sudo_runs_as_the_caller_with_their_torch_cache(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    caller = pwd.getpwnam("nobody")
    monkeypatch.setenv("SUDO_USER", "nobody")
    monkeypatch.setenv("TORCH_HOME", "/root/roots-own-cache")
    app = load_app(write_config(tmp_path / "project"))
    plan = plan_install(app.config, app.config_path, user=False)
    settings = _settings(plan.text)
    cache = Path(caller.pw_dir) / ".cache" / "torch"
    assert settings["User"] == ["nobody"]
    assert f"TORCH_HOME={cache}" in settings["Environment"]
    assert f"-{cache / 'hub'}" in settings["ReadWritePaths"][0].split()
    assert "roots-own-cache" not in plan.text
    assert any("who ran sudo" in note and str(cache) in note for note in plan.notes), "it says whose cache"

    existing = tmp_path / "project" / "state"
    existing.mkdir()
    install(dataclasses.replace(plan, path=tmp_path / "unit" / "photostyle.service",
                                folders=[f for f in plan.folders if tmp_path in f.parents]))
    assert (tmp_path / "unit" / "photostyle.service").read_text() == plan.text
    for name in ("inbox", "outbox", "processed", "failed"):
        assert (tmp_path / "project" / name).stat().st_uid == caller.pw_uid, f"{name}/ is the service account's"
    assert existing.stat().st_uid == 0, "folders that existed are left as they were"

    kept = Path(caller.pw_dir) / "my-torch"  # sudo -E kept the caller's own TORCH_HOME: it is inside their home
    monkeypatch.setenv("TORCH_HOME", str(kept))
    assert f"TORCH_HOME={kept}" in _settings(plan_install(app.config, app.config_path, user=False).text)["Environment"]


def test_install_warns_when_the_project_is_under_tmp(capsys) -> None:
    project = Path(tempfile.mkdtemp(prefix="photostyle-test-", dir="/tmp"))
    try:
        config = write_config(project / "p")
        assert main(["service", "install", "--dry-run", "-c", str(config)]) == 0
        printed = capsys.readouterr()
        [warning] = [line for line in printed.err.splitlines() if "PrivateTmp" in line]
        named = warning.removeprefix("warning: ").split(" is under /tmp")[0].split(", ")
        assert warning.startswith("warning: ") and str(config.parent) in named  # (the checkout may be under /tmp too)
        assert "[Service]" in printed.out and "warning" not in printed.out, "the unit on stdout stays a unit"
    finally:
        shutil.rmtree(project)


@pytest.fixture
def tmp_project():
    """A folder under /tmp itself (pytest's own is too, but inside a folder only its owner may enter)."""
    project = Path(tempfile.mkdtemp(prefix="photostyle-test-", dir="/tmp"))
    project.chmod(0o755)
    yield project
    shutil.rmtree(project)


def test_install_refuses_a_unit_whose_folders_private_tmp_hides_and_force_writes_it(tmp_project: Path, monkeypatch,
                                                                                       capsys) -> None:
    """Seen: with the project under /tmp, install wrote a unit that could not start and exited 0."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_project / "xdg"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_project / "torch"))
    config = write_config(tmp_project / "p")
    unit = tmp_project / "xdg" / "systemd" / "user" / "photostyle.service"
    assert main(["service", "install", "--user", "-c", str(config)]) == 2
    printed = capsys.readouterr()
    [line] = printed.err.splitlines()
    assert line.startswith(f"error: not writing {unit}") and "PrivateTmp=yes" in line and str(config.parent) in line
    assert re.search("move (it|them) elsewhere", line) and "--force" in line, "the fix, and the way round it"
    assert printed.out == "" and not unit.exists() and not (config.parent / "inbox").exists()

    assert main(["service", "install", "--user", "--force", "-c", str(config)]) == 0
    printed = capsys.readouterr()
    assert unit.is_file() and "PrivateTmp=yes" in unit.read_text() and (config.parent / "inbox").is_dir()
    assert any(w.startswith("warning: ") and "PrivateTmp=yes" in w for w in printed.err.splitlines())
    assert printed.out.startswith(f"wrote {unit}")


def test_dry_run_says_why_a_unit_cannot_work_before_the_unit(tmp_project: Path) -> None:
    """Seen: the one warning scrolled by above a 40-line unit (``--dry-run | less`` showed only the unit)."""
    config = write_config(tmp_project / "p")
    env = {"XDG_CONFIG_HOME": str(tmp_project / "xdg"), "TORCH_HOME": str(tmp_project / "torch")}
    alone = run_cli("service", "install", "--user", "--dry-run", "-c", config, env=env)
    assert alone.returncode == 0, alone.stderr
    lines = alone.stdout.splitlines()
    why = [i for i, line in enumerate(lines) if line.startswith("# cannot work") and "PrivateTmp=yes" in line]
    assert why and why[0] < lines.index("[Unit]"), alone.stdout
    assert "--force" in lines[why[0]] and not (tmp_project / "xdg").exists()
    merged = subprocess.run([sys.executable, "-m", "pipeline", "service", "install", "--user", "--dry-run",
                             "-c", str(config)], env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=120)
    lines = merged.stdout.splitlines()
    warning = next(i for i, line in enumerate(lines) if line.startswith("warning: ") and "PrivateTmp=yes" in line)
    assert warning < lines.index("[Unit]"), merged.stdout


NOBODY = 65534


def _as_nobody(monkeypatch, torch_home: Path) -> None:
    """The service runs as another account (a system unit under sudo) with this torch cache."""
    account = ServiceAccount("nobody", NOBODY, NOBODY, Path("/nonexistent"), torch_home, "test")
    monkeypatch.setattr("pipeline.service.install.service_account", lambda *, user: account)


def _torch_problems(plan) -> list[str]:
    return [problem for problem in plan.problems if "nobody, whom the service runs as" in problem]


def test_a_torch_cache_the_service_account_cannot_read_is_refused(tmp_project: Path, monkeypatch, capsys,
                                                                  vgg19_file: Path) -> None:
    torch_home = tmp_project / "torch"
    _as_nobody(monkeypatch, torch_home)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_project / "xdg"))
    app = load_app(write_config(tmp_project / "p", extra={"model": {"weights": "torchvision"}}))
    cached = torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    cached.parent.mkdir(parents=True)
    shutil.copyfile(vgg19_file, cached)
    for folder in (torch_home, torch_home / "hub", cached.parent):
        folder.chmod(0o755)
    cached.chmod(0o644)
    assert _torch_problems(plan_install(app.config, app.config_path, user=False)) == []

    torch_home.chmod(0o700)  # only its owner may enter
    [problem] = _torch_problems(plan_install(app.config, app.config_path, user=False))
    assert str(cached) in problem and f"`chmod o+x {torch_home}`" in problem, problem
    assert main(["service", "install", "-c", str(app.config_path)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: not writing") and problem in line

    torch_home.chmod(0o755)
    cached.chmod(0o600)  # e.g. saved by root with a strict umask
    [problem] = _torch_problems(plan_install(app.config, app.config_path, user=False))
    assert f"`chmod o+r {cached}`" in problem, problem

    cached.unlink()  # not cached: the service must be able to download them into checkpoints/
    cached.parent.chmod(0o755)
    [problem] = _torch_problems(plan_install(app.config, app.config_path, user=False))
    assert "download" in problem and f"`sudo chown nobody {cached.parent}`" in problem, problem
    cached.parent.chmod(0o777)
    plan = plan_install(app.config, app.config_path, user=False)
    assert _torch_problems(plan) == [] and any("downloads them (548 MB)" in w for w in plan.warnings)


def test_warnings_name_paths_the_sandbox_hides() -> None:
    paths = [Path("/home/alice/photos/inbox"), Path("/srv/photostyle/outbox"), Path("/var/tmp/cache/hub")]
    hidden_home = sandbox_warnings(paths, "yes")
    assert any("/home/alice/photos/inbox" in w and "ProtectHome=yes" in w for w in hidden_home)
    assert any("/var/tmp/cache/hub" in w and "PrivateTmp=yes" in w for w in hidden_home)
    assert not any("/srv/photostyle" in w for w in hidden_home)
    assert not any("ProtectHome" in w for w in sandbox_warnings(paths, "read-only"))


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory) -> Path:
    features = vgg19_features()
    init_like_torchvision(features, seed=3)
    path = tmp_path_factory.mktemp("weights") / "vgg.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def test_weights_import_writes_a_file_the_service_account_can_read(tmp_path: Path, monkeypatch,
                                                                   vgg19_file: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    old = os.umask(0o077)  # even a strict umask must not make the cache private to the importer
    try:
        cached = import_weights(vgg19_file)
    finally:
        os.umask(old)
    assert cached == tmp_path / "torch-home" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert cached.stat().st_mode & 0o777 == 0o644


def test_weights_status_exit_status_says_whether_weights_are_usable(tmp_path: Path, monkeypatch, capsys,
                                                                    vgg19_file: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("PHOTOSTYLE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no config.yaml here: torchvision's cache is what counts
    assert main(["weights", "status"]) == 3
    missing = capsys.readouterr().out
    assert "not cached" in missing and "weights import" in missing
    assert "weights status" not in missing, "weights status does not send the user to itself"

    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a download")
    assert main(["weights", "status"]) == 3
    assert "unusable" in capsys.readouterr().out

    shutil.copyfile(vgg19_file, cached)
    assert main(["weights", "status"]) == 0

    random = write_config(tmp_path / "random")  # model.weights: random needs nothing cached
    cached.unlink()
    assert main(["weights", "status", "-c", str(random)]) == 0
    elsewhere = write_config(tmp_path / "file", extra={"model": {"weights": str(tmp_path / "nope.pth")}})
    assert main(["weights", "status", "-c", str(elsewhere)]) == 3
    assert "nope.pth" in capsys.readouterr().out
