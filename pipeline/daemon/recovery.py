"""After a crash: complete what was already published instead of doing it twice.

A job killed after its result got its name but before the ledger said ``done``
(kill -9, power loss) would otherwise be redone at the next start and write a
second result (``p0302-1.jpg``). The publisher records the output's name in the
ledger right after the rename, and every sidecar carries the photo's content hash
and the settings hash, so at start a ``running`` job is *completed* when a result
with a matching sidecar exists, and only redone otherwise. A result left without
its sidecar (killed between the two writes) was never published: it is removed,
and the job redone. That holds also when the kill came before the ledger took the
result's name: a file in the job's outbox folder, named after its photo, newer
than the job's start and without a sidecar, is that job's unpublished result.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from pipeline.daemon.ledger import JobRecord, Ledger
from pipeline.job.sidecar import SUFFIX, SidecarError, load_record, sidecar_path

log = logging.getLogger("photostyle.recovery")

FINGERPRINT = "fingerprint"  # the report key the dispatcher fills before publishing: content_sha256, settings_hash


def fingerprint_record(content_hash: str, settings_hash: str) -> dict[str, str]:
    """What a sidecar says about the job that made it, so recovery can recognise it."""
    return {"content_sha256": content_hash, "settings_hash": settings_hash}


def _matches(sidecar: Path, record: JobRecord) -> bool:
    try:
        data = load_record(sidecar)
    except SidecarError:
        return False
    report: Any = data.get("report") or {}
    found = report.get(FINGERPRINT) if isinstance(report, dict) else None
    return found == fingerprint_record(record.content_hash, record.settings_hash)


def _published(record: JobRecord, outbox: Path) -> Path | None:
    """The result of ``record`` if it is on disk with a matching sidecar."""
    if record.output:
        output = Path(record.output)
        if output.is_file() and _matches(sidecar_path(output), record):
            return output
        if output.is_file() and not sidecar_path(output).exists():
            output.unlink(missing_ok=True)  # named by this job a moment before the crash, never published
            log.info("removed a result left without its sidecar by the crash", extra={"fields": {"output": output}})
        return None
    # The ledger could not record the name (a full state disk, or a kill right after the link):
    # look for the sidecar by name and fingerprint.
    stem = Path(record.source).stem
    folder = outbox / record.preset
    for sidecar in sorted(folder.glob(f"{glob_escape(stem)}*{SUFFIX}")) if folder.is_dir() else []:
        output = sidecar.with_name(sidecar.name[: -len(SUFFIX)])
        if output.is_file() and _matches(sidecar, record):
            return output
    _remove_orphans(record, folder, stem)
    return None


ORPHAN_CLOCK_SLACK = 2.0  # seconds: file system timestamps may be coarser than the ledger's clock


def _remove_orphans(record: JobRecord, folder: Path, stem: str) -> None:
    """Remove results this interrupted job named but never published (no sidecar, made after it started)."""
    if not folder.is_dir():
        return
    prefix = stem[:16]  # long names are shortened keeping their start (fileops.fit_name)
    for entry in list(os.scandir(folder)):
        name = entry.name
        if not name.startswith(prefix) or name.endswith(SUFFIX) or name.startswith("."):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        output = Path(entry.path)
        if (not stat.S_ISREG(info.st_mode) or info.st_mtime < record.updated - ORPHAN_CLOCK_SLACK
                or sidecar_path(output).exists()):
            continue
        output.unlink(missing_ok=True)
        log.info("removed a result left without its sidecar by the crash", extra={"fields": {"output": output}})


def glob_escape(text: str) -> str:
    """``text`` as a literal glob pattern (names may hold ``*``, ``?`` and ``[``)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def recover(ledger: Ledger, outbox: Path) -> tuple[int, int]:
    """Complete published jobs, requeue the rest; returns (completed, requeued)."""
    completed = 0
    for record in ledger.interrupted():
        output = _published(record, outbox)
        if output is not None:
            ledger.mark_done(record.key, output)
            completed += 1
            log.info("completed a job the crash interrupted after its result was saved",
                     extra={"fields": {"job": record.job_id, "output": output}})
    return completed, ledger.recover_interrupted()
