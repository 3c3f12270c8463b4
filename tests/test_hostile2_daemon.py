"""Hostile inputs II against a real ``photostyle watch``: a poison photo, a kill -9 mid-publish, bad batches."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import yaml

from daemon_support import DaemonProcess, daemon_config, drop, files_under, jpeg_bytes, wait_for

POISON_PLUGIN = '''
"""Test plugin: a photo named poison* kills the whole process, as the kernel's OOM killer would."""
import os

from pipeline import hookimpl


@hookimpl
def preprocess(image, ctx):
    if ctx.source.name.startswith("poison"):
        os._exit(137)
    return image
'''

BATCH_PLUGIN = '''
"""Test plugin: stylising photos together fails as a whole (a batch plugin with a bug); alone they work."""
from pipeline import hookimpl


@hookimpl
def stylize_batch(images, ctxs):
    raise RuntimeError("this batch plugin cannot do batches")
'''

KILL_AFTER_LINK = '''
"""sitecustomize for a test: SIGKILL this process right after a result in the outbox gets its final name."""
import os
import signal

_link = os.link
_OUTBOX = os.environ["PHOTOSTYLE_TEST_KILL_OUTBOX"]
_ONCE = os.environ["PHOTOSTYLE_TEST_KILL_ONCE"]


def link(src, dst, *args, **kwargs):
    _link(src, dst, *args, **kwargs)
    target = os.fsdecode(dst)
    if target.startswith(_OUTBOX) and target.endswith(".jpg") and not os.path.exists(_ONCE):
        open(_ONCE, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)


os.link = link
'''


def _with_plugin(config: Path, name: str, source: str) -> Path:
    data = yaml.safe_load(config.read_text())
    folder = config.parent / "plugins"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(source)
    data["plugins"].setdefault("paths", []).append(str(folder))
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def _ledger(root: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(root / "state" / "ledger.sqlite3") as db:
        rows = db.execute("SELECT source, state, crashes FROM jobs ORDER BY created").fetchall()
    return [(Path(os.fsdecode(source)).name, state, crashes) for source, state, crashes in rows]


def test_a_photo_that_kills_the_process_fails_after_max_attempts_and_the_others_go_first(tmp_path: Path) -> None:
    config = _with_plugin(daemon_config(tmp_path / "p", executor={"kind": "local", "max_attempts": 2}),
                          "poison", POISON_PLUGIN)
    root = config.parent
    inbox = root / "inbox"
    inbox.mkdir()
    drop(inbox / "poison.jpg", jpeg_bytes(1))  # the oldest: queued first at every start
    for index in range(3):
        drop(inbox / f"good{index}.jpg", jpeg_bytes(10 + index))
        os.utime(inbox / f"good{index}.jpg", (2_000_000_000 + index,) * 2)
    settled = lambda: ((root / "failed" / "tiny" / "poison.jpg").exists()  # noqa: E731
                       and len(files_under(root / "processed" / "tiny")) == 3)
    starts, deaths = 0, 0
    while starts < 5:  # systemd's Restart=always, with a guard against looping forever
        starts += 1
        with DaemonProcess(config) as daemon:
            wait_for(lambda: daemon.process.poll() is not None or settled(), timeout=120,
                     message="the daemon to die or settle everything")
            if daemon.process.poll() is not None:
                assert daemon.process.returncode == 137
                deaths += 1
                continue
            assert daemon.stop() == 0
            break
    assert deaths == 2, (deaths, _ledger(root))
    assert (root / "failed" / "tiny" / "poison.jpg").exists()
    note = (root / "failed" / "tiny" / "poison.jpg.error.txt").read_text()
    assert "stopped a worker 2 times (max_attempts 2" in note
    assert sorted(p.name for p in files_under(root / "processed" / "tiny")) == ["good0.jpg", "good1.jpg", "good2.jpg"]
    assert len(files_under(root / "outbox" / "tiny", "*.jpg")) == 3
    assert ("poison.jpg", "failed", 2) in _ledger(root)


def test_the_second_start_does_the_other_photos_before_the_suspect(tmp_path: Path) -> None:
    config = _with_plugin(daemon_config(tmp_path / "p", executor={"kind": "local", "max_attempts": 3}),
                          "poison", POISON_PLUGIN)
    root = config.parent
    inbox = root / "inbox"
    inbox.mkdir()
    drop(inbox / "poison.jpg", jpeg_bytes(1))
    with DaemonProcess(config) as daemon:
        assert daemon.process.wait(timeout=120) == 137  # it took the daemon down once
    for index in range(3):  # photos that arrived while it was down, newer than the suspect
        drop(inbox / f"good{index}.jpg", jpeg_bytes(10 + index))
    with DaemonProcess(config) as daemon:
        assert daemon.process.wait(timeout=120) == 137  # the suspect ran last, and killed it again
        done = [entry["file"] for entry in daemon.messages("done")]
        started = [entry["file"] for entry in daemon.messages("started")]
    assert sorted(Path(name).name for name in done) == ["good0.jpg", "good1.jpg", "good2.jpg"]
    assert Path(started[-1]).name == "poison.jpg"
    assert ("poison.jpg", "queued", 2) in _ledger(root) or ("poison.jpg", "running", 1) in _ledger(root)


def test_a_batch_that_fails_as_a_whole_is_split_and_each_photo_done_alone(tmp_path: Path) -> None:
    config = _with_plugin(daemon_config(tmp_path / "p", watch={"batch_size": 4, "stable_seconds": 0.4}),
                          "batch", BATCH_PLUGIN)
    root = config.parent
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        inbox = root / "inbox" / "tiny"
        for index in range(4):  # written before any is stable, so they are queued together
            drop(inbox / f"b{index}.jpg", jpeg_bytes(20 + index))
        daemon.wait_msg("done", count=4, timeout=120)
        assert not daemon.messages("failed")
        assert daemon.messages("a batch failed as a whole; its photos are tried again one by one")
    assert len(files_under(root / "outbox" / "tiny", "*.jpg")) == 4


def test_a_kill_9_right_after_the_result_gets_its_name_leaves_one_result_and_no_temp_file(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p")
    root = config.parent
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_AFTER_LINK)
    env = {"PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
           "PHOTOSTYLE_TEST_KILL_OUTBOX": str(root / "outbox"), "PHOTOSTYLE_TEST_KILL_ONCE": str(tmp_path / "once")}
    drop(root / "inbox" / "p.jpg", jpeg_bytes(5))
    with DaemonProcess(config, env=env) as daemon:
        assert daemon.process.wait(timeout=120) == -signal.SIGKILL
    assert (tmp_path / "once").exists()  # it was killed where the test meant it to be
    with DaemonProcess(config) as daemon:
        daemon.wait_msg("done")
        daemon.wait_msg("moved to processed")
        assert daemon.stop() == 0
    outbox = root / "outbox" / "tiny"
    results = sorted(p.name for p in outbox.iterdir())
    assert results == ["p.jpg", "p.jpg.json"], results
    assert not [p for p in (root / "outbox").rglob("*") if p.name.endswith(".tmp")]
    assert not [p for p in (root / "state" / "tmp").rglob("*") if p.is_file()]


def test_unknown_folder_warned_once_and_paths_under_a_replaced_folder_are_not_failures(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", watch={"stable_seconds": 1.5})
    root = config.parent
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        for index in range(3):
            drop(root / "inbox" / "holiday" / f"h{index}.jpg", jpeg_bytes(30 + index))
        gone = drop(root / "inbox" / "tiny" / "sub" / "x.jpg", jpeg_bytes(40))
        for path in gone.parent.iterdir():
            path.unlink()
        gone.parent.rmdir()
        gone.parent.write_bytes(b"a file where the folder was")  # a sync client resetting the folder
        daemon.wait_msg("done", count=3, timeout=120)
        drop(root / "inbox" / "tiny" / "marker.jpg", jpeg_bytes(41))
        daemon.wait_msg("done", count=4, timeout=120)
        warnings = [entry for entry in daemon.events() if "is not a preset" in str(entry.get("msg"))]
        assert len(warnings) == 1, warnings
        assert not daemon.messages("failed")
    assert all(state == "done" for _, state, _ in _ledger(root)), _ledger(root)


def test_a_file_that_is_no_image_is_refused_from_its_first_bytes_at_intake(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p")
    root = config.parent
    junk = os.urandom(3 << 20)  # random bytes: no zero runs, no image signature
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        drop(root / "inbox" / "tiny" / "junk.jpg", b"\x01" + junk)
        [entry] = daemon.wait_msg("failed")
        assert entry["stage"] == "intake" and "not an image" in entry["reason"]
        assert not daemon.messages("queued")  # never fingerprinted, never queued, never decoded
    assert (root / "failed" / "tiny" / "junk.jpg").exists()
