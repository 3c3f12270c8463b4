"""One daemon per inbox, not only per state folder (issue 17, item 9).

Seen: two configs with their own state folders and the same inbox each ran a daemon, and 19 of 20 photos
were done twice. The second daemon now refuses to start (exit 2) with one line naming the first. The lock
is an ``flock`` outside the inbox, keyed by the inbox's real path, so a symlinked spelling of the same
inbox is refused too, and a kill -9 of the first frees it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from daemon_support import DaemonProcess, daemon_config, drop, files_under, jpeg_bytes
from pipeline.daemon.state_lock import AlreadyRunning, InboxLock, lock_folder


def _two_configs(root: Path, inbox_b: str | None = None) -> tuple[Path, Path, Path]:
    """Two projects, each with its own state, outbox, processed and failed folders; B's inbox is A's."""
    a = daemon_config(root / "a")
    inbox = a.parent / "inbox"
    inbox.mkdir(parents=True)
    b = daemon_config(root / "b", inbox=inbox_b or str(inbox))
    return a, b, inbox


def test_a_second_daemon_on_the_same_inbox_refuses_to_start_and_names_the_first(tmp_path: Path) -> None:
    a, b, inbox = _two_configs(tmp_path)
    link = tmp_path / "inbox-link"
    link.symlink_to(inbox, target_is_directory=True)
    c = daemon_config(tmp_path / "c", inbox=str(link))  # the same inbox, spelled through a link
    with DaemonProcess(a) as first:
        first.wait_ready()
        for config in (b, c):
            second = run_cli("watch", "-c", config, timeout=120)
            assert second.returncode == 2, second.stderr
            [line] = second.stderr.strip().splitlines()
            assert "another photostyle watch already takes photos from this inbox" in line, line
            assert f"pid {first.process.pid}" in line and str(a.parent / "state") in line and str(a) in line, line
            assert "Traceback" not in second.stderr
            assert not (config.parent / "state" / "status.json").exists()
        assert sorted(os.listdir(inbox)) == ["other", "tiny"], "no lock file in the inbox (sync clients copy it)"
        for n in range(4):
            drop(inbox / f"p{n}.jpg", jpeg_bytes(n))
        first.wait_msg("done", count=4)
        assert first.stop() == 0
    assert len(files_under(a.parent / "outbox", "*.jpg")) == 4
    assert not (b.parent / "outbox").exists() or not files_under(b.parent / "outbox", "*.jpg")


def test_the_inbox_lock_goes_with_a_kill_9_and_after_a_clean_stop(tmp_path: Path) -> None:
    a, b, inbox = _two_configs(tmp_path)
    with DaemonProcess(a) as first:
        first.wait_ready()
        first.send(signal.SIGKILL)
        first.process.wait(timeout=30)
    with DaemonProcess(b) as second:  # the kernel dropped the flock with the process
        second.wait_ready()
        assert second.stop() == 0
    lock = lock_folder() / f"inbox-{InboxLock(inbox).key}.lock"
    assert not lock.exists(), "a clean stop removes its lock file"
    with DaemonProcess(a) as again:
        again.wait_ready()
        assert again.stop() == 0


def test_a_reload_onto_an_inbox_another_daemon_holds_keeps_the_current_config(tmp_path: Path) -> None:
    a, b, inbox = _two_configs(tmp_path, inbox_b="own-inbox")
    with DaemonProcess(a) as first, DaemonProcess(b) as second:
        first.wait_ready()
        second.wait_ready()
        data = yaml.safe_load(b.read_text())
        data["inbox"] = str(inbox)
        b.write_text(yaml.safe_dump(data, sort_keys=False))
        second.send(signal.SIGHUP)
        second.wait_msg("keeping the current config")
        [refused] = [entry["msg"] for entry in second.events()
                     if str(entry.get("msg", "")).startswith("cannot take the new inbox")]
        assert "already takes photos from this inbox" in refused and f"pid {first.process.pid}" in refused, refused
        drop(b.parent / "own-inbox" / "mine.jpg", jpeg_bytes(5))  # still watching its own inbox
        second.wait_msg("done")
        assert second.stop() == 0 and first.stop() == 0
    assert [p.name for p in files_under(b.parent / "outbox", "*.jpg")] == ["mine.jpg"]


def test_a_lock_file_removed_while_held_is_made_again(tmp_path: Path) -> None:
    """A temp cleaner, or logind removing a user's /dev/shm files at logout, must not open the door."""
    inbox = tmp_path / "inbox"
    held = InboxLock(inbox, {"state": tmp_path / "state"})
    held.acquire()
    try:
        assert held.path is not None
        held.path.unlink()
        held.check()
        assert held.path.exists()
        with pytest.raises(AlreadyRunning, match="already takes photos from this inbox") as refused:
            InboxLock(inbox).acquire()
        assert str(tmp_path / "state") in str(refused.value)
    finally:
        held.release()
    assert held.path is not None and not held.path.exists()
