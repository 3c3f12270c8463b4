"""The command line as a user meets it: ``status`` while the config is broken, output into a closed pipe."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import write_config
from daemon_support import DaemonProcess, daemon_config, wait_for
from pipeline.cli import main


def test_status_works_while_the_config_is_broken(tmp_path: Path, monkeypatch, capsys, caplog) -> None:
    config = daemon_config(tmp_path / "p", state="run/state")
    state = config.parent / "run" / "state"
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        wait_for((state / "status.json").is_file, 30, "the daemon's status file")
        good = config.read_text()
        config.write_text(good.replace("device: cpu", "device: gpu"))  # the user is editing it: now invalid
        assert main(["check", "-c", str(config)]) == 2
        capsys.readouterr()

        assert main(["status", "-c", str(config)]) == 0
        printed = capsys.readouterr()
        assert f"daemon: running (pid {daemon.process.pid})" in printed.out
        warning = printed.err + caplog.text  # a logging warning: on stderr, or with pytest's log capture
        assert str(config) in warning and "invalid" in warning and str(state) in warning

        config.write_text("presets: [unclosed\n")  # not even YAML: the default state folder is tried
        assert main(["status", "-c", str(config)]) == 2, "no state/ next to it: the config errors it is"
        capsys.readouterr()

        monkeypatch.chdir(tmp_path)  # no config here at all
        assert main(["status", "--state", str(state), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["pid"] == daemon.process.pid
        config.write_text(good)
        assert daemon.stop() == 0


def test_status_without_a_state_folder_still_reports_the_config_errors(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "p", extra={"devise": "cpu"})
    assert main(["status", "-c", str(config)]) == 2
    assert "devise" in capsys.readouterr().err
    assert main(["status", "--state", str(tmp_path / "nowhere")]) == 2
    assert "state folder not found" in capsys.readouterr().err


def _many_presets(folder: Path, count: int) -> Path:
    """A config whose ``presets`` listing is far longer than a pipe holds."""
    config = write_config(folder)
    data = yaml.safe_load(config.read_text())
    data["presets"] = {f"preset_number_{i:05d}": {"style": "style.png", "size": 32} for i in range(count)}
    data["default_preset"] = "preset_number_00000"
    config.write_text(yaml.safe_dump(data))
    return config


@pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ"), reason="shrinking a pipe needs Linux's F_SETPIPE_SZ")
def test_a_reader_that_stops_after_the_first_line_ends_the_command_quietly(tmp_path: Path) -> None:
    config = _many_presets(tmp_path / "p", 1500)  # about 130 kB of output
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # the output cannot all fit: the writer must wait for us
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "presets", "-c", str(config)],
                               stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        first = reader.readline()
    # like `| head -1`: the reader is gone, the rest of the output has nowhere to go
    stderr = process.communicate(timeout=300)[1].decode()
    assert first.startswith(b"preset_number_00000")
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr and "Exception ignored" not in stderr, stderr
    assert stderr == ""
    assert process.returncode == 141


@pytest.mark.parametrize("command", ["schema", "status"])  # long output fails in print, short at the last flush
def test_output_into_a_pipe_nobody_reads_ends_quietly(config_file: Path, command: str) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left before the command wrote a byte (`| head -0`, `| true`)
    process = subprocess.Popen([sys.executable, "-m", "pipeline", command, "-c", str(config_file)],
                               stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    stderr = process.communicate(timeout=300)[1].decode()
    assert stderr == "", stderr
    assert process.returncode == 141
