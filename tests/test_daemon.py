"""``photostyle watch`` as users run it: a real subprocess, the real watchdog observer, real files and signals."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import one_scale, synthetic_photo
from daemon_support import DaemonProcess, SharedDaemon, daemon_config, drop, files_under, jpeg_bytes, wait_for
from pipeline.cli import main



def ledger_rows(config_dir: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(config_dir / "state" / "ledger.sqlite3") as db:
        return db.execute("SELECT source, preset, state FROM jobs ORDER BY created").fetchall()


# Tests that only drop photos and read what happened share one daemon (starting one costs seconds of CPU).
# Each has its own preset, so its own inbox/, outbox/, processed/ and failed/ folders, and reads only the
# log entries about its own inbox folder. The others start their own: they need a config, signals or a
# start of their own.
SHARED_PRESETS = ("writes", "bad", "replaced", "blocked")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedDaemon]:
    presets = {name: {"style": "style.png", "size": 24, "iterations": 2, "schedule": one_scale()}
               for name in ("tiny", *SHARED_PRESETS)}
    config = daemon_config(
        tmp_path_factory.mktemp("shared") / "p", presets=presets,
        watch={"stable_seconds": 2, "empty_timeout": 2, "retry_seconds": 0.5}, limits={"max_pixels": 10_000_000},
        slow=True,
    )
    held = config.parent / "release"  # photos named slow* run until their test releases them
    with DaemonProcess(config, env={"PHOTOSTYLE_TEST_SLOW": "300", "PHOTOSTYLE_TEST_RELEASE": str(held)}) as daemon:
        daemon.wait_ready()
        yield SharedDaemon(daemon, config.parent)


def test_photos_are_routed_by_folder_and_temp_files_ignored(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p")
    root = config.parent
    with DaemonProcess(config, log_format="text") as daemon:
        daemon.wait_log(r" info watching ")
        assert (root / "inbox" / "tiny").is_dir() and (root / "inbox" / "other").is_dir()
        drop(root / "inbox" / "a.jpg", jpeg_bytes(1))
        drop(root / "inbox" / "other" / "b.jpg", jpeg_bytes(2))
        drop(root / "inbox" / "holiday" / "c.jpg", jpeg_bytes(3))
        drop(root / "inbox" / "UPPER.JPG", jpeg_bytes(4))
        ignored = [".syncthing.d.jpg.tmp", "~syncthing~d.jpg.tmp", "d.jpg.part", "e.jpg.crdownload", ".DS_Store",
                   "._f.jpg", "g.jpg.icloud", "notes.txt", "h.tmp", "~$i.jpg"]
        for name in ignored:
            (root / "inbox" / name).write_bytes(jpeg_bytes(5))
        daemon.wait_log(r" info done ", count=4)
        daemon.wait_idle()  # a wrongly taken temp file would be settling, queued or running
        assert daemon.stop(signal.SIGINT) == 0
    log = daemon.text()
    assert [p.relative_to(root / "outbox").as_posix() for p in files_under(root / "outbox", "*.jpg")] == [
        "other/b.jpg", "tiny/UPPER.jpg", "tiny/a.jpg", "tiny/c.jpg"]
    assert [p.relative_to(root / "processed").as_posix() for p in files_under(root / "processed")] == [
        "other/b.jpg", "tiny/UPPER.JPG", "tiny/a.jpg", "tiny/c.jpg"]
    assert sorted(p.name for p in (root / "inbox").iterdir() if p.is_file()) == sorted(ignored)
    assert "folder 'holiday' is not a preset; using the default preset 'tiny'" in log
    done = [line for line in log.splitlines() if " info done " in line]
    assert len(done) == 4
    for line in done:  # one line per event: job id, file, preset, stage timings, outcome
        for field in ("job=", "file=", "preset=", "load=", "stylize=", "save=", "total=", "output="):
            assert field in line, (field, line)
    assert "Traceback" not in log


def test_slow_writes_and_renamed_temp_files_are_taken_once_complete(shared: SharedDaemon) -> None:
    daemon, root, inbox = shared.daemon, shared.root, shared.inbox("writes")  # stable_seconds: 2
    data = jpeg_bytes(7, (200, 150))
    copying = inbox / "copying.jpg"  # (not slow*: that name is held by the test plugin)
    with open(copying, "wb") as handle:  # a copy that takes ~2.4 s, in pieces
        for start in range(0, len(data), len(data) // 6 + 1):
            handle.write(data[start:start + len(data) // 6 + 1])
            handle.flush()
            time.sleep(0.4)
    assert not daemon.messages("queued", inbox), "nothing may be taken before it is complete"
    part = inbox / "renamed.jpg.part"
    part.write_bytes(jpeg_bytes(8))
    daemon.wait_msg("queued", under=inbox)
    daemon.wait_idle()  # the .part file, were it wrongly taken, would be settling or queued
    assert [Path(e["file"]).name for e in daemon.messages("queued", inbox)] == ["copying.jpg"]
    part.rename(inbox / "renamed.jpg")
    daemon.wait_msg("done", count=2, under=inbox)
    daemon.wait_idle()
    queued = [Path(entry["file"]).name for entry in daemon.messages("queued", inbox)]
    assert sorted(queued) == ["copying.jpg", "renamed.jpg"]
    assert (root / "processed" / "writes" / "copying.jpg").read_bytes() == data
    with Image.open(root / "outbox" / "writes" / "copying.jpg") as result:
        result.load()


def test_polling_observer_and_periodic_rescan_catch_what_events_miss(tmp_path: Path) -> None:
    # A polling observer that looks only once an hour sees nothing new: only the rescan can find the photo.
    config = daemon_config(tmp_path / "p", watch={"poll": True, "poll_interval": 3600, "rescan_seconds": 1})
    root = config.parent
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        drop(root / "inbox" / "late.jpg", jpeg_bytes(9))
        daemon.wait_msg("done")
        assert daemon.stop() == 0
    assert (root / "outbox" / "tiny" / "late.jpg").is_file()


def test_start_up_scan_oldest_first_repeats_skipped_and_settings_changes_redone(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", watch={"rescan_seconds": 1})
    root = config.parent
    (root / "inbox").mkdir()
    for index, name in enumerate(["c.jpg", "a.jpg", "b.jpg"]):  # c oldest
        path = drop(root / "inbox" / name, jpeg_bytes(20 + index))
        os.utime(path, (1_000_000 + index, 1_000_000 + index))
    with DaemonProcess(config) as daemon:
        daemon.wait_msg("done", count=3)
        assert [Path(e["file"]).name for e in daemon.messages("queued")] == ["c.jpg", "a.jpg", "b.jpg"]
        drop(root / "inbox" / "a_again.jpg", jpeg_bytes(21))  # a.jpg's content under a new name
        [skipped] = daemon.wait_msg("already done with these settings; not redoing it")
        assert skipped["file"].endswith("a_again.jpg") and skipped["output"].endswith("a.jpg")
        wait_for((root / "processed" / "tiny" / "a_again.jpg").is_file, 60, "the repeat to be moved to processed/")

        data = yaml.safe_load(config.read_text())
        data["presets"]["tiny"]["iterations"] = 3  # a different setting makes it new work
        config.write_text(yaml.safe_dump(data))
        daemon.send(signal.SIGHUP)
        daemon.wait_msg("config reloaded")
        drop(root / "inbox" / "a_third.jpg", jpeg_bytes(21))
        daemon.wait_msg("done", count=4)
        assert daemon.stop() == 0
    assert (root / "outbox" / "tiny" / "a_third.jpg").is_file()
    assert not (root / "outbox" / "tiny" / "a_again.jpg").exists()


def test_sighup_applies_a_valid_config_and_keeps_the_old_one_when_broken(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p")
    root = config.parent
    valid = config.read_text()
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        data = yaml.safe_load(valid)
        data["presets"]["extra"] = {"style": "style.png", "size": 32, "iterations": 1}
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        daemon.send(signal.SIGHUP)
        daemon.wait_msg("config reloaded")
        assert (root / "inbox" / "extra").is_dir()

        config.write_text(config.read_text().replace("size: 32", "size: huge"))
        daemon.send(signal.SIGHUP)
        daemon.wait_msg("keeping the current config")
        errors = [e["msg"] for e in daemon.events() if e["msg"].startswith("invalid config: ")]
        assert any(f"{config}:" in line and "presets.extra.size" in line for line in errors)
        drop(root / "inbox" / "extra" / "still_works.jpg", jpeg_bytes(30))
        daemon.wait_msg("done")
        assert daemon.process.poll() is None
        assert daemon.stop() == 0
    with Image.open(root / "outbox" / "extra" / "still_works.jpg") as result:
        assert max(result.size) == 32  # the last valid config's preset


def test_kill_9_during_a_job_then_restart_does_every_photo_exactly_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = daemon_config(tmp_path / "p", slow=True)
    root = config.parent
    (root / "inbox").mkdir()
    names = ["slow_first.jpg", "second.jpg", "third.jpg"]
    for index, name in enumerate(names):
        path = drop(root / "inbox" / name, jpeg_bytes(40 + index))
        os.utime(path, (2_000_000 + index, 2_000_000 + index))
    with DaemonProcess(config, env={"PHOTOSTYLE_TEST_SLOW": "600"}) as daemon:  # killed long before
        daemon.wait_msg("started")
        wait_for(lambda: (root / "state" / "status.json").exists() and "slow_first" in
                 (root / "state" / "status.json").read_text(), 60, "status to show the running job")
        assert main(["status", "-c", str(config)]) == 0  # in this process: it only reads the state folder
        status = capsys.readouterr().out
        assert "daemon: running" in status and "running: " in status
        assert "slow_first.jpg" in status
        daemon.kill()
    assert ("slow_first.jpg" in str(ledger_rows(root))) and any(state == "running" for *_, state in ledger_rows(root))
    with DaemonProcess(config) as again:
        again.wait_msg("done", count=3)
        assert again.messages("requeued jobs interrupted by a crash")
        again.wait_idle()
        assert again.stop() == 0
    assert sorted(p.name for p in files_under(root / "outbox", "*.jpg")) == sorted(names)
    assert sorted(p.name for p in files_under(root / "processed")) == sorted(names)
    assert sorted(state for *_, state in ledger_rows(root)) == ["done"] * 3


def test_sigterm_abandons_a_long_job_within_the_timeout_and_it_is_redone_later(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", watch={"shutdown_timeout": 1}, slow=True)
    root = config.parent
    with DaemonProcess(config, env={"PHOTOSTYLE_TEST_SLOW": "600"}) as daemon:
        daemon.wait_ready()
        drop(root / "inbox" / "slow.jpg", jpeg_bytes(50))
        daemon.wait_msg("started")
        began = time.monotonic()
        assert daemon.stop(signal.SIGTERM) == 0
        assert time.monotonic() - began < 60, "it waited for the 10-minute job instead of abandoning it"
    assert daemon.messages("abandoned at shutdown; left queued for the next start")
    assert (root / "inbox" / "slow.jpg").is_file()
    assert ledger_rows(root)[0][2] == "queued"
    with DaemonProcess(config) as again:
        again.wait_msg("done")
        assert again.stop() == 0
    assert (root / "outbox" / "tiny" / "slow.jpg").is_file()


def _bomb_png() -> bytes:
    """A tiny PNG whose header claims 60000 x 60000 pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_bad_inputs_never_stop_the_daemon(shared: SharedDaemon) -> None:
    daemon, root, inbox = shared.daemon, shared.root, shared.inbox("bad")  # empty_timeout: 2, max_pixels: 10 MP
    photo = synthetic_photo((40, 30))
    grey16 = Image.fromarray((np.linspace(0, 65535, 40 * 30).reshape(30, 40)).astype(np.uint16))
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    frames = [synthetic_photo((40, 30), seed=s) for s in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    good = {
        "grey16.png": _encode(grey16, "PNG"),
        "cmyk.jpg": _encode(photo.convert("CMYK"), "JPEG"),
        "animated.gif": gif.getvalue(),
        "palette.png": _encode(palette, "PNG", transparency=0),
    }
    bad = {
        "truncated.jpg": jpeg_bytes(60, (200, 150))[:900],
        "text.jpg": b"this is a shopping list, not a photo",
        "bomb.png": _bomb_png(),
    }
    for name, data in {**good, **bad}.items():
        drop(inbox / name, data)
    (inbox / "empty.jpg").touch()
    (inbox / "link.jpg").symlink_to(root / "config.yaml")
    os.mkfifo(inbox / "pipe.jpg")
    daemon.wait_msg("moved to failed", count=len(bad) + 3, timeout=90, under=inbox)
    daemon.wait_msg("done", count=len(good), under=inbox)
    drop(inbox / "after_all_that.jpg", jpeg_bytes(61))
    daemon.wait_msg("done", count=len(good) + 1, under=inbox)
    assert daemon.process.poll() is None
    produced = sorted(p.stem for p in files_under(root / "outbox" / "bad", "*.jpg"))
    assert produced == sorted(Path(name).stem for name in [*good, "after_all_that.jpg"])
    failed = root / "failed" / "bad"
    for name in [*bad, "empty.jpg", "link.jpg", "pipe.jpg"]:
        assert (failed / name).exists() or (failed / name).is_symlink(), name
        note = (failed / f"{name}.error.txt").read_text()
        assert name in note and "stage failed because" in note and "\n" == note[-1]
    assert "megapixels" in (failed / "bomb.png.error.txt").read_text()
    assert "not an image" in (failed / "text.jpg.error.txt").read_text()
    assert "empty file" in (failed / "empty.jpg.error.txt").read_text()
    assert "symbolic link" in (failed / "link.jpg.error.txt").read_text()
    assert (root / "config.yaml").is_file(), "the link's target is untouched"
    assert not [p for p in inbox.iterdir() if p.is_file() or p.is_symlink()]


def test_photos_deleted_or_replaced_while_queued(shared: SharedDaemon) -> None:
    daemon, root, inbox = shared.daemon, shared.root, shared.inbox("replaced")
    drop(inbox / "slow.jpg", jpeg_bytes(70))  # held until released: the others wait in the queue behind it
    daemon.wait_msg("started", under=inbox)
    drop(inbox / "deleted.jpg", jpeg_bytes(71))
    drop(inbox / "replaced.jpg", jpeg_bytes(72))
    daemon.wait_msg("queued", count=3, under=inbox)
    (inbox / "deleted.jpg").unlink()
    replacement = jpeg_bytes(73, (60, 40))
    drop(inbox / "replaced.jpg", replacement)
    shared.release("slow.jpg")
    daemon.wait_msg("deleted before it was processed", under=inbox)
    daemon.wait_msg("changed while queued; taking it again", under=inbox)
    daemon.wait_msg("done", count=2, under=inbox)
    assert (root / "processed" / "replaced" / "replaced.jpg").read_bytes() == replacement
    with Image.open(root / "outbox" / "replaced" / "replaced.jpg") as result:
        assert result.size == (24, 16)  # the replacement's 3:2 aspect, not the original's 4:3
    assert not (root / "outbox" / "replaced" / "deleted.jpg").exists()


def test_unwritable_outbox_keeps_the_photo_and_retries_with_backoff(shared: SharedDaemon) -> None:
    daemon, root, inbox = shared.daemon, shared.root, shared.inbox("blocked")  # retry_seconds: 0.5
    blocker = root / "outbox" / "blocked"
    blocker.write_text("a file where the preset's output folder should be")  # like a read-only or full disk
    try:
        drop(inbox / "keep_me.jpg", jpeg_bytes(80))
        first, second = daemon.wait_msg("will retry", count=2, under=inbox)
        assert second["in_seconds"] > first["in_seconds"]  # back-off
        [reason] = daemon.messages("could not finish; the photo stays in the inbox", inbox)[:1]
        assert "cannot write to" in reason["reason"] and str(blocker) in reason["reason"]
        assert (inbox / "keep_me.jpg").is_file()
    finally:
        blocker.unlink()
    daemon.wait_msg("done", under=inbox)
    assert (root / "outbox" / "blocked" / "keep_me.jpg").is_file()
    assert (root / "processed" / "blocked" / "keep_me.jpg").is_file()


@pytest.mark.parametrize("after", ["keep", "delete"])
def test_after_keep_or_delete(tmp_path: Path, after: str) -> None:
    config = daemon_config(tmp_path / "p", watch={"after": after, "rescan_seconds": 0.5})
    root = config.parent
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        drop(root / "inbox" / "a.jpg", jpeg_bytes(90))
        daemon.wait_msg("done")
        daemon.wait_idle(rescans=3)  # a kept original must not be redone or even re-queued by a rescan
        assert daemon.stop() == 0
    assert len(daemon.messages("queued")) == 1 and len(daemon.messages("done")) == 1
    assert (root / "inbox" / "a.jpg").exists() == (after == "keep")
    assert not (root / "processed").exists() or not any((root / "processed").iterdir())


@pytest.mark.slow
def test_a_burst_of_200_photos_is_each_done_exactly_once(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", presets={"tiny": {"style": "style.png", "size": 16, "iterations": 1}},
                           watch={"stable_seconds": 0.3})
    root = config.parent
    rng = np.random.default_rng(0)
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        for index in range(200):
            pixels = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
            drop(root / "inbox" / f"burst_{index:03d}.png", _encode(Image.fromarray(pixels), "PNG"))
        daemon.wait_msg("done", count=200, timeout=600)
        daemon.wait_idle()
        assert daemon.stop() == 0
    names = [f"burst_{index:03d}" for index in range(200)]
    assert sorted(p.stem for p in files_under(root / "outbox", "*.jpg")) == names
    assert sorted(p.stem for p in files_under(root / "processed")) == names
    assert sorted(Path(e["file"]).stem for e in daemon.messages("queued")) == names
    assert sorted(Path(e["file"]).stem for e in daemon.messages("done")) == names
    assert not list((root / "inbox").glob("*.png"))


def test_systemd_notifications_on_a_socket_the_test_binds(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p")
    address = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    server.settimeout(0.2)
    received: list[str] = []

    def messages() -> str:
        while True:
            try:
                received.append(server.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                return "\n".join(received)

    try:
        with DaemonProcess(config, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}) as daemon:
            wait_for(lambda: "READY=1" in messages(), 90, "READY=1")
            wait_for(lambda: "WATCHDOG=1" in messages(), 60, "watchdog pings")
            daemon.send(signal.SIGHUP)
            wait_for(lambda: "RELOADING=1" in messages(), 60, "RELOADING=1")
            assert daemon.stop() == 0
            wait_for(lambda: "STOPPING=1" in messages(), 60, "STOPPING=1")
    finally:
        server.close()
    text = "\n".join(received)
    assert "STATUS=" in text
    assert text.index("READY=1") < text.index("RELOADING=1") < text.index("STOPPING=1")
    assert text.count("READY=1") >= 2, "READY=1 again after the reload"


def test_missing_weights_refuse_to_start_before_ready(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", model={"weights": "torchvision"})
    dead = "http://127.0.0.1:9"
    env = {"TORCH_HOME": str(tmp_path / "empty-cache"), "https_proxy": dead, "HTTPS_PROXY": dead}
    with DaemonProcess(config, env=env) as daemon:
        assert daemon.process.wait(timeout=90) == 3
    assert "photostyle weights import" in daemon.text() and "Traceback" not in daemon.text()


def test_service_unit_dry_run_and_user_install(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # The command only writes files, so it runs in this process (a subprocess would spend seconds importing torch).
    config = daemon_config(tmp_path / "p")
    root = config.parent
    assert main(["service", "install", "--dry-run", "-c", str(config)]) == 0
    unit = capsys.readouterr().out
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "NoNewPrivileges=yes", "PrivateTmp=yes",
                 "ProtectSystem=strict", "ProtectHome=", "ExecReload=/bin/kill -HUP $MAINPID",
                 f"-c {config}", "sudo systemctl enable --now photostyle.service"):
        assert line in unit, line
    assert "PrivateDevices" not in unit.replace("no PrivateDevices", "")
    read_write = next(line for line in unit.splitlines() if line.startswith("ReadWritePaths="))
    for folder in ("inbox", "outbox", "processed", "failed", "state"):
        assert f"-{root / folder}" in read_write.split("=", 1)[1].split()
    assert not (root / "inbox").exists(), "a dry run writes nothing"

    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    assert main(["service", "install", "--user", "--force", "-c", str(config)]) == 0  # tmp_path is under /tmp
    installed = capsys.readouterr().out
    unit_file = home / "systemd" / "user" / "photostyle.service"
    assert "WantedBy=default.target" in unit_file.read_text()
    assert "loginctl enable-linger" in installed and "systemctl --user enable --now" in installed
    assert (root / "inbox").is_dir() and (root / "state").is_dir()
    if shutil.which("systemd-analyze"):
        assert main(["service", "install", "--dry-run", "-c", str(config)]) == 0


def test_a_style_image_dropped_into_the_styles_folder_becomes_a_preset_while_running(tmp_path: Path) -> None:
    # A styles-folder preset takes everything but its style from preset_defaults: keep it tiny (not 512 px).
    tiny_defaults = {"size": 32, "iterations": 3, "schedule": one_scale()}
    config = daemon_config(tmp_path / "p", preset_defaults=tiny_defaults)
    root = config.parent
    (root / "styles").mkdir()
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        from conftest import synthetic_style

        synthetic_style(seed=9).save(root / "styles" / ".partial.png")
        os.replace(root / "styles" / ".partial.png", root / "styles" / "zebra.png")
        daemon.wait_msg("config reloaded", timeout=90)
        wait_for((root / "inbox" / "zebra").is_dir, 60, "inbox/zebra/")
        drop(root / "inbox" / "zebra" / "horse.jpg", jpeg_bytes(95))
        [done] = daemon.wait_msg("done", timeout=180)
        assert done["preset"] == "zebra"
        assert daemon.stop() == 0
    with Image.open(root / "outbox" / "zebra" / "horse.jpg") as result:
        assert max(result.size) == 32  # the styles-folder preset took its settings from preset_defaults


def test_the_shared_daemon_stops_cleanly_after_all_that(shared: SharedDaemon) -> None:
    assert shared.daemon.stop() == 0
    assert "Traceback" not in shared.daemon.text()
