"""A long render says what it is doing in the log: each level's start, and evaluations, loss and ETA every 15 s."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from pipeline.daemon.progress_log import ProgressLog


def _worker(done: int, total: int, message: str, job: str = "j1") -> SimpleNamespace:
    return SimpleNamespace(running={"job": job, "file": "/in/slow photo.jpg", "done": done, "total": total,
                                    "message": message})


def test_levels_and_a_progress_line_every_interval_with_an_eta(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    progress = ProgressLog(interval=15.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="photostyle.daemon")
    steps = [(0.0, 1, "level 1/2 loss 9.1"), (5.0, 10, "level 1/2 loss 5.0"), (15.0, 30, "level 2/2 loss 3.2"),
             (29.0, 60, "level 2/2 loss 2.5"), (31.0, 70, "level 2/2 loss 2.4")]
    for seconds, done, message in steps:
        now[0] = 100.0 + seconds
        progress.update([_worker(done, 120, message)])
    records = [(record.getMessage(), getattr(record, "fields", {})) for record in caplog.records]
    assert [message for message, _ in records] == ["level started", "level started", "progress", "progress"]
    assert [fields["level"] for message, fields in records if message == "level started"] == ["1/2", "2/2"]
    first, second = (fields for message, fields in records if message == "progress")
    assert first == {"job": "j1", "file": "slow photo.jpg", "evaluations": "30/120", "loss": "3.2", "eta": "45s"}
    assert second["evaluations"] == "70/120" and second["eta"] == "22s"  # 31 s for 70: 50 more take ~22 s


def test_a_photo_that_finished_is_forgotten_and_the_next_starts_its_own_clock(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    progress = ProgressLog(interval=15.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="photostyle.daemon")
    progress.update([_worker(5, 10, "level 1/1 loss 1", job="a")])
    now[0] = 10.0
    progress.update([SimpleNamespace(running=None)])
    progress.update([_worker(1, 10, "level 1/1 loss 1", job="b")])
    now[0] = 26.0
    progress.update([_worker(4, 10, "level 1/1 loss 1", job="b")])
    lines = [getattr(record, "fields", {}) for record in caplog.records if record.getMessage() == "progress"]
    assert lines == [{"job": "b", "file": "slow photo.jpg", "evaluations": "4/10", "loss": "1", "eta": "24s"}]
