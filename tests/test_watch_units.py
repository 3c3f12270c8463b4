"""The watcher's building blocks without a daemon: name filters, preset folders, the stability gate, the ledger."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import DEFAULT_IGNORE, WatchOptions
from pipeline.daemon.ledger import Ledger, job_key
from pipeline.daemon.watch import StabilityGate, is_candidate, preset_for, scan

OPTIONS = WatchOptions()


@pytest.mark.parametrize("name", [
    "IMG_1234.jpg", "IMG_1234.JPG", "photo.jpeg", "scan.png", "x.webp", "phone.HEIC", "a.tiff", "b.gif",
])
def test_photo_names_are_candidates(name: str) -> None:
    assert is_candidate(Path("/in") / name, OPTIONS)


@pytest.mark.parametrize("name", [
    ".syncthing.IMG_1.jpg.tmp", "~syncthing~IMG_1.jpg.tmp", "IMG_1.jpg.part", "IMG_1.jpg.crdownload", "IMG_1.tmp",
    ".~lock.IMG_1.jpg#", "~$IMG_1.jpg", ".DS_Store", "._IMG_1.jpg", "IMG_1.jpg.icloud", ".IMG_1.jpg.icloud",
    ".hidden.jpg", ".IMG_1.jpg.Ab12Cd", "notes.txt", "IMG_1", "movie.mov",
])
def test_sync_client_temp_files_and_other_names_are_ignored(name: str) -> None:
    assert not is_candidate(Path("/in") / name, OPTIONS)


def test_extensions_and_ignore_globs_are_configurable() -> None:
    options = WatchOptions(extensions=[".JXL", "jpg"], ignore=DEFAULT_IGNORE + ["draft-*"])
    assert options.extensions == ["jpg", "jxl"]
    assert is_candidate(Path("/in/a.jxl"), options)
    assert not is_candidate(Path("/in/draft-a.jpg"), options)
    assert not is_candidate(Path("/in/a.png"), options)


def test_preset_comes_from_the_folder() -> None:
    inbox = Path("/in")
    presets = ["mosaic", "swirls"]
    assert preset_for(inbox / "a.jpg", inbox, presets, "swirls") == ("swirls", None)
    assert preset_for(inbox / "mosaic" / "a.jpg", inbox, presets, "swirls") == ("mosaic", None)
    assert preset_for(inbox / "mosaic" / "trip" / "a.jpg", inbox, presets, "swirls") == ("mosaic", None)
    preset, warning = preset_for(inbox / "holiday" / "a.jpg", inbox, presets, "swirls")
    assert preset == "swirls" and "'holiday' is not a preset" in warning


def test_scan_lists_candidates_oldest_first(tmp_path: Path) -> None:
    for index, name in enumerate(["b.jpg", "a.jpg", "sub/c.png", ".hidden/d.jpg", "e.jpg.part"]):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (1000 + index, 1000 + index))
    assert [p.relative_to(tmp_path).as_posix() for p in scan(tmp_path, OPTIONS)] == ["b.jpg", "a.jpg", "sub/c.png"]


def test_gate_waits_until_size_and_mtime_stop_changing(tmp_path: Path) -> None:
    gate = StabilityGate(stable_seconds=2.0, empty_timeout=100)
    path = tmp_path / "a.jpg"
    path.write_bytes(b"part one")
    gate.observe(path, now=0.0)
    assert gate.release(now=0.0) == []  # first look: remember size/mtime
    assert gate.release(now=1.5) == []
    with open(path, "ab") as handle:  # still being written
        handle.write(b" and two")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert gate.release(now=1.9) == []  # change seen: the clock restarts
    assert gate.release(now=3.0) == []
    [ready] = gate.release(now=4.0)
    assert ready.path == path and ready.size == len(b"part one and two") and ready.problem is None
    assert len(gate) == 0


def test_gate_fails_files_that_stay_empty_and_non_regular_files(tmp_path: Path) -> None:
    gate = StabilityGate(stable_seconds=0.5, empty_timeout=10)
    empty = tmp_path / "empty.jpg"
    empty.touch()
    link = tmp_path / "link.jpg"
    link.symlink_to("/etc/hostname")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    for path in (empty, link, fifo):
        gate.observe(path, now=0.0)
    released = {item.path.name: item.problem for item in gate.release(now=0.0)}
    assert "symbolic link" in released["link.jpg"] and "not a regular file" in released["pipe.jpg"]
    assert gate.release(now=5.0) == []  # empty, but not for long enough
    [late] = gate.release(now=10.5)
    assert late.path == empty and "empty file" in late.problem


def test_gate_forgets_files_that_vanish(tmp_path: Path) -> None:
    gate = StabilityGate(stable_seconds=0.1, empty_timeout=10)
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x")
    gate.observe(path, now=0)
    path.unlink()
    assert gate.release(now=1) == [] and len(gate) == 0


def test_ledger_recovers_interrupted_jobs_and_recognises_done_work(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    key = job_key("abc", "mosaic", "s1")
    ledger.enqueue(key, "abc", "mosaic", "s1", "job1", "/in/a.jpg")
    ledger.mark_running(key)
    ledger.close()
    reopened = Ledger(tmp_path / "ledger.sqlite3")  # as after kill -9
    assert reopened.recover_interrupted() == 1
    record = reopened.get(key)
    assert record.state == "queued" and record.attempts == 1
    reopened.mark_running(key)
    reopened.mark_done(key, "/out/a.jpg")
    assert reopened.get(key).output == "/out/a.jpg"
    assert reopened.get(job_key("abc", "mosaic", "s2")) is None  # other settings: new work
    assert reopened.counts() == {"queued": 0, "running": 0, "done": 1, "failed": 0}
