"""A status file that cannot be written is logged once, then rarely, and its recovery once (issue 17, item 9).

Seen: while the state disk was full, "could not write status" was logged once a second, 3,600 lines an
hour. The policy is checked with an injected clock (no waiting), and once in a real daemon whose
``state/status.json`` is a folder, which makes every status write fail (for root too) while the ledger
beside it works.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from daemon_support import DaemonProcess, daemon_config, drop, jpeg_bytes, wait_for

MSG_FAILED = "could not write status"
MSG_STILL = "still cannot write status"
MSG_AGAIN = "status written again"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _messages(caplog: pytest.LogCaptureFixture, msg: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage() == msg]


def test_an_hour_of_failed_status_writes_logs_a_dozen_lines_not_3600(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.daemon.loop import STATUS_WARN_INTERVAL, StatusWriter

    blocker = tmp_path / "state"
    blocker.write_text("a file where the state folder should be: every write fails")
    clock = FakeClock()
    writer = StatusWriter(blocker / "status.json", clock=clock)
    with caplog.at_level(logging.INFO, logger="photostyle.daemon"):
        for _ in range(3600):  # an hour of the daemon's once-a-second status
            assert writer.write("{}") is False
            clock.now += 1.0
    [first] = _messages(caplog, MSG_FAILED)
    assert first.levelno == logging.WARNING and first.fields["reason"]
    reminders = _messages(caplog, MSG_STILL)
    assert len(reminders) == int(3599 // STATUS_WARN_INTERVAL) and 3 <= len(reminders) <= 60
    assert reminders[-1].fields["failed_writes"] > reminders[0].fields["failed_writes"]
    assert len(caplog.records) == 1 + len(reminders)

    caplog.clear()
    blocker.unlink()
    blocker.mkdir()  # space again
    with caplog.at_level(logging.INFO, logger="photostyle.daemon"):
        for _ in range(10):
            assert writer.write('{"ok": true}') is True
            clock.now += 1.0
    [again] = _messages(caplog, MSG_AGAIN)
    assert again.fields["failed_writes"] == 3600 and again.fields["seconds"] == 3600.0
    assert len(caplog.records) == 1, "the recovery is said once"
    assert json.loads((blocker / "status.json").read_text()) == {"ok": True}

    caplog.clear()
    (blocker / "status.json").unlink()
    (blocker / "status.json").mkdir()  # a new outage is reported at once again
    with caplog.at_level(logging.INFO, logger="photostyle.daemon"):
        assert writer.write("{}") is False
    assert len(_messages(caplog, MSG_FAILED)) == 1


def test_the_daemon_logs_an_unwritable_status_file_once_and_its_recovery_once(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p")
    status = config.parent / "state" / "status.json"
    status.mkdir(parents=True)  # every status write fails: a file cannot replace a folder
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        daemon.wait_msg(MSG_FAILED)
        drop(config.parent / "inbox" / "one.jpg", jpeg_bytes(1))
        daemon.wait_msg("done")  # the daemon works on without its status file
        time.sleep(3)  # three more status writes at least (one a second), each failing
        assert len(daemon.messages(MSG_FAILED)) == 1 and not daemon.messages(MSG_STILL), daemon.text()
        status.rmdir()
        daemon.wait_msg(MSG_AGAIN)
        wait_for(status.is_file, 30, "the status file")
        assert daemon.stop() == 0
    assert len(daemon.messages(MSG_FAILED)) == 1 and len(daemon.messages(MSG_AGAIN)) == 1
    assert "Traceback" not in daemon.text()
