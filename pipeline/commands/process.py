"""``photostyle process PHOTO...``: the stage chain on each photo, once, in the foreground.

The photos go through the daemon's own coordinator (:class:`~pipeline.daemon.dispatch.Dispatcher`)
and the configured executor: with ``executor: local`` (the default) one worker
thread in this process runs them in turn; with Ray they fan out over its workers.
Either way each result comes back as bytes and is published here, as the daemon
does, under a progress bar showing the running photo's evaluations and loss.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from pipeline.app import App
from pipeline.job.context import JobResult
from pipeline.errors import ConfigError
from pipeline.daemon.dispatch import Dispatcher, WorkItem
from pipeline.execution.local import Executor, make_executor
from pipeline.files.fileops import staging_folder, use_staging_folder
from pipeline.daemon.ledger import NoLedger
from pipeline.files.textsafe import printable


def one_line(path: Path, error: BaseException) -> str:
    """``PATH: reason`` on a single line, whatever the error's own text or the photo's name look like.

    Names may hold newlines, escape codes or undecodable bytes: all are shown as
    escapes (:func:`pipeline.files.textsafe.printable`), so the line prints anywhere.
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


def process(app: App, photos: Sequence[Path], preset: str | None, output_dir: Path | None, as_json: bool,
            executor: Executor | None = None) -> int:
    """Every photo through the configured executor and the daemon's own coordinator; exit status 1 if any failed.

    The :class:`~pipeline.daemon.dispatch.Dispatcher` that the daemon uses runs the photos
    here too, on either executor: the same batching, the same safe read, the same
    requeue of a photo whose worker died (up to ``executor.max_attempts``), the same
    publishing. What differs is what is kept: no ledger, the photos stay where they
    are, and an outbox that cannot be written fails the photo instead of waiting.
    """
    preset = preset or app.config.default_preset
    if preset not in app.config.presets:
        known = ", ".join(sorted(app.config.presets))
        raise ConfigError([f"{app.config_path}: unknown preset {preset!r} (presets: {known})"])
    use_staging_folder(staging_folder(app.config.state))  # temp files stay out of the outbox (README, sync clients)
    wake = threading.Event()
    if executor is None and app.config.executor.kind == "ray":
        from pipeline.execution.ray.executor import RayExecutor

        # unlike the daemon, a one-off command says the cluster cannot be reached and stops
        executor = RayExecutor(app.config.executor, wake, wait_for_cluster=False)
    elif executor is None:
        executor = make_executor(app, wake)
    executor.start(app)  # missing weights (here or on the workers) stop here, before any photo is touched
    executor.prepare(preset)
    report = _Report(preset, as_json)
    dispatcher = Dispatcher(lambda: app, NoLedger(), executor, None, lambda path: None, retry_outputs=False,
                            on_done=lambda item, result: report.succeeded(item.path, result),
                            on_failed=lambda item, error: report.failed(item.path, error))
    waiting = deque(enumerate(photos))

    def feed() -> None:
        """Hand over the photos in order; a name given twice waits until its first run is settled."""
        while waiting and not dispatcher.holds(waiting[0][1]):
            index, photo = waiting.popleft()
            dispatcher.add(WorkItem(photo, preset, f"{index}:{photo}", "", "", None, output_dir=output_dir))

    try:
        with progress_bar(preset) as progress:
            while feed() or dispatcher.items:  # feed() returns None: the loop runs while photos are in hand
                dispatcher.tick()
                for worker in executor.workers():
                    if worker.running:
                        progress(worker.running.get("done", 0), worker.running.get("total", 0),
                                 printable(f"{Path(str(worker.running.get('file', ''))).name} "
                                           f"{worker.running.get('message', '')}"))
                if dispatcher.items:
                    wake.wait(0.1)
                    wake.clear()
    except BaseException:
        executor.abandon()
        raise
    finally:
        executor.shutdown(time.monotonic() + 1.0)
    return 1 if report.failures else 0


class _Report:
    """Prints each photo's outcome as it comes back, and counts failures."""

    def __init__(self, preset: str, as_json: bool) -> None:
        self.preset, self.as_json = preset, as_json
        self.failures = 0

    def failed(self, photo: Path, error: BaseException) -> None:
        self.failures += 1
        line = one_line(photo, error)
        tqdm.write(f"error: {line}", file=sys.stderr)
        if self.as_json:
            print(json.dumps({"input": str(photo), "preset": self.preset, "error": line}), flush=True)

    def succeeded(self, photo: Path, result: JobResult) -> None:
        if self.as_json:
            print(json.dumps(result.as_json()), flush=True)
        else:
            print(printable(f"{photo} -> {result.output} ({result.seconds:.1f} s)"), flush=True)
