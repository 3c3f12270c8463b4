"""The daemon's exactly-once core in one process: real Intake, Dispatcher, Originals, ledger and files,
a fake executor the test drives by hand, and a fake clock for the retry back-off.

The subprocess tests prove the daemon as users run it; these prove each exactly-once rule directly,
in milliseconds, at the instant that matters (a completion arriving, a file replaced mid-render).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from conftest import synthetic_photo
from daemon_support import daemon_config
from pipeline.app import App, load_app
from pipeline.daemon.dispatch import Dispatcher
from pipeline.errors import StageError
from pipeline.execution.local import Completion, Executor, Submission, WorkerLost, WorkerState
from pipeline.daemon.intake import Intake
from pipeline.job.runner import Rendered
from pipeline.daemon.ledger import Ledger
from pipeline.daemon.originals import Originals


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    synthetic_photo((40, 30), seed=seed).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class FakeExecutor(Executor):
    """Takes submissions and gives back whatever completions the test queues: nothing runs by itself."""

    def __init__(self, slots: int = 1, batch: int = 1) -> None:
        self.slots, self.batch = slots, batch
        self.submitted: list[Submission] = []
        self.pending: list[Completion] = []
        self.finished = 0

    def start(self, app: App) -> None: ...
    def reload(self, app: App) -> None: ...
    def abandon(self) -> None: ...
    def shutdown(self, deadline: float) -> None: ...

    def free_slots(self) -> int:
        return self.slots - (len(self.submitted) - self.finished)

    def batch_size(self) -> int:
        return self.batch

    def submit(self, submission: Submission) -> None:
        self.submitted.append(submission)

    def completions(self) -> list[Completion]:
        done, self.pending = self.pending, []
        self.finished += len(done)
        return done

    def workers(self) -> list[WorkerState]:
        return [WorkerState("fake", "here", "cpu")]

    def render(self, submission: Submission, *outcomes: Any) -> None:
        """Complete ``submission``: a Rendered (from the photo's own bytes, as JPEG) or the error given."""
        results: list[Any] = []
        for request, outcome in zip(submission.requests, outcomes or ["ok"] * len(submission.requests),
                                    strict=True):
            if outcome == "ok":
                with Image.open(io.BytesIO(request.data)) as image:
                    buffer = io.BytesIO()
                    image.convert("L").save(buffer, format="JPEG")
                outcome = Rendered(job_id=request.job_id, preset=request.preset, data=buffer.getvalue(),
                                   suffix=".jpg", report={}, timings={}, seconds=0.0)
            results.append(outcome)
        self.pending.append(Completion(submission.batch_id, results, "fake"))


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Core:
    app: App
    ledger: Ledger
    executor: FakeExecutor
    intake: Intake
    dispatcher: Dispatcher
    originals: Originals
    clock: Clock
    retaken: list[Path] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.app.config_path.parent

    def put(self, name: str, data: bytes) -> Path:
        path = self.app.config.inbox / name
        path.write_bytes(data)
        return path

    def take(self, *paths: Path) -> None:
        """What the stability gate does once files are still: intake fingerprints and queues them."""
        self.intake._intake([_stable(path) for path in paths])

    def tick(self) -> None:
        self.dispatcher.tick()
        self.originals.tick()

    def rows(self) -> dict[str, tuple[str, int]]:
        return {Path(r["source"].decode()).name: (r["state"], r["crashes"]) for r in self.ledger._query(
            "SELECT source, state, crashes FROM jobs")}


def _stable(path: Path) -> Any:
    from pipeline.daemon.watch import StableFile

    info = path.lstat()
    return StableFile(path, info.st_size, info.st_mtime_ns)


@pytest.fixture
def core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Core]:
    config_path = daemon_config(tmp_path / "p", executor={"kind": "local", "max_attempts": 2},
                                watch={"retry_seconds": 10, "retry_max_seconds": 100})
    app = load_app(config_path)
    clock = Clock()
    for module in ("pipeline.daemon.dispatch", "pipeline.daemon.originals", "pipeline.daemon.intake"):
        monkeypatch.setattr(f"{module}.time.monotonic", clock)
    ledger = Ledger(app.config.state / "ledger.sqlite3")
    executor = FakeExecutor()
    retaken: list[Path] = []
    originals = Originals(lambda: app.config, retaken.append)
    dispatcher = Dispatcher(lambda: app, ledger, executor, originals, retaken.append)
    intake = Intake(lambda: app, ledger, dispatcher, originals, threading.Event())
    intake.make_folders()
    dispatcher.intake_idle = intake.idle
    yield Core(app, ledger, executor, intake, dispatcher, originals, clock, retaken)
    ledger.close()


def test_a_rendered_photo_is_published_recorded_and_moved_exactly_once(core: Core) -> None:
    photo = core.put("a.jpg", jpeg(1))
    core.take(photo)
    core.tick()
    [submission] = core.executor.submitted
    core.executor.render(submission)
    core.tick()
    core.tick()  # nothing more may happen
    outbox = core.app.config.outbox / "tiny"
    assert sorted(p.name for p in outbox.iterdir()) == ["a.jpg", "a.jpg.json"]
    assert (core.app.config.processed / "tiny" / "a.jpg").read_bytes() == jpeg(1) and not photo.exists()
    assert core.rows() == {"a.jpg": ("done", 0)} and len(core.executor.submitted) == 1


def test_a_photo_replaced_mid_render_publishes_the_old_result_and_is_taken_again(core: Core) -> None:
    photo = core.put("r.jpg", jpeg(2))
    core.take(photo)
    core.tick()
    [submission] = core.executor.submitted
    newer = core.put("r.jpg.part", jpeg(3))
    newer.replace(photo)  # a sync client's rename over the name while v1 renders
    core.executor.render(submission)
    core.tick()
    assert photo.read_bytes() == jpeg(3), "the newer version stays in the inbox"
    assert core.retaken == [photo], "and goes back through the stability gate as new work"
    assert not (core.app.config.processed / "tiny").exists() or not list((core.app.config.processed / "tiny").iterdir())
    assert (core.app.config.outbox / "tiny" / "r.jpg").exists()


def test_a_lost_worker_makes_a_suspect_that_runs_after_the_rest_and_fails_at_max_attempts(core: Core) -> None:
    poison, good = core.put("poison.jpg", jpeg(4)), core.put("good.jpg", jpeg(5))
    core.take(poison)
    core.tick()
    [first] = core.executor.submitted
    core.executor.render(first, WorkerLost("worker died"))
    core.take(good)  # arrives meanwhile
    core.tick()
    assert [s.requests[0].source.name for s in core.executor.submitted] == ["poison.jpg", "good.jpg"]
    assert core.rows()["poison.jpg"] == ("queued", 1)
    core.executor.render(core.executor.submitted[-1])
    core.tick()  # good done; now the suspect runs, alone
    assert core.executor.submitted[-1].requests[0].source.name == "poison.jpg"
    core.executor.render(core.executor.submitted[-1], WorkerLost("worker died again"))
    core.tick()
    assert core.rows() == {"poison.jpg": ("failed", 2), "good.jpg": ("done", 0)}
    note = (core.app.config.failed / "tiny" / "poison.jpg.error.txt").read_text()
    assert "stopped a worker 2 times (max_attempts 2" in note


def test_a_batch_failing_as_a_whole_is_split_and_nothing_counts_against_its_photos(core: Core) -> None:
    core.executor.batch = 3
    photos = [core.put(f"b{i}.jpg", jpeg(10 + i)) for i in range(3)]
    core.take(*photos)
    core.tick()
    [batch] = core.executor.submitted
    assert len(batch.requests) == 3
    error = StageError("stylize", "batcher", "cannot batch")
    core.executor.render(batch, error, error, error)
    core.executor.slots = 3
    core.tick()
    alone = core.executor.submitted[1:]
    assert [len(s.requests) for s in alone] == [1, 1, 1]
    for submission in alone:
        core.executor.render(submission)
    core.tick()
    assert set(core.rows().values()) == {("done", 0)}


def test_an_unwritable_outbox_keeps_the_render_and_retries_on_the_clock_without_rendering_again(core: Core) -> None:
    photo = core.put("w.jpg", jpeg(6))
    outbox = core.app.config.outbox / "tiny"
    outbox.parent.mkdir(parents=True, exist_ok=True)
    outbox.write_text("a file where the preset's outbox folder should be")
    core.take(photo)
    core.tick()
    core.executor.render(core.executor.submitted[0])
    core.tick()
    assert photo.exists() and core.rows() == {"w.jpg": ("queued", 0)}
    outbox.unlink()
    core.clock.now += 9
    core.tick()
    assert not outbox.exists(), "not retried before its back-off"
    core.clock.now += 2
    core.tick()
    assert (outbox / "w.jpg").exists() and core.rows() == {"w.jpg": ("done", 0)}
    assert len(core.executor.submitted) == 1, "published from the kept render"


def test_the_same_content_under_a_second_name_is_looked_at_again_once_the_first_settles(core: Core) -> None:
    first, second = core.put("one.jpg", jpeg(7)), core.put("two.jpg", jpeg(7))
    core.take(first)
    core.tick()
    core.take(second)
    assert core.dispatcher.queued == 0, "held back: the same photo is running"
    core.executor.render(core.executor.submitted[0])
    core.tick()
    core.intake.tick()
    assert second in core.intake.gate._pending, "looked at again at once, not at the next rescan"


def test_systemd_s_watchdog_is_pinged_only_while_the_executor_can_make_progress(core: Core) -> None:
    from pipeline.daemon.loop import Daemon

    class Notifier:
        pings = 0

        def watchdog(self) -> None:
            self.pings += 1

    class Stuck(FakeExecutor):
        ok = True

        def healthy(self) -> bool:
            return self.ok

    notifier, executor = Notifier(), Stuck()
    daemon = Daemon(core.app, notifier=notifier)  # type: ignore[arg-type]
    daemon.executor = executor
    daemon._ping_watchdog()
    executor.ok = False
    daemon._ping_watchdog()
    daemon._ping_watchdog()
    executor.ok = True
    daemon._ping_watchdog()
    assert notifier.pings == 2
