"""The first run on a new machine: what photostyle says when the weights cannot be had.

Without internet the first ``watch`` stops with exit status 3 (no weights); the message
also says how to try everything else without them. A torch and torchvision that were
not built for each other fail when torchvision is imported to download the weights;
that is said in one line with both versions, simulated here by a ``torchvision``
package that raises what a mismatched one raises, ahead of the real one on the path.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest

from conftest import run_cli
from pipeline.engine import weights
from pipeline.errors import WeightsError

NMS = "operator torchvision::nms does not exist"


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """An empty torch cache and a proxy that refuses connections: torchvision cannot download."""
    dead = "http://127.0.0.1:9"
    return {"TORCH_HOME": str(tmp_path / "torch-home"), "https_proxy": dead, "HTTPS_PROXY": dead,
            "http_proxy": dead, "HTTP_PROXY": dead}


def _error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.parametrize("command", ["watch", "process"])
def test_without_weights_the_message_says_how_to_try_photostyle_anyway(photo: Path, make_config, tmp_path: Path,
                                                                        command: str) -> None:
    config = make_config(extra={"model": {"weights": "torchvision"}})
    result = run_cli(command, *([photo] if command == "process" else []), "-c", config, env=_offline_env(tmp_path))
    assert result.returncode == 3
    line = _error_line(result.stderr)
    assert "photostyle weights import" in line, "the way to real weights comes first"
    assert "`model.weights: random`" in line and "will not be art" in line, line
    assert not (config.parent / "outbox").exists()


def test_weights_status_also_says_how_to_try_photostyle_without_weights(tmp_path: Path) -> None:
    status = run_cli("weights", "status", env=_offline_env(tmp_path), cwd=tmp_path)
    assert status.returncode == 3
    assert "not cached" in status.stdout and "`model.weights: random`" in status.stdout


def _mismatched_torchvision(folder: Path, version: str) -> Path:
    """A ``torchvision`` whose import fails as one built for another torch does, with its own metadata."""
    package = folder / "torchvision"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"raise RuntimeError({NMS!r})\n")
    info = folder / f"torchvision-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torchvision\nVersion: {version}\n")
    return folder


def test_a_torchvision_that_does_not_match_torch_is_named_with_both_versions(photo: Path, make_config,
                                                                            tmp_path: Path) -> None:
    """Seen: ``plugin 'vgg_style': prepare raised RuntimeError: operator torchvision::nms does not exist``."""
    fake = _mismatched_torchvision(tmp_path / "fake", "0.99.0")
    config = make_config(extra={"model": {"weights": "torchvision"}})
    path = os.pathsep.join(filter(None, [str(fake), os.environ.get("PYTHONPATH")]))
    result = run_cli("process", photo, "-c", config, env={**_offline_env(tmp_path), "PYTHONPATH": path})
    assert result.returncode == 3
    line = _error_line(result.stderr)
    assert f"the installed torch {metadata.version('torch')} and torchvision 0.99.0 don't match" in line, line
    assert "reinstall both from the same index" in line and "pip install --force-reinstall torch torchvision" in line
    assert NMS in line, "the error it stands for"
    assert "prepare raised" not in line
    assert not (config.parent / "outbox").exists()


@pytest.mark.parametrize(("torch_version", "vision_version", "index"), [
    ("2.5.1+cpu", "0.20.1", "--index-url https://download.pytorch.org/whl/cpu"),  # the CPU line mixed with PyPI's
    ("2.5.1", "0.19.0", ""),
    ("2.14.1+cu128", "0.29.1+cpu", "--index-url https://download.pytorch.org/whl/cu128"),
])
def test_the_mismatch_message_names_both_versions_and_the_index_torch_came_from(
        monkeypatch, torch_version: str, vision_version: str, index: str) -> None:
    monkeypatch.setattr(weights, "_version", {"torch": torch_version, "torchvision": vision_version}.get)
    message = weights.torchvision_mismatch(ImportError("undefined symbol: _ZN3c10..."))
    assert f"torch {torch_version} and torchvision {vision_version} don't match" in message
    assert message.rstrip("`").endswith(f"pip install --force-reinstall torch torchvision {index}".rstrip())
    assert "\n" not in message


def test_a_matching_pair_that_fails_to_import_is_not_called_a_mismatch(monkeypatch) -> None:
    monkeypatch.setattr(weights, "_version", {"torch": "2.14.1", "torchvision": "0.29.1"}.get)
    message = weights.torchvision_mismatch(OSError("libjpeg.so.8: cannot open shared object file"))
    assert "don't match" not in message and "torchvision 0.29.1 cannot be imported with torch 2.14.1" in message
    assert "OSError: libjpeg.so.8" in message
    # but torchvision's operators missing from torch is a mismatch whatever the numbers say
    assert "don't match" in weights.torchvision_mismatch(RuntimeError(NMS))


def test_an_import_failure_of_torchvision_is_a_weights_error(monkeypatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "torchvision.models", None)  # "import … halted"
    with pytest.raises(WeightsError) as caught:
        weights.torchvision_weights()
    assert "torchvision" in str(caught.value) and "same index" in str(caught.value)
