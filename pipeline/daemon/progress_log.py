"""Progress of a long render in the daemon's log, so ``journalctl -f`` never looks hung.

A photo takes minutes on a CPU. The executor already knows, for each running
photo, how many objective evaluations are done of how many, and the loss (the
worker's progress callback); this turns that into log lines at info level: one
when each pyramid level starts, and one every :data:`PROGRESS_LOG_SECONDS` with
the evaluations, the loss and an estimate of the time left (the pace so far).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("photostyle.daemon")

PROGRESS_LOG_SECONDS = 15.0
_LEVEL = re.compile(r"\blevel (\d+/\d+)\b")
_LOSS = re.compile(r"\bloss (\S+)")


@dataclass
class _Seen:
    started: float  # monotonic: when this photo was first seen running
    logged: float  # monotonic: the last progress line
    level: str | None = None


class ProgressLog:
    """Fed the executor's workers each tick; logs level starts and a progress line every interval."""

    def __init__(self, interval: float = PROGRESS_LOG_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self._clock = interval, clock
        self._seen: dict[str, _Seen] = {}

    def update(self, workers: Iterable[Any]) -> None:
        now = self._clock()
        running = {}
        for worker in workers:
            if worker.running:
                running[str(worker.running.get("job"))] = worker.running
        for job in list(self._seen):
            if job not in running:
                del self._seen[job]
        for job, state in running.items():
            seen = self._seen.setdefault(job, _Seen(now, now))
            fields = {"job": job, "file": Path(str(state.get("file", ""))).name or None}
            message = str(state.get("message") or "")
            level = _LEVEL.search(message)
            if level and level.group(1) != seen.level:
                seen.level = level.group(1)
                log.info("level started", extra={"fields": {**fields, "level": seen.level}})
            done, total = int(state.get("done") or 0), int(state.get("total") or 0)
            if now - seen.logged < self.interval or done <= 0:
                continue
            seen.logged = now
            loss = _LOSS.search(message)
            eta = (now - seen.started) / done * max(0, total - done)
            log.info("progress", extra={"fields": {**fields, "evaluations": f"{done}/{total}",
                                                   "loss": loss.group(1) if loss else None,
                                                   "eta": f"{eta:.0f}s"}})
