"""Running ``photostyle watch`` as a real subprocess in tests, and waiting for what it does."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conftest import one_scale, synthetic_photo, synthetic_style


SLOW_PLUGIN = '''
"""Test plugin: photos named slow* wait in preprocess (honouring shutdown) until the test releases them.

A photo is released when ``$PHOTOSTYLE_TEST_RELEASE/<its name>`` exists, so a test decides when the slow
job ends (after it has queued what it needs behind it), whatever the machine's load; without a release it
ends after ``$PHOTOSTYLE_TEST_SLOW`` seconds.
"""
import os
import time
from pathlib import Path

from pipeline import hookimpl
from pipeline.errors import Cancelled


@hookimpl
def preprocess(image, ctx):
    seconds = float(os.environ.get("PHOTOSTYLE_TEST_SLOW", "0"))
    release = Path(os.environ.get("PHOTOSTYLE_TEST_RELEASE", "/nonexistent")) / ctx.source.name
    if ctx.source.name.startswith("slow"):
        end = time.monotonic() + seconds
        while time.monotonic() < end and not release.exists():
            ctx.progress(int(10 * (1 - (end - time.monotonic()) / seconds)), 10, "sleeping")
            if ctx.should_stop():
                raise Cancelled("stopped")
            time.sleep(0.05)
    return image
'''


# A photo named gated* waits in preprocess until GATE/<its name> exists (honouring shutdown), so a test can act
# while it is in flight and then let it finish at once. The path is written into the module (``.format(gate=…)``):
# plugins travel to Ray workers as source, and the workers do not have the daemon's environment.
GATE_PLUGIN = '''
import os
import time

from pipeline import hookimpl
from pipeline.errors import Cancelled

GATE = {gate!r}


@hookimpl
def preprocess(image, ctx):
    while ctx.source.name.startswith("gated") and not os.path.exists(os.path.join(GATE, ctx.source.name)):
        ctx.progress(1, 2, "waiting at the gate")
        if ctx.should_stop():
            raise Cancelled("stopped")
        time.sleep(0.05)
    return image
'''


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    synthetic_photo(size, seed=seed).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def drop(path: Path, data: bytes) -> Path:
    """Write a photo the way a careful sync client does: temp name, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.part")
    temp.write_bytes(data)
    os.replace(temp, path)
    return path


def daemon_config(folder: Path, presets: dict[str, dict[str, Any]] | None = None, watch: dict[str, Any] | None = None,
                  slow: bool = False, **extra: Any) -> Path:
    """A config for daemon tests: random weights, tiny fast presets, short stability and rescan times.

    ``slow``: load the test plugin that holds photos named ``slow*`` until released (see ``SLOW_PLUGIN``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name, seed in (("style.png", 1), ("style2.png", 2)):
        if not (folder / name).exists():
            synthetic_style(seed=seed).save(folder / name)
    data: dict[str, Any] = {
        "device": "cpu",
        "model": {"weights": "random"},
        "default_preset": "tiny",
        "watch": {"stable_seconds": 0.4, "rescan_seconds": 30, "shutdown_timeout": 5, "incomplete_grace": 0,
                  **(watch or {})},
        "presets": presets or {
            "tiny": {"style": "style.png", "size": 24, "iterations": 2, "schedule": one_scale()},
            "other": {"style": "style2.png", "size": 24, "iterations": 2, "schedule": one_scale()},
        },
        "plugins": {"disabled": ["gallery"]},
    }
    if slow:
        (folder / "plugins").mkdir(exist_ok=True)
        (folder / "plugins" / "slow.py").write_text(SLOW_PLUGIN)
        data["plugins"]["paths"] = [str(folder / "plugins")]
    data.update(extra)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def wait_for(condition: Callable[[], Any], timeout: float = 60, message: str = "condition") -> Any:
    """Poll until ``condition()`` is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


class DaemonProcess:
    """``python -m pipeline watch`` in a subprocess, its stderr captured in a file."""

    def __init__(self, config: Path, env: dict[str, str] | None = None, log_format: str = "json") -> None:
        self.config = config
        self.log_path = config.parent / f"daemon-{time.time_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "watch", "-c", str(config), "--log-format", log_format],
            stdout=subprocess.DEVNULL, stderr=self._log, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.log_format = log_format

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (other lines, e.g. a traceback, are skipped)."""
        entries = []
        for line in self.text().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return entries

    def messages(self, msg: str, under: Path | None = None) -> list[dict[str, Any]]:
        """Log entries with this message; with ``under``, only those about a file in that folder (or below).

        A test sharing one daemon with others looks only at its own inbox folder.
        """
        return [entry for entry in self.events() if entry.get("msg") == msg
                and (under is None or Path(str(entry.get("file", ""))).is_relative_to(under))]

    def wait_log(self, pattern: str, timeout: float = 60, count: int = 1) -> None:
        wait_for(lambda: len(re.findall(pattern, self.text())) >= count, timeout, f"{count}x {pattern!r} in the log")

    def wait_msg(self, msg: str, timeout: float = 60, count: int = 1, under: Path | None = None) -> list[dict[str, Any]]:
        return wait_for(lambda: (found := self.messages(msg, under)) and len(found) >= count and found, timeout,
                        f"{count}x log message {msg!r}" + (f" about files in {under}" if under else ""))

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.config.parent / "state" / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def wait_idle(self, rescans: int = 0, timeout: float = 60) -> None:
        """Wait until the daemon has nothing settling, queued or running, after ``rescans`` more full scans.

        Instead of sleeping "long enough" before asserting that nothing happened: a file
        wrongly taken would show as settling, queued or running here. The status must
        also be newer than this call by a second (four ticks), so events already
        delivered have been drained.
        """
        since, baseline = time.time() + 1.0, self.status().get("rescans", 0)

        def idle() -> bool:
            status = self.status()
            return (status.get("updated", 0) >= since and status.get("rescans", 0) >= baseline + rescans
                    and status.get("settling") == 0 and status.get("queued") == 0 and not status.get("running"))
        wait_for(idle, timeout, f"the daemon to be idle after {rescans} more rescans")

    def wait_ready(self, timeout: float = 90) -> None:
        self.wait_msg("watching", timeout)

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        self._log.close()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self._log.close()


@dataclass
class SharedDaemon:
    """One daemon that several tests share, each in its own preset's folders (starting one costs seconds)."""

    daemon: DaemonProcess
    root: Path

    def inbox(self, preset: str) -> Path:
        return self.root / "inbox" / preset

    def release(self, name: str) -> None:
        """End the slow job of photo ``name`` (slow* photos are held until then)."""
        release(self.root / "release", name)


def files_under(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in folder.rglob(pattern) if p.is_file() and not p.name.startswith("."))


def release(folder: Path, name: str) -> None:
    """Let the slow job for photo ``name`` finish (the daemon runs with ``PHOTOSTYLE_TEST_RELEASE=folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).touch()
