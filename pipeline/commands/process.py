"""``photostyle process PHOTO...``: the stage chain on each photo, once, in the foreground.

With ``executor: local`` (the default) one worker in this process runs the photos
in turn. With another executor (Ray) the photos fan out over its workers, as many
at once as it has room for; each result comes back as bytes and is published
here, as the daemon does, under one progress bar counting photos.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from pipeline.app import App
from pipeline.context import JobResult, WorkerResources
from pipeline.errors import ConfigError, ImageLoadError, PhotostyleError
from pipeline.executor import Executor, Submission, WorkerLost
from pipeline.fileops import staging_folder, use_staging_folder
from pipeline.job import JobRequest, Rendered, publish
from pipeline.photo_file import read_named_photo
from pipeline.textsafe import printable
from pipeline.worker import Worker


def one_line(path: Path, error: BaseException) -> str:
    """``PATH: reason`` on a single line, whatever the error's own text or the photo's name look like.

    Names may hold newlines, escape codes or undecodable bytes: all are shown as
    escapes (:func:`pipeline.textsafe.printable`), so the line prints anywhere.
    """
    message = " ".join(printable(error).split())
    name = printable(path)
    return message if message.startswith(name) else f"{name}: {message}"


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int, str], None]]:
    """A tqdm bar on stderr (hidden when stderr is not a terminal) fed by the job's progress callback."""
    bar = tqdm(desc=label, unit="eval", leave=False, file=sys.stderr, disable=None, dynamic_ncols=True)

    def update(done: int, total: int, message: str) -> None:
        if bar.total != total:
            bar.total = total
        bar.set_postfix_str(message, refresh=False)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


def process(app: App, photos: Sequence[Path], preset: str | None, output_dir: Path | None, as_json: bool) -> int:
    """Run every photo; one line per failure on stderr; exit status 1 if any failed."""
    preset = preset or app.config.default_preset
    if preset not in app.config.presets:
        known = ", ".join(sorted(app.config.presets))
        raise ConfigError([f"{app.config_path}: unknown preset {preset!r} (presets: {known})"])
    use_staging_folder(staging_folder(app.config.state))  # temp files stay out of the outbox (README, sync clients)
    if app.config.executor.kind != "local":
        return process_on_executor(app, photos, preset, output_dir, as_json)
    worker = Worker(app)
    worker.prepare(preset)  # missing weights stop here, before any photo is touched
    failures = 0
    for photo in photos:
        try:
            with progress_bar(printable(photo.name)) as progress:
                result = worker.run(JobRequest(source=photo, preset=preset, output_dir=output_dir), progress=progress)
        except PhotostyleError as exc:
            failures += 1
            line = one_line(photo, exc)
            print(f"error: {line}", file=sys.stderr, flush=True)
            if as_json:
                print(json.dumps({"input": str(photo), "preset": preset, "error": line}), flush=True)
            continue
        if as_json:
            print(json.dumps(result.as_json()), flush=True)
        else:
            print(printable(f"{photo} -> {result.output} ({result.seconds:.1f} s)"), flush=True)
    return 1 if failures else 0


class _Report:
    """Prints each photo's outcome as it comes back, and counts failures."""

    def __init__(self, preset: str, as_json: bool, bar: tqdm) -> None:
        self.preset, self.as_json, self.bar = preset, as_json, bar
        self.failures = 0

    def failed(self, photo: Path, error: BaseException) -> None:
        self.failures += 1
        line = one_line(photo, error)
        self.bar.write(f"error: {line}", file=sys.stderr)
        if self.as_json:
            print(json.dumps({"input": str(photo), "preset": self.preset, "error": line}), flush=True)
        self.bar.update(1)

    def succeeded(self, photo: Path, result: JobResult) -> None:
        if self.as_json:
            print(json.dumps(result.as_json()), flush=True)
        else:
            print(printable(f"{photo} -> {result.output} ({result.seconds:.1f} s)"), flush=True)
        self.bar.update(1)


def process_on_executor(app: App, photos: Sequence[Path], preset: str, output_dir: Path | None, as_json: bool,
                        executor: Executor | None = None) -> int:
    """Every photo through the configured executor (Ray); results published here; exit status 1 if any failed.

    A photo whose worker died is sent again, up to ``executor.max_attempts`` times,
    as the daemon does.
    """
    if executor is None and app.config.executor.kind == "ray":
        from pipeline.ray_executor import RayExecutor

        # unlike the daemon, a one-off command says the cluster cannot be reached and stops
        executor = RayExecutor(app.config.executor, threading.Event(), wait_for_cluster=False)
    elif executor is None:
        from pipeline.executor import make_executor

        executor = make_executor(app, threading.Event())
    executor.start(app)  # Ray missing, or missing weights on the workers, stop here before any photo
    resources = WorkerResources(config=app.config, device="coordinator")
    max_attempts = app.config.executor.max_attempts
    pending: deque[Path] = deque(photos)
    sent: dict[str, list[tuple[Path, JobRequest]]] = {}
    deaths: dict[Path, int] = {}
    bar = tqdm(total=len(photos), desc=preset, unit="photo", leave=False, file=sys.stderr, disable=None,
               dynamic_ncols=True)
    report = _Report(preset, as_json, bar)
    try:
        while pending or sent:
            while pending and executor.free_slots() > 0:
                batch: list[tuple[Path, JobRequest]] = []
                while pending and len(batch) < executor.batch_size():
                    photo = pending.popleft()
                    try:
                        data = read_named_photo(photo)
                    except PhotostyleError as exc:
                        report.failed(photo, exc)
                        continue
                    batch.append((photo, JobRequest(source=photo, preset=preset, output_dir=output_dir, data=data)))
                if batch:
                    batch_id = uuid.uuid4().hex[:12]
                    sent[batch_id] = batch
                    executor.submit(Submission(batch_id, [request for _, request in batch]))
            for completion in executor.completions():
                for (photo, request), outcome in zip(sent.pop(completion.batch_id), completion.outcomes,
                                                     strict=True):
                    if isinstance(outcome, WorkerLost):
                        deaths[photo] = deaths.get(photo, 0) + 1
                        if deaths[photo] < max_attempts:
                            pending.appendleft(photo)
                            continue
                        outcome = WorkerLost(f"it stopped a worker {deaths[photo]} times (max_attempts "
                                             f"{max_attempts}); last: {' '.join(str(outcome).split())}")
                    if not isinstance(outcome, Rendered):
                        report.failed(photo, outcome)
                        continue
                    try:
                        result = publish(outcome, request, app.host, resources)
                    except PhotostyleError as exc:
                        report.failed(photo, exc)
                        continue
                    report.succeeded(photo, result)
            if sent or pending:
                executor.wait(0.5)
    except BaseException:
        executor.abandon()
        raise
    finally:
        bar.close()
        executor.shutdown(time.monotonic() + 1.0)
    return 1 if report.failures else 0
