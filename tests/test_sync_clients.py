"""What real sync clients do to the inbox and the outbox, done by the tests themselves.

rsync, rclone, Syncthing and unison each write in their own way: a new version
renamed over a photo while its old one renders; a file presized and filled in at
offsets by several streams (which may stall); their own files in dot-folders;
and they copy the outbox out, dotfiles included. Each test does what the client
does, with plain file operations, against a real ``photostyle watch``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from conftest import REPO, one_scale
from daemon_support import DaemonProcess, SharedDaemon, daemon_config, drop, files_under, jpeg_bytes, wait_for
from pipeline.files.completeness import ZERO_RUN, ZeroRunFinder, first_hole, incomplete_reason
from pipeline.job.sidecar import read_sidecar

PRESETS = ("replaced", "inplace", "dots", "outbox", "same", "linked", "presized", "resend", "rsync")
RSYNC = shutil.which("rsync")
needs_rsync = pytest.mark.skipif(RSYNC is None, reason="rsync is not installed (.ci/run installs Debian's rsync)")


def noisy_jpeg(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A JPEG of noise: no long zero runs, and big enough (about 150 KB) for a writer to stall halfway."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _config(folder: Path, poll: bool) -> Path:
    presets = {name: {"style": "style.png", "size": 24, "iterations": 2, "schedule": one_scale()}
               for name in ("tiny", *PRESETS)}
    config = daemon_config(folder, presets=presets, slow=True, watch={
        "stable_seconds": 1, "rescan_seconds": 600, "incomplete_grace": 3600, "poll": poll, "poll_interval": 0.3})
    data = yaml.safe_load(config.read_text())
    data["plugins"]["disabled"] = []  # the gallery too: its thumbnails and index are written into the outbox
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def _watched(folder: Path, poll: bool) -> Iterator[SharedDaemon]:
    config = _config(folder, poll)
    held = config.parent / "release"
    with DaemonProcess(config, env={"PHOTOSTYLE_TEST_SLOW": "300", "PHOTOSTYLE_TEST_RELEASE": str(held)}) as daemon:
        daemon.wait_ready()
        yield SharedDaemon(daemon, config.parent)


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedDaemon]:
    yield from _watched(tmp_path_factory.mktemp("sync") / "p", poll=False)


@pytest.fixture(scope="module")
def polled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedDaemon]:
    yield from _watched(tmp_path_factory.mktemp("poll") / "p", poll=True)


def _contents(folder: Path) -> list[bytes]:
    return sorted(path.read_bytes() for path in files_under(folder) if not path.name.endswith(".error.txt"))


def _results(root: Path, preset: str) -> list[Path]:
    return [p for p in files_under(root / "outbox" / preset) if not p.name.endswith(".json")]


# -- 1. a photo replaced while its old version renders --------------------------------------------------


def test_a_photo_replaced_by_rename_while_it_renders_is_done_in_both_versions(watched: SharedDaemon) -> None:
    inbox, v1, v2 = watched.inbox("replaced"), noisy_jpeg(1), noisy_jpeg(2)
    photo = drop(inbox / "slow_x.jpg", v1)
    watched.daemon.wait_msg("started", under=inbox)
    drop(photo, v2)  # what rsync and Syncthing do: a temp file renamed over the name
    watched.release("slow_x.jpg")
    watched.daemon.wait_msg("done", under=inbox, count=2)
    wait_for(lambda: not photo.exists(), message="the new version moved out")
    assert _contents(watched.root / "processed" / "replaced") == [v2]  # v1 is gone: the rename replaced it
    assert len(_results(watched.root, "replaced")) == 2
    first = min(_results(watched.root, "replaced"), key=lambda p: p.stat().st_mtime_ns)
    wait_for(lambda: "note" in read_sidecar(first)["original"], message="the first sidecar's note")
    original = read_sidecar(first)["original"]
    assert original["path"] is None and "newer version" in original["note"]
    assert watched.daemon.messages("replaced by a newer version while it was processed; the original is not "
                                   "moved and the new version is taken as new work", under=inbox)


def test_a_photo_rewritten_in_place_while_it_renders_is_done_again(watched: SharedDaemon) -> None:
    inbox, v1, v2 = watched.inbox("inplace"), noisy_jpeg(3), noisy_jpeg(4)
    photo = drop(inbox / "slow_y.jpg", v1)
    watched.daemon.wait_msg("started", under=inbox)
    with open(photo, "r+b") as handle:  # rsync --inplace: same inode, new bytes
        handle.write(v2)
        handle.truncate()
    watched.release("slow_y.jpg")
    watched.daemon.wait_msg("done", under=inbox, count=2)
    wait_for(lambda: not photo.exists(), message="the new version moved out")
    assert _contents(watched.root / "processed" / "inplace") == [v2]  # v1 exists nowhere any more: rsync replaced it
    assert len(_results(watched.root, "inplace")) == 2


# -- 2. and issue 17 item 5: a presized file filled in at offsets, stalled halfway -----------------------


def _presized_writer(path: Path, data: bytes) -> None:
    """rclone multi-thread / a presizing writer: full size at once, first half written, then it stalls."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(len(data))
        handle.write(data[: len(data) // 2])


def _finish(path: Path, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(len(data) // 2)
        handle.write(data[len(data) // 2:])


def _stall_then_finish(where: SharedDaemon, preset: str) -> None:
    inbox, data = where.inbox(preset), noisy_jpeg(5)
    photo = inbox / "multi.jpg"
    _presized_writer(photo, data)  # closed between chunks: inotify's close-write says "finished"
    where.daemon.wait_msg("looks unfinished; waiting for its writer", under=inbox)
    assert not where.daemon.messages("queued", under=inbox) and photo.exists()
    assert not _results(where.root, preset)
    _finish(photo, data)
    where.daemon.wait_msg("done", under=inbox)
    wait_for(lambda: not photo.exists(), message="the original moved out")
    assert _contents(where.root / "processed" / preset) == [data]
    assert len(_results(where.root, preset)) == 1


def test_a_presized_file_stalled_halfway_waits_for_its_writer_under_inotify(watched: SharedDaemon) -> None:
    _stall_then_finish(watched, "presized")


def test_a_presized_file_stalled_halfway_waits_for_its_writer_when_polling(polled: SharedDaemon) -> None:
    _stall_then_finish(polled, "presized")


# -- 3. sync clients' own dot-folders --------------------------------------------------------------------


def test_files_in_dot_folders_are_never_taken_and_rsync_delay_updates_completes(watched: SharedDaemon) -> None:
    inbox = watched.inbox("dots")
    clients = [inbox / ".stversions" / "old~20261206.jpg", inbox / ".rsync-partial" / "part.jpg",
               watched.root / "inbox" / ".dropbox.cache" / "c.jpg", inbox / ".stfolder" / "d.jpg"]
    for index, path in enumerate(clients):
        drop(path, jpeg_bytes(40 + index))
    staged = drop(inbox / ".~tmp~" / "synced.jpg", jpeg_bytes(50))  # rsync --delay-updates, before its last step
    drop(inbox / "marker.jpg", jpeg_bytes(51))
    watched.daemon.wait_msg("done", under=inbox)
    os.rename(staged, inbox / "synced.jpg")  # rsync's final rename: it fails if the daemon took the file
    watched.daemon.wait_msg("done", under=inbox, count=2)
    assert all(path.exists() for path in clients)
    queued = {Path(entry["file"]).name for entry in watched.daemon.messages("queued", under=watched.root / "inbox")}
    assert not queued & {path.name for path in clients}
    assert {"marker.jpg", "synced.jpg"} <= queued


# -- 4. the outbox never shows a half-written file -------------------------------------------------------


class _Seen(FileSystemEventHandler):
    def __init__(self) -> None:
        self.names: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in ("created", "moved", "modified", "closed"):
            return
        path = Path(os.fsdecode(getattr(event, "dest_path", "") or event.src_path))
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        with self.lock:
            self.names.append((event.event_type, str(path), size))


def test_the_outbox_only_ever_shows_finished_files(watched: SharedDaemon) -> None:
    outbox = watched.root / "outbox"
    seen, observer = _Seen(), Observer()
    observer.schedule(seen, str(outbox), recursive=True)
    observer.start()
    try:
        inbox = watched.inbox("outbox")
        for index in range(4):
            drop(inbox / f"p{index}.jpg", jpeg_bytes(60 + index))
        watched.daemon.wait_msg("done", under=inbox, count=4)
        wait_for(lambda: (outbox / "index.html").exists(), message="the gallery page")
        watched.daemon.wait_msg("moved to processed", under=inbox, count=4)
    finally:
        observer.stop()
        observer.join(10)
    created = [name for kind, name, _ in seen.names if kind in ("created", "moved")]
    assert created, "the observer saw nothing: the test would prove nothing"
    assert not [name for name in created if name.endswith(".tmp")], created
    assert not [entry for entry in seen.names if entry[0] == "created" and entry[2] == 0], seen.names
    assert not list((outbox).rglob("*.tmp"))


# -- 5. the layouts that keep originals safe ---------------------------------------------------------------


def test_a_photo_sent_again_by_a_one_way_job_is_not_filed_twice(watched: SharedDaemon) -> None:
    inbox, data = watched.inbox("resend"), jpeg_bytes(70)
    drop(inbox / "again.jpg", data)
    watched.daemon.wait_msg("moved to processed", under=inbox)
    drop(inbox / "again.jpg", data)  # an rsync or rclone job from cron sends it again
    watched.daemon.wait_msg("already done with these settings; not redoing it", under=inbox)
    wait_for(lambda: not (inbox / "again.jpg").exists(), message="the second copy handled")
    assert [p.name for p in files_under(watched.root / "processed" / "resend")] == ["again.jpg"]
    assert len(_results(watched.root, "resend")) == 1


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", "check", "-c", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_move_out_of_a_syncthing_folder_is_refused_and_a_layout_inside_it_is_fine(tmp_path: Path) -> None:
    synced = tmp_path / "Sync"
    (synced / ".stfolder").mkdir(parents=True)
    config = daemon_config(tmp_path / "p", inbox=str(synced / "inbox"))
    result = _check(config)
    assert result.returncode == 2, result
    assert "Syncthing" in result.stderr and "deletes it on every device" in result.stderr
    assert "watch.after: keep" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    watch = subprocess.run([sys.executable, "-m", "pipeline", "watch", "-c", str(config)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert watch.returncode == 2 and "deletes it on every device" in watch.stderr
    assert not (synced / "inbox").exists()  # refused before making or touching anything

    inside = daemon_config(tmp_path / "q", inbox=str(synced / "inbox"), processed=str(synced / "processed"),
                           failed=str(synced / "failed"))
    assert _check(inside).returncode == 0
    keep = daemon_config(tmp_path / "r", inbox=str(synced / "inbox"), watch={"after": "keep"})
    result = _check(keep)
    assert result.returncode == 0 and "failed/" in result.stdout  # warned: failures still leave the folder


def test_after_keep_in_a_synced_inbox_leaves_the_original_and_does_not_redo_it(tmp_path: Path) -> None:
    synced = tmp_path / "Sync"
    (synced / ".stfolder").mkdir(parents=True)
    config = daemon_config(tmp_path / "p", inbox=str(synced / "inbox"), watch={"after": "keep"})
    photo = synced / "inbox" / "kept.jpg"
    for run in range(2):
        with DaemonProcess(config) as daemon:
            daemon.wait_ready()
            if run == 0:
                drop(photo, jpeg_bytes(80))
                daemon.wait_msg("done")
            else:
                daemon.wait_msg("already done with these settings; not redoing it")
            assert daemon.stop() == 0
        assert photo.read_bytes() == jpeg_bytes(80)
    assert len(files_under(tmp_path / "p" / "outbox", "*.jpg")) == 1


# -- 6. smaller points --------------------------------------------------------------------------------------


def test_the_same_photo_under_two_names_at_once_does_not_wait_for_the_rescan(watched: SharedDaemon) -> None:
    inbox, data = watched.inbox("same"), jpeg_bytes(90)
    drop(inbox / "slow_a.jpg", data)
    watched.daemon.wait_msg("started", under=inbox)
    drop(inbox / "slow_b.jpg", data)  # the same content, arriving under a second name meanwhile
    watched.daemon.wait_msg("the same photo is already queued under another name; looked at again once that one "
                            "is settled", under=inbox)
    watched.release("slow_a.jpg")
    # rescan_seconds is 600 here: without a second look once the first settles, this would time out
    watched.daemon.wait_msg("already done with these settings; not redoing it", under=inbox, timeout=60)


# -- issue 17 item 6: hard links ----------------------------------------------------------------------------


def test_a_hard_link_to_a_private_file_is_failed_unread_and_never_linked_again(watched: SharedDaemon,
                                                                               tmp_path: Path) -> None:
    private = tmp_path / "private.jpg"
    private.write_bytes(jpeg_bytes(95))
    private.chmod(0o600)
    inbox = watched.inbox("linked")
    inbox.mkdir(parents=True, exist_ok=True)
    os.link(private, inbox / "link.jpg")
    [entry] = watched.daemon.wait_msg("failed", under=inbox)
    assert "2 hard links" in entry["reason"] and "watch.allow_hard_links" in entry["reason"]
    wait_for(lambda: not (inbox / "link.jpg").exists(), message="the link moved to failed/")
    assert private.stat().st_nlink == 2  # moved by rename: no third link anywhere
    assert not files_under(watched.root / "outbox" / "linked")
    assert (watched.root / "failed" / "linked" / "link.jpg").stat().st_ino == private.stat().st_ino


# -- units: the evidence of an unfinished file ------------------------------------------------------------


def test_holes_and_zero_runs_are_evidence_and_a_whole_photo_has_neither(tmp_path: Path) -> None:
    data = noisy_jpeg(7)
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(data)
    presized = tmp_path / "presized.jpg"
    _presized_writer(presized, data)
    for path, unfinished in ((whole, False), (presized, True)):
        finder = ZeroRunFinder()
        fd = os.open(path, os.O_RDONLY)
        try:
            hole = first_hole(fd, os.fstat(fd).st_size)
            while block := os.read(fd, 4096 + 17):  # odd blocks: a run across reads is still found
                finder.feed(block)
        finally:
            os.close(fd)
        assert (incomplete_reason(hole, finder.found) is not None) is unfinished, path
        if unfinished:
            assert finder.found is not None and finder.found <= len(data) // 2 + 4096
    short = ZeroRunFinder()
    short.feed(b"x" + bytes(ZERO_RUN - 1) + b"y")
    assert short.found is None


def test_a_partial_copy_failed_after_the_grace_gets_a_true_note_once_the_photo_is_done(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pipeline.daemon.disposal import error_note_path
    from pipeline.daemon.originals import Originals
    from pipeline.files.photo_file import FileIdentity

    config = SimpleNamespace(watch=SimpleNamespace(after="move", retry_seconds=1, retry_max_seconds=1),
                             processed=tmp_path / "processed", failed=tmp_path / "failed")
    originals = Originals(lambda: config, lambda path: None)
    photo = tmp_path / "inbox" / "p.jpg"
    photo.parent.mkdir()
    photo.write_bytes(b"\xff\xd8 half a jpeg")
    originals.failed(photo, "tiny", "load", "image file is truncated", grace=0.01)
    wait_for(lambda: (originals.tick(), not photo.exists())[1], message="the grace to pass")
    note = error_note_path(tmp_path / "failed" / "tiny" / "p.jpg")
    assert "failed because image file is truncated" in note.read_text()
    photo.write_bytes(b"the complete photo")
    output = tmp_path / "outbox" / "p.png"
    originals.succeeded(photo, "tiny", FileIdentity.of(photo.stat()), output)
    text = note.read_text()
    assert "complete photo arrived later" in text and str(output) in text and "failed because" not in text


# -- real rsync, both ways ----------------------------------------------------------------------------------


@needs_rsync
def test_real_rsync_delivers_with_delay_updates_and_copies_the_outbox_out_without_temp_files(
        watched: SharedDaemon, tmp_path: Path) -> None:
    source, copy = tmp_path / "phone", tmp_path / "copy"
    source.mkdir()
    for index in range(4):
        (source / f"r{index}.jpg").write_bytes(jpeg_bytes(100 + index))
    inbox = watched.inbox("rsync")
    delivered = subprocess.run([RSYNC, "-a", "--delay-updates", f"{source}/", f"{inbox}/"],
                               capture_output=True, text=True, timeout=60)
    assert delivered.returncode == 0, delivered.stderr  # its final renames out of .~tmp~/ all worked
    outbox, runs = watched.root / "outbox", []

    def copy_out() -> None:
        runs.append(subprocess.run([RSYNC, "-a", f"{outbox}/", f"{copy}/"], capture_output=True, text=True,
                                   timeout=60))

    deadline = time.monotonic() + 120
    while len(watched.daemon.messages("moved to processed", under=inbox)) < 4:
        assert time.monotonic() < deadline, "the four photos were not done within 120 s"
        copy_out()  # a phone syncing the outbox out while the photos are done
    watched.daemon.wait_msg("done", under=inbox, count=4)
    copy_out()
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs if run.returncode]
    copied = [p for p in copy.rglob("*") if p.is_file()]
    assert not [p for p in copied if p.name.endswith(".tmp")], copied
    assert not [p for p in copied if p.stat().st_size == 0], copied
    assert len([p for p in (copy / "rsync").iterdir() if p.suffix == ".jpg"]) == 4
    again = subprocess.run([RSYNC, "-a", "--delay-updates", f"{source}/", f"{inbox}/"],
                           capture_output=True, text=True, timeout=60)  # the cron job's next run
    assert again.returncode == 0, again.stderr
    watched.daemon.wait_msg("already done with these settings; not redoing it", under=inbox, count=4)
    wait_for(lambda: not list(inbox.glob("*.jpg")), message="the re-sent copies handled")
    assert sorted(p.name for p in files_under(watched.root / "processed" / "rsync")) == [
        f"r{index}.jpg" for index in range(4)]
