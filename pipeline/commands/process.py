"""``photostyle process PHOTO...``: the stage chain on each photo, once, in the foreground."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from pipeline.app import App
from pipeline.errors import ConfigError, PhotostyleError
from pipeline.job import JobRequest
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
