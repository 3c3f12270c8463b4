"""The executor protocol: what the coordinator hands an executor and what comes back. Bytes only.

An executor turns a :class:`Submission` (photos of one preset, as their bytes and
names) into a :class:`Completion` (per photo, the encoded result and its report,
or the error that stopped it). Nothing live crosses: no job context, no decoded
image, no open file, so the local worker thread and a Ray actor on another
machine are interchangeable, and publishing (result, sidecar, ``job_finished``)
happens in one place, on the coordinator, from those bytes.

This module imports nothing but the standard library and :mod:`pipeline.errors`
(types used only in annotations are imported for type checkers alone), so the
Ray driver process and the executors can import it without pulling the app in.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pipeline.errors import PhotostyleError

if TYPE_CHECKING:
    from pipeline.app import App
    from pipeline.job.runner import JobRequest, Rendered


class WorkerLost(PhotostyleError):
    """The worker died with this photo in flight (process killed, node lost, poisoned GPU context)."""


@dataclass
class Submission:
    """Photos of one preset handed to one worker together (a batch when more than one)."""

    batch_id: str
    requests: list[JobRequest]

    @property
    def preset(self) -> str:
        return self.requests[0].preset


@dataclass
class Completion:
    """What came back for a submission: one outcome per request, in order."""

    batch_id: str
    outcomes: list[Rendered | PhotostyleError]
    worker: str


@dataclass
class WorkerState:
    """One worker as ``photostyle status`` shows it."""

    name: str
    node: str
    device: str
    running: dict[str, Any] | None = None  # job, file, preset, started, done, total, message
    done: int = 0
    failed: int = 0
    last_error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Executor(ABC):
    """Runs submissions somewhere; see the module docstring."""

    @abstractmethod
    def start(self, app: App) -> None:
        """Load what the default preset needs; a WeightsError here refuses the daemon's start."""

    @abstractmethod
    def reload(self, app: App) -> None:
        """Use this config for the next submissions (loaded models are kept where they still apply)."""

    @abstractmethod
    def free_slots(self) -> int:
        """How many more submissions may be handed over now (back-pressure)."""

    @abstractmethod
    def batch_size(self) -> int:
        """How many photos of one preset a submission should hold."""

    @abstractmethod
    def submit(self, submission: Submission) -> None:
        """Start rendering; the outcome arrives through :meth:`completions`."""

    @abstractmethod
    def completions(self) -> list[Completion]:
        """Completions since the last call (never blocks)."""

    @abstractmethod
    def workers(self) -> list[WorkerState]:
        """Each worker's state, for status."""

    @abstractmethod
    def abandon(self) -> None:
        """Stop the running photos at their next evaluation; they complete as ``Cancelled``."""

    @abstractmethod
    def shutdown(self, deadline: float) -> None:
        """No more submissions; let running photos finish until ``deadline`` (monotonic), then abandon them."""

    def prepare(self, preset: str) -> None:
        """Load what ``preset`` needs before any photo is handed over, where that can fail early (a one-off command)."""

    def wait(self, timeout: float) -> None:
        """Block until a completion may be ready, at most ``timeout`` seconds (executors may do better)."""
        time.sleep(timeout)

    def condition(self) -> str | None:
        """Why no photo can run now (e.g. waiting for a cluster), for ``systemctl status``; None when fine."""
        return None

    def healthy(self) -> bool:
        """Whether photos can run now, or the executor is visibly reconnecting (the daemon pings systemd's
        watchdog only then, so a stuck executor gets the service restarted)."""
        return True
