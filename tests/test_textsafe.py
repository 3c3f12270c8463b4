"""Logs, ``status`` and messages cannot be forged or hijacked by a file name.

Seen: a name holding a newline wrote a complete fake log line; terminal escape
codes went raw into the journal and into ``photostyle status``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon_support import DaemonProcess, daemon_config, drop, files_under, jpeg_bytes, wait_for
from pipeline.commands.process import one_line
from pipeline.commands.status import render
from pipeline.logs import JsonFormatter, TextFormatter
from pipeline.files.textsafe import printable, quoted, safe_json

# What a hostile name may hold: a fake next log line, terminal escape codes (clear screen, set the window
# title, an 8-bit CSI), a fake field, Unicode line separators, a bidi override, undecodable bytes.
FAKE_LINE = "2030-01-01T00:00:00.000Z\tinfo\tdone\tfile=fake.jpg"
HOSTILE = [
    f"a\n{FAKE_LINE}.jpg",
    "b\r\x1b[2J\x1b]0;owned\x07.jpg",
    "c\x9b31m\x85.jpg",
    "d outcome=done\t.jpg",
    'e"quoted"\\.jpg',
    "f\u2028g\u2029\u202eh.jpg",
    os.fsdecode(b"i\xff\xfe.jpg"),
    "",
]
# Anything a terminal or log reader acts on: C0, DEL, C1, line/paragraph separators, bidi controls.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]+)')


@pytest.mark.parametrize("name", HOSTILE)
def test_printable_and_quoted_leave_nothing_to_act_on(name: str) -> None:
    for text in (printable(name), quoted(name)):
        assert not UNSAFE.search(text), text
        text.encode("utf-8")
    assert FIELD.fullmatch(f"file={quoted(name)}"), "one field, whatever the value"
    assert json.loads(safe_json({"file": name})) == {"file": name}, "lossless"
    assert not UNSAFE.search(safe_json({"file": name}, indent=2).replace("\n", ""))


def test_plain_text_passes_unchanged() -> None:
    for text in ("photo.jpg", "café 📷.jpg", "日本.png"):
        assert printable(text) == text
    assert quoted("photo.jpg") == "photo.jpg" and quoted("a b") == '"a b"' and quoted("") == '""'


def _format(formatter: logging.Formatter, message: str, *args: object, exc: bool = False, **fields: object) -> str:
    record = logging.LogRecord("photostyle", logging.INFO, __file__, 1, message, args, None)
    record.fields = fields
    if exc:
        try:
            raise ValueError(f"bad {HOSTILE[0]}")
        except ValueError:
            record.exc_info = sys.exc_info()
    return formatter.format(record)


@pytest.mark.parametrize("name", HOSTILE)
def test_one_event_is_one_text_line_with_exactly_its_fields(name: str) -> None:
    line = _format(TextFormatter(), "%s: done", name, exc=True, job="j1", file=name, reason=f"{name}: x=1")
    assert not UNSAFE.search(line), line
    assert line.split(" ", 2)[1] == "info"
    keys = [key for key, _ in FIELD.findall(line.split(": done ", 1)[1])]
    assert keys == ["job", "file", "reason", "traceback"], line


def test_json_lines_stay_valid_json_for_any_name() -> None:
    for name in HOSTILE:
        line = _format(JsonFormatter(), "done", file=name, path=Path(name))
        assert "\n" not in line and line.isascii()
        assert json.loads(line)["file"] == name


LOG_BOTH = """
import logging, os, sys
from pipeline.logs import setup_logging
name = os.fsdecode(sys.argv[1].encode("ascii").decode("unicode_escape").encode("latin-1"))
for fmt in ("text", "json"):
    setup_logging(fmt)
    logging.getLogger("photostyle").info("%s: done", name, extra={"fields": {"file": name}})
"""


def test_log_lines_reach_stderr_whatever_the_name(tmp_path: Path) -> None:
    """Under systemd stderr goes to the journal: the line must be written, whole, without raising."""
    for name in HOSTILE:
        argument = os.fsencode(name).decode("latin-1").encode("unicode_escape").decode("ascii")
        run = subprocess.run([sys.executable, "-c", LOG_BOTH, argument], capture_output=True, timeout=60,
                             env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"}, check=False)
        assert run.returncode == 0 and b"Traceback" not in run.stderr, run.stderr
        text_line, json_line = run.stderr.decode("utf-8").splitlines()
        assert not UNSAFE.search(text_line)
        assert os.fsencode(json.loads(json_line)["file"]) == os.fsencode(name)


def test_status_shows_hostile_names_escaped() -> None:
    name = HOSTILE[0] + HOSTILE[1]
    report = {
        "daemon": "running", "pid": 42, "queued": 1, "waiting_retry": 0, "settling": 0,
        "running": {"file": name, "preset": "tiny\x1b[8m", "done": 1, "total": 2, "message": "loss\n1",
                    "started": time.time()},
        "counts": {"done": 1, "failed": 1},
        "last_errors": [{"file": name, "preset": "tiny", "error": f"{name}: not an image\x1b[0m", "when": time.time()}],
    }
    text = render(report)
    assert not UNSAFE.search(text.replace("\n", ""))
    assert len(text.splitlines()) == 6  # daemon, queue, running, counts, "last errors:", one error
    assert "\\n2030-01-01" in text and "\\x1b[2J" in text


def test_process_error_line_is_one_printable_line() -> None:
    path = Path(HOSTILE[0])
    line = one_line(path, ValueError(f"{path}: not an image\x1b[0m"))
    assert line.startswith("a\\n2030") and line.count(": not an image") == 1 and not UNSAFE.search(line)


def test_a_name_cannot_forge_a_daemon_log_line(tmp_path: Path) -> None:
    """The real daemon, text logs: a photo whose name holds a fake log line and escape codes."""
    config = daemon_config(tmp_path / "p")
    root = config.parent
    names = [f"a\n{FAKE_LINE}.jpg", "b\x1b]0;owned\x07\x1b[2J.jpg"]
    with DaemonProcess(config, log_format="text") as daemon:
        for index, name in enumerate(names):
            drop(root / "inbox" / name, jpeg_bytes(index))
        wait_for(lambda: len(files_under(root / "outbox", "*.jpg")) == len(names), 180, "both results")
        wait_for(lambda: not [p for p in (root / "inbox").iterdir() if p.is_file()], 60, "the inbox to empty")
        assert daemon.stop(signal.SIGTERM) == 0
    log = daemon.log_path.read_bytes()
    assert b"\x1b" not in log and b"\x07" not in log and b"\r" not in log
    lines = log.decode("utf-8").splitlines()
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warning|error|critical) ")
    mentions = [line for line in lines if "2030-01-01" in line or "owned" in line]
    assert mentions and all(stamp.match(line) for line in mentions), mentions  # each event on its own line
    assert not any(line.startswith("2030-") for line in lines), "no forged line"
