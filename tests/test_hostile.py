"""The inbox is a trust boundary: names, links, full disks, second daemons and crashes, tried as a hostile tester.

Each test runs the real daemon as a subprocess on real files and checks that every
photo ends up exactly once in the outbox (with its original in processed/) or in
failed/, and that the daemon is still up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import run_cli
from daemon_support import DaemonProcess, daemon_config, drop, files_under, jpeg_bytes, wait_for


def _tmpfs(folder: Path, size: str) -> None:
    """Mount a small tmpfs at ``folder`` (tests run as root in CI); skip with the reason where that is impossible."""
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")


def _umount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; return the filler file."""
    filler = folder / "filler.bin"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 16))
                handle.flush()
        except OSError:
            pass
    return filler


def test_a_second_daemon_on_the_same_state_folder_refuses_to_start_and_status_still_reads(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p")
    with DaemonProcess(config) as first:
        first.wait_ready()
        second = run_cli("watch", "-c", config, timeout=120)
        assert second.returncode == 2
        [line] = second.stderr.strip().splitlines()
        assert "another photostyle watch is already running" in line and f"pid {first.process.pid}" in line
        assert "Traceback" not in second.stderr
        status = run_cli("status", "-c", config)
        assert status.returncode == 0 and "daemon: running" in status.stdout
        drop(config.parent / "inbox" / "one.jpg", jpeg_bytes(1))
        first.wait_msg("done")
        assert first.stop() == 0
    assert len(files_under(config.parent / "outbox", "*.jpg")) == 1


def test_a_state_folder_that_cannot_be_used_stops_the_start_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "p" / "blocker"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the state folder's parent should be")
    config = daemon_config(tmp_path / "p", state=str(blocker / "state"))
    result = run_cli("watch", "-c", config, timeout=120)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert str(blocker) in line and "Traceback" not in result.stderr


def test_a_corrupt_ledger_is_moved_aside_and_rebuilt_and_status_says_so_in_one_line(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p")
    state = config.parent / "state"
    state.mkdir(parents=True)
    (state / "ledger.sqlite3").write_bytes(b"this is not a database" * 100)
    status = run_cli("status", "-c", config)
    assert "Traceback" not in status.stderr + status.stdout
    assert "not a database" in status.stdout + status.stderr
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        [moved] = daemon.messages("the ledger was corrupt: moved it aside and started a new one; photos done before "
                                  "will be recognised only by their results")
        drop(config.parent / "inbox" / "after.jpg", jpeg_bytes(2))
        daemon.wait_msg("done")
        assert daemon.stop() == 0
    assert Path(moved["moved_to"]).read_bytes().startswith(b"this is not a database")
    assert len(files_under(config.parent / "outbox", "*.jpg")) == 1


def test_a_full_state_disk_keeps_the_photo_in_the_inbox_and_it_is_done_once_space_returns(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", watch={"retry_seconds": 0.5, "retry_max_seconds": 1})
    state = config.parent / "state"
    _tmpfs(state, "2m")
    try:
        with DaemonProcess(config) as daemon:
            daemon.wait_ready()
            filler = _fill(state)
            photo = drop(config.parent / "inbox" / "full.jpg", jpeg_bytes(3))
            daemon.wait_msg("the ledger cannot be written; the photo stays in the inbox and is tried again")
            assert daemon.process.poll() is None and photo.is_file()
            filler.unlink()
            daemon.wait_msg("done", timeout=90)
            assert daemon.stop() == 0
        assert "Traceback" not in daemon.text()
        assert [p.name for p in files_under(config.parent / "outbox", "*.jpg")] == ["full.jpg"]
        assert (config.parent / "processed" / "tiny" / "full.jpg").is_file()
    finally:
        _umount(state)


def test_a_full_outbox_disk_keeps_result_and_sidecar_together_and_retries_both(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", watch={"retry_seconds": 0.5, "retry_max_seconds": 1})
    outbox = config.parent / "outbox"
    _tmpfs(outbox, "2m")
    try:
        with DaemonProcess(config) as daemon:
            daemon.wait_ready()
            filler = _fill(outbox)
            drop(config.parent / "inbox" / "disk.jpg", jpeg_bytes(4))
            daemon.wait_msg("could not finish; the photo stays in the inbox")
            assert not files_under(outbox / "tiny", "*.jpg")  # no result without its sidecar
            filler.unlink()
            daemon.wait_msg("done", timeout=90)
            assert daemon.stop() == 0
        [result] = files_under(outbox, "*.jpg")
        assert result.with_name(result.name + ".json").is_file()
        assert len(daemon.messages("started")) == 1, "the rendered result is kept for the retry, not rendered again"
    finally:
        _umount(outbox)


def test_an_unmovable_failed_photo_is_not_rerun_at_every_rescan_and_moves_once_possible(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", watch={"rescan_seconds": 0.5, "retry_seconds": 1, "retry_max_seconds": 2})
    root = config.parent
    (root / "failed").mkdir(parents=True)
    (root / "failed" / "tiny").write_text("a file where the failed/tiny folder should be")
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        drop(root / "inbox" / "broken.jpg", b"\xff\xd8\xff\xe0 a JPEG signature, then not a jpeg at all")
        daemon.wait_msg("could not move to failed; it stays in the inbox and is not run again")
        daemon.wait_idle(rescans=4)  # rescans see it in the inbox: it must not be run again
        assert len(daemon.messages("failed")) == 1 and len(daemon.messages("started")) == 1
        (root / "failed" / "tiny").unlink()
        wait_for((root / "failed" / "tiny" / "broken.jpg").is_file, 30, "the retried move to failed/")
        assert daemon.stop() == 0
    assert len(daemon.messages("failed")) == 1


def test_a_huge_sparse_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", limits={"max_file_bytes": 50_000_000})
    root = config.parent
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        huge = root / "inbox" / "huge.jpg"
        with open(huge, "wb") as handle:
            handle.truncate(20 * 1024**3)  # 20 GB of holes: hashing it would block for a minute
        [failure] = daemon.wait_msg("failed")
        assert "over limits.max_file_bytes" in failure["reason"]
        drop(root / "inbox" / "normal.jpg", jpeg_bytes(5))
        daemon.wait_msg("done")
        assert daemon.stop() == 0
    assert (root / "failed" / "tiny" / "huge.jpg").stat().st_size == 20 * 1024**3


def test_a_writer_that_pauses_longer_than_stable_seconds_is_waited_for(tmp_path: Path) -> None:
    """inotify reports close-write: a file still open for writing is not taken, however long the writer pauses."""
    config = daemon_config(tmp_path / "p", watch={"stable_seconds": 0.4})
    root = config.parent
    data = jpeg_bytes(6, (120, 90))
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        with open(root / "inbox" / "phone.jpg", "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            time.sleep(3)  # more than 7x stable_seconds with the file open
            assert not daemon.messages("queued")
            handle.write(data[len(data) // 2:])
        daemon.wait_msg("done")
        assert daemon.stop() == 0
    assert not daemon.messages("failed")
    assert (root / "processed" / "tiny" / "phone.jpg").read_bytes() == data


def test_a_truncated_photo_that_changes_again_after_failing_is_taken_again(tmp_path: Path) -> None:
    """Polling sees no close-write: a half-written photo fails to load, waits in the inbox, and is redone when complete."""
    config = daemon_config(tmp_path / "p", watch={"poll": True, "poll_interval": 0.5, "stable_seconds": 0.4,
                                                  "incomplete_grace": 60})
    root = config.parent
    data = jpeg_bytes(7, (120, 90))
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        photo = root / "inbox" / "upload.jpg"
        with open(photo, "wb") as handle:
            handle.write(data[: len(data) // 3])
            handle.flush()
            daemon.wait_msg("left in the inbox in case it is still being written; moves to failed if it stays "
                            "unchanged")
            handle.write(data[len(data) // 3:])
        daemon.wait_msg("done")
        assert daemon.stop() == 0
    assert (root / "processed" / "tiny" / "upload.jpg").read_bytes() == data
    assert not (root / "failed").exists() or not files_under(root / "failed")


def test_an_inbox_deleted_and_recreated_is_watched_again_with_its_preset_folders(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", watch={"rescan_seconds": 3600})
    root = config.parent
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        shutil.rmtree(root / "inbox")
        (root / "inbox").mkdir()
        daemon.wait_msg("the inbox was deleted or replaced; recreating its folders and watching it again")
        assert (root / "inbox" / "other").is_dir()
        drop(root / "inbox" / "other" / "back.jpg", jpeg_bytes(8))
        daemon.wait_msg("done")  # long before the hourly rescan: the watch itself is back
        assert daemon.stop() == 0
    assert (root / "outbox" / "other" / "back.jpg").is_file()


FINISH_SLOWLY = '''
"""Test plugin: job_finished sleeps, so a test can kill the daemon after the result is saved."""
import os
import time

from pipeline import hookimpl


@hookimpl
def job_finished(ctx, result):
    open(os.environ["PHOTOSTYLE_TEST_SAVED"], "w").write(str(result.output))
    time.sleep(60)
'''


def test_kill_9_after_the_result_is_saved_completes_the_job_instead_of_redoing_it(tmp_path: Path) -> None:
    plugins = tmp_path / "p" / "finish_plugins"
    plugins.mkdir(parents=True)
    (plugins / "finish_slowly.py").write_text(FINISH_SLOWLY)
    config = daemon_config(tmp_path / "p", plugins={"disabled": ["gallery"], "paths": [str(plugins)]})
    root = config.parent
    marker = tmp_path / "saved.txt"
    with DaemonProcess(config, env={"PHOTOSTYLE_TEST_SAVED": str(marker)}) as daemon:
        daemon.wait_ready()
        drop(root / "inbox" / "p0302.jpg", jpeg_bytes(9))
        wait_for(marker.exists, 60, "the result to be saved")
        daemon.kill()
    restarted_config = daemon_config(tmp_path / "p")  # the same folders, without the sleeping plugin
    with DaemonProcess(restarted_config) as again:
        again.wait_msg("completed jobs whose results were saved before a crash")
        again.wait_msg("already done with these settings; not redoing it")
        wait_for((root / "processed" / "tiny" / "p0302.jpg").is_file, 30, "the original to be moved")
        assert again.stop() == 0
    assert not again.messages("started")
    assert [p.name for p in files_under(root / "outbox", "*.jpg")] == ["p0302.jpg"]


def test_a_queued_photo_swapped_for_a_symlink_is_never_read(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", slow=True, plugins={"paths": [str(tmp_path / "p" / "plugins")]})
    root = config.parent
    secret = tmp_path / "private.jpg"
    secret.write_bytes(jpeg_bytes(10))
    os.chmod(secret, 0o600)
    with DaemonProcess(config, env={"PHOTOSTYLE_TEST_SLOW": "4"}) as daemon:
        daemon.wait_ready()
        drop(root / "inbox" / "slow_backlog.jpg", jpeg_bytes(11))
        daemon.wait_msg("started")  # the worker is busy: the next photo waits as a path
        victim = drop(root / "inbox" / "victim.jpg", jpeg_bytes(10))  # same size as the secret
        daemon.wait_msg("queued", count=2)
        info = victim.stat()
        victim.unlink()
        victim.symlink_to(secret)
        os.utime(victim, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
        daemon.wait_msg("done")
        [refused] = wait_for(lambda: [e for e in daemon.messages("failed") if e["file"].endswith("victim.jpg")], 60,
                             "the symlink to be failed")
        assert "symbolic link" in refused["reason"]
        assert daemon.stop() == 0
    assert [p.name for p in files_under(root / "outbox" / "tiny", "*.jpg")] == ["slow_backlog.jpg"]
    assert (root / "failed" / "tiny" / "victim.jpg").is_symlink()
    assert not list((root / "outbox").rglob(".thumbs/*victim*"))


HOSTILE_NAMES = [
    b"latin1-caf\xe9.jpg",  # not UTF-8: an old NAS or an SMB share
    b"x\xff.jpg",
    b"n" * 246 + b".jpg",  # 250 bytes: derived names must be shortened safely
    b"line\nbreak.jpg",
    b"quote\"'.jpg",
    b"-leading-dash.jpg",
    b"\x1b[31mred\x1b[0m.jpg",
    "unicod\u00e9-\u2028sep.jpg".encode(),
]


def test_a_zoo_of_hostile_names_is_each_done_once_and_the_daemon_stays_up(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", watch={"rescan_seconds": 1})
    root = config.parent
    inbox = root / "inbox"
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        for index, name in enumerate(HOSTILE_NAMES):
            with open(os.path.join(os.fsencode(inbox), name), "wb") as handle:
                handle.write(jpeg_bytes(60 + index))
        daemon.wait_msg("done", count=len(HOSTILE_NAMES), timeout=180)
        daemon.wait_idle(rescans=3)  # nothing may be taken twice by a rescan
        assert daemon.process.poll() is None
        assert daemon.stop() == 0
    assert len(daemon.messages("started")) == len(HOSTILE_NAMES)
    outputs = files_under(root / "outbox", "*.jpg")
    assert len(outputs) == len(HOSTILE_NAMES)
    for output in outputs:
        assert len(os.fsencode(output.name)) <= 255
        assert output.with_name(output.name + ".json").is_file()
        with Image.open(output) as image:
            image.load()
    assert sorted(os.fsencode(p.name) for p in (root / "processed" / "tiny").iterdir()) == sorted(HOSTILE_NAMES)
    rows = sqlite3.connect(root / "state" / "ledger.sqlite3").execute("SELECT source FROM jobs").fetchall()
    assert sorted(os.path.basename(bytes(source)) for (source,) in rows) == sorted(HOSTILE_NAMES)
    assert "Traceback" not in daemon.text()


def test_interactive_ctrl_c_abandons_the_running_photo_at_once_and_a_second_one_exits(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", slow=True, watch={"shutdown_timeout": 30})
    root = config.parent
    with DaemonProcess(config, env={"PHOTOSTYLE_TEST_SLOW": "60"}) as daemon:
        daemon.wait_ready()
        drop(root / "inbox" / "slow_one.jpg", jpeg_bytes(12))
        daemon.wait_msg("started")
        began = time.monotonic()
        assert daemon.stop(signal.SIGINT) == 0
        assert time.monotonic() - began < 15, "Ctrl-C must not wait for shutdown_timeout"
    assert any("stopping: abandoning slow_one.jpg (redone at next start)" == e["msg"] for e in daemon.events())
    assert (root / "inbox" / "slow_one.jpg").is_file()

    stubborn = root / "stubborn_plugins"
    stubborn.mkdir()
    (stubborn / "stubborn.py").write_text(STUBBORN)  # a stage that never looks at should_stop
    config = daemon_config(tmp_path / "p", plugins={"disabled": ["gallery"], "paths": [str(stubborn)]})
    with DaemonProcess(config) as again:
        again.wait_msg("started")
        again.send(signal.SIGINT)
        again.wait_msg("stopping")
        again.send(signal.SIGINT)
        assert again.process.wait(timeout=30) == 130
    assert (root / "inbox" / "slow_one.jpg").is_file()


STUBBORN = '''
import time

from pipeline import hookimpl


@hookimpl
def preprocess(image, ctx):
    time.sleep(60)
    return image
'''


def test_status_shows_the_worker_and_its_photo(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", slow=True)
    root = config.parent
    with DaemonProcess(config, env={"PHOTOSTYLE_TEST_SLOW": "30"}) as daemon:
        daemon.wait_ready()
        drop(root / "inbox" / "slow_status.jpg", jpeg_bytes(13))
        daemon.wait_msg("started")
        status = wait_for(lambda: (data := json.loads((root / "state" / "status.json").read_text()))["running"]
                          and data, 30, "the status file to show the running photo")
        [worker] = status["workers"]
        assert worker["device"] == "cpu" and worker["running"]["file"].endswith("slow_status.jpg")
        daemon.kill()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
