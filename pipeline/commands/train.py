"""``photostyle train PRESET``: distil a preset into a feed-forward network (a fast preset).

The photos: those in ``processed/`` (the user's own, already rendered once),
plus ``--photos DIR``; with none, a small bundled set of public-domain photos
(``pipeline/training_photos/SOURCES.md``). One photo in eight (at least one) is
held out for the validation loss.

The run: a progress bar with the loss and the time left; ``--minutes`` as a
budget; a checkpoint every ``--checkpoint-every`` steps in
``state/models/PRESET.checkpoint.pt``, from which the next ``photostyle train
PRESET`` resumes (after Ctrl-C, kill -9 or a reboot) when the preset's objective,
the photos and the training settings are the same; ``--fresh`` starts over.
Ctrl-C stops at the end of the current step and still writes the model.

The model: ``state/models/PRESET.pt``, written atomically, then its sidecar
``PRESET.json`` (:mod:`pipeline.engine.fast.model_files`), which records the
objective it was trained for, the photos, the steps, the loss curves, the device
and the time. The training itself runs in the ``train_model`` hook, on this
machine's device, or with ``executor: {kind: ray}`` as a task on the cluster (a GPU
node when it has one, :mod:`pipeline.execution.ray.training`); either way the
checkpoints and the model are stored here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.app import App
from pipeline.config.settings_hash import document_hash, objective_document
from pipeline.engine.fast.model_files import FORMAT, ModelFiles
from pipeline.errors import ConfigError
from pipeline.files.fileops import staging_folder, use_staging_folder, write_bytes_atomic, write_text_atomic
from pipeline.files.photo_file import read_photo_bytes
from pipeline.job.imageio import head_problem
from pipeline.job.training import TrainingCallbacks, TrainingProgress, TrainingRequest

log = logging.getLogger("photostyle")

BUNDLED_PHOTOS = Path(__file__).resolve().parent.parent / "training_photos"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
HOLD_OUT_EVERY = 8  # one photo in this many is kept for validation
# Photos kept in memory for a run (each as its file and as a float tensor at the preset's size, ~3 MB at
# 512 px): a processed/ folder of years stays within about 1 GB. Which ones: the first by content hash,
# so the same folder gives the same set (and a checkpoint of it stays resumable).
MAX_PHOTOS = 200
LOG_EVERY = 30.0  # seconds between progress lines in the log when there is no terminal for the bar


@dataclass(frozen=True)
class TrainingOptions:
    photos: tuple[Path, ...] = ()
    steps: int = 2000
    minutes: float | None = None
    fresh: bool = False
    crop: int = 256
    batch: int = 4
    width: float = 1.0
    learning_rate: float = 1e-3
    checkpoint_every: int = 25
    validate_every: int = 50


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes
    sha256: str


def _photo_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in PHOTO_SUFFIXES and not any(part.startswith(".") for part in path.parts[-2:]):
            yield path


def gather_photos(app: App, extra: tuple[Path, ...]) -> tuple[list[Photo], str]:
    """The training photos (each file once, by content) and where they came from, in a few words."""
    found: dict[str, Photo] = {}
    sources = []
    seen = 0  # photos left out beyond MAX_PHOTOS
    for folder in (app.config.processed, *extra):
        if not folder.is_dir():
            if folder in extra:
                raise ConfigError([f"{folder}: --photos: not a folder"])
            continue
        before = len(found)
        for path in _photo_files(folder):
            try:
                data = read_photo_bytes(path)
            except OSError as exc:
                log.warning("%s: skipped (%s)", path, exc.strerror or exc)
                continue
            problem = head_problem(data[:64]) if data else "empty file"
            if problem is not None:
                log.warning("%s: skipped (%s)", path, problem)
                continue
            digest = hashlib.sha256(data).hexdigest()
            found.setdefault(digest, Photo(str(path), data, digest))
            if len(found) > MAX_PHOTOS:  # keep only the first by hash in memory, not every file read
                seen += 1
                del found[max(found)]
        sources.append(f"{len(found) - before} from {folder}")
    if not found:
        for path in _photo_files(BUNDLED_PHOTOS):
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            found.setdefault(digest, Photo(f"bundled/{path.name}", data, digest))
        sources = [f"none of your own yet: the {len(found)} bundled public-domain photos"]
    if seen:
        sources.append(f"kept the first {MAX_PHOTOS} of {MAX_PHOTOS + seen} by content hash")
    return sorted(found.values(), key=lambda photo: photo.sha256), "; ".join(sources)


def split(photos: list[Photo]) -> tuple[list[Photo], list[Photo]]:
    """(training, validation): every HOLD_OUT_EVERY-th photo by content hash, at least one when there are two."""
    if len(photos) < 2:
        return photos, []
    held = [photo for index, photo in enumerate(photos) if index % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1] or [photos[-1]]
    return [photo for photo in photos if photo not in held], held


def _identity(objective: str, request: TrainingRequest, training: list[Photo],
              validation: list[Photo]) -> dict[str, Any]:
    """What a checkpoint must share with this run to be resumed."""
    settings = {key: value for key, value in asdict(request).items()
                if key not in ("photos", "validation", "checkpoint", "steps", "seconds", "preset", "checkpoint_every",
                               "validate_every")}  # what changes the steps taken, not how often they are saved
    return {"objective_hash": objective, "settings": settings, "photos": [photo.sha256 for photo in training],
            "validation": [photo.sha256 for photo in validation]}


def _checkpoint_note(files: ModelFiles) -> Path:
    return files.checkpoint.with_suffix(".json")


def resumable(files: ModelFiles, identity: dict[str, Any]) -> tuple[bytes | None, str]:
    """The checkpoint to resume from, if it belongs to this run, and a line saying what happens."""
    try:
        note = json.loads(_checkpoint_note(files).read_text())
        data = files.checkpoint.read_bytes()
    except (OSError, ValueError):
        return None, "starting from scratch"
    if note.get("identity") != identity:
        changed = [key for key in identity if note.get("identity", {}).get(key) != identity[key]]
        return None, f"starting from scratch: the checkpoint was for other {', '.join(changed)}"
    return data, f"resuming from the checkpoint at step {note.get('step')}"


class _Interrupt:
    """The first SIGINT/SIGTERM asks training to stop after the current step; the second stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("stopping after this step (the model is written); again to stop now", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _eta(progress: TrainingProgress, began: float, first_step: int, budget: float | None) -> str:
    """Time left: to the last step at this run's pace, or to the end of ``--minutes`` if that comes first."""
    done = progress.step - first_step
    if done <= 0:
        return ""
    elapsed = time.monotonic() - began
    left = elapsed / done * (progress.steps - progress.step)
    if budget is not None:
        left = min(left, max(0.0, budget - elapsed))
    return f" eta {int(left // 60)}:{int(left % 60):02d}"


def train(app: App, preset: str, options: TrainingOptions) -> str:
    """Train PRESET's network; returns the summary line. ConfigError for an unknown preset or no photos."""
    if preset not in app.config.presets:
        raise ConfigError([f"{app.config_path}: unknown preset {preset!r}; presets: "
                           f"{', '.join(sorted(app.config.presets))}"])
    photos, where = gather_photos(app, options.photos)
    if not photos:
        raise ConfigError([f"{preset}: no training photos (processed/ is empty, and no bundled photos are installed); "
                           "give some with --photos DIR"])
    training, validation = split(photos)
    log.info("training %s on %d photos (%s), %d held out for validation", preset, len(training), where,
             len(validation))
    files = ModelFiles.of(app.config.state, preset)
    request = TrainingRequest(
        preset=preset, photos=[(p.name, p.data) for p in training], validation=[(p.name, p.data) for p in validation],
        steps=options.steps, seconds=None if options.minutes is None else options.minutes * 60, crop=options.crop,
        batch=options.batch, learning_rate=options.learning_rate, width=options.width,
        checkpoint_every=options.checkpoint_every, validate_every=options.validate_every)
    objective = objective_document(app.config, preset)  # as the run starts: what the model will be trained for
    identity = _identity(document_hash(objective), request, training, validation)
    checkpoint, how = (None, "starting from scratch (--fresh)") if options.fresh else resumable(files, identity)
    log.info("%s: %s", preset, how)
    request = replace(request, checkpoint=checkpoint)
    files.model.parent.mkdir(parents=True, exist_ok=True)
    use_staging_folder(staging_folder(app.config.state))
    from pipeline.execution.worker import Worker  # imports torch: after the checks above

    bar = tqdm(desc=f"train {preset}", total=options.steps, unit="step", file=sys.stderr, disable=None,
               dynamic_ncols=True)
    began, first, logged = time.monotonic(), [None], [time.monotonic()]

    def on_progress(progress: TrainingProgress) -> None:
        if first[0] is None:
            first[0] = progress.step - 1
            bar.update(progress.step - 1 - bar.n)
        validation_text = "" if progress.validation is None else f" val {progress.validation:.4g}"
        line = f"loss {progress.loss:.4g}{validation_text}{_eta(progress, began, first[0], request.seconds)}"
        bar.set_postfix_str(line, refresh=False)
        bar.update(progress.step - bar.n)
        if bar.disable and time.monotonic() - logged[0] >= LOG_EVERY:  # no terminal (a log file, journald)
            logged[0] = time.monotonic()
            log.info("%s: step %d/%d %s", preset, progress.step, progress.steps, line)

    def on_checkpoint(data: bytes, step: int) -> None:
        write_bytes_atomic(files.checkpoint, data)
        write_text_atomic(_checkpoint_note(files), json.dumps({"identity": identity, "step": step}))

    with _Interrupt() as interrupt:
        try:
            callbacks = TrainingCallbacks(on_progress, on_checkpoint, lambda: interrupt.requested)
            if app.config.executor.kind == "ray":
                from pipeline.execution.ray.training import train_on_cluster

                log.info("%s: training on the Ray cluster (%s)", preset, app.config.executor.address or "private")
                model = train_on_cluster(app, request, callbacks)
            else:
                model = Worker(app).train(request, callbacks)
        finally:
            bar.close()
    return store_model(preset, objective, files, model.data, model.info, training, validation, where)


def store_model(preset: str, objective: dict[str, Any], files: ModelFiles, data: bytes, info: dict[str, Any],
                training: list[Photo], validation: list[Photo], where: str) -> str:
    """Write the model, then its sidecar (the sidecar names the model's hash: it is what makes the model current)."""
    write_bytes_atomic(files.model, data)
    sidecar = {
        "format": FORMAT, "preset": preset, "model_sha256": hashlib.sha256(data).hexdigest(),
        "objective_hash": document_hash(objective), "objective": objective,
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **info,
        "photos": {"source": where, "training": [{"name": p.name, "sha256": p.sha256} for p in training],
                   "validation": [{"name": p.name, "sha256": p.sha256} for p in validation]},
    }
    write_text_atomic(files.sidecar, json.dumps(sidecar, indent=1))
    validation_curve = info["curves"]["validation"]
    loss = f", validation loss {validation_curve[-1][2]:.4g}" if validation_curve else ""
    return (f"{preset}: {files.model} ({info['steps']} steps, {info['seconds'] / 60:.1f} min on {info['device']}"
            f"{loss}); presets with `engine: fast` now use it")


