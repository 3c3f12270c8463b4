"""Installed as a wheel, outside a checkout: ``photostyle init`` sets a folder up and ``process`` runs there.

The wheel is built offline from a copy of the sources (an in-tree build writes ``build/`` and
``*.egg-info`` beside them, and others work in the checkout), installed without its
dependencies into a fresh venv, and run from a temp folder far from the checkout.

The fresh venv sees the test interpreter's packages (torch, Pillow, …) through a ``.pth``
line naming that interpreter's site-packages: ``--system-site-packages`` would show the base
Python's, and torch lives in the project's venv. Paths a ``.pth`` line adds are not site
folders, so the checkout's editable install (its own ``.pth`` there) stays invisible: the
``pipeline`` imported is the wheel's, and the test checks it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from conftest import one_scale, synthetic_photo

REPO = Path(__file__).resolve().parents[1]
#: What a wheel is built from: everything else in the checkout (tests, docs, bench) stays out of the copy.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "config.yaml", "styles", "pipeline", "plugins")


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(arg) for arg in args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin/`` folder of a fresh venv with photostyle installed from a freshly built wheel."""
    base = tmp_path_factory.mktemp("wheel")
    source, wheels, venv = base / "source", base / "wheels", base / "venv"
    source.mkdir()
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.is_file():
            shutil.copyfile(path, source / name)
    _ok(_run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
             ".", "-w", wheels, cwd=source))
    [wheel] = wheels.glob("photostyle-*.whl")
    _ok(_run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base))
    python = venv / "bin" / "python"
    _ok(_run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index",
             wheel, cwd=base))
    # Only now the test's packages: pip installing the wheel sees no photostyle (the checkout's) in the venv.
    purelib = _ok(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=base))
    ours = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    Path(purelib.stdout.strip(), "_photostyle_test_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    shutil.rmtree(source)  # nothing of the sources is left to be found by accident
    where = _ok(_run(python, "-c", "import pipeline; print(pipeline.__file__)", cwd=base)).stdout.strip()
    assert Path(where).is_relative_to(venv), f"pipeline imported from {where}, not from the wheel"
    return venv / "bin"


def test_the_wheel_carries_the_bundled_config_and_styles(installed: Path, tmp_path: Path) -> None:
    """``init`` writes the bundled config.yaml unchanged, copies the styles and makes the folders."""
    folder = tmp_path / "art"
    folder.mkdir()
    result = _ok(_run(installed / "photostyle", "init", cwd=folder))
    assert (folder / "config.yaml").read_text() == (REPO / "config.yaml").read_text(), "the one source, as it is"
    styles = sorted(path.name for path in (REPO / "styles").iterdir()
                    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    assert styles and all((folder / "styles" / name).read_bytes() == (REPO / "styles" / name).read_bytes()
                          for name in styles)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    for name in ("outbox", "processed", "failed", "state"):
        assert (folder / name).is_dir(), name
    assert all((folder / "inbox" / preset).is_dir() for preset in config["presets"])
    assert (folder / "config.schema.json").is_file(), "the first line of config.yaml points to it"
    assert "photostyle watch" in result.stdout

    again = _run(installed / "photostyle", "init", folder, cwd=tmp_path)
    assert again.returncode == 2, again
    [line] = again.stderr.strip().splitlines()
    assert "already exists" in line and str(folder / "config.yaml") in line


def test_without_a_config_watch_and_process_name_init(installed: Path, tmp_path: Path) -> None:
    for command in (["watch"], ["process", "photo.jpg"]):
        result = _run(installed / "photostyle", *command, cwd=tmp_path)
        assert result.returncode == 2, result
        [line] = result.stderr.strip().splitlines()
        assert "config file not found" in line and "`photostyle init`" in line, line


def test_init_then_process_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    folder = tmp_path / "project"
    _ok(_run(installed / "photostyle", "init", folder, cwd=tmp_path))
    config_path = folder / "config.yaml"
    config = yaml.safe_load(config_path.read_text())  # made tiny and weight-free, so it runs in seconds
    config["device"] = "cpu"
    config["model"]["weights"] = "random"
    config["preset_defaults"].update({"size": 32, "iterations": 2, "schedule": one_scale()})
    preset = config["default_preset"]
    for key in ("size", "iterations", "schedule", "time_budget"):
        config["presets"][preset].pop(key, None)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    photo = tmp_path / "holiday.jpg"
    synthetic_photo().save(photo, quality=95)

    result = _ok(_run(installed / "photostyle", "process", photo, "--json", cwd=folder))
    output = Path(yaml.safe_load(result.stdout.strip().splitlines()[-1])["output"])
    assert output.is_file() and output.is_relative_to(folder / "outbox" / preset), output
