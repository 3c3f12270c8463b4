"""``photostyle status`` shows a photo that waits in the inbox for its writer as waiting, with the seconds left.

Two kinds wait for ``watch.incomplete_grace`` before they are failed: a file that looks
unfinished (presized, half written: intake holds it) and a photo that failed to load
(truncated: it stays in the inbox). The ledger records the second as failed at once;
``status`` must not say ``failed`` for either while it waits, nor once it moved to
``failed/`` say it still waits.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from daemon_support import DaemonProcess, daemon_config, files_under, jpeg_bytes, wait_for
from pipeline.commands.status import not_failed_yet, render, status_report, waiting_for_writers

GRACE = 10.0  # seconds: long enough to read the status while both wait, short enough to see them fail


def noisy_jpeg(seed: int) -> bytes:
    """A JPEG of noise: no long zero runs of its own, big enough for a writer to stall halfway."""
    pixels = np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_photos_waiting_for_their_writer_show_as_waiting_with_seconds_left_not_failed(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", watch={"poll": True, "poll_interval": 0.3, "stable_seconds": 0.4,
                                                  "incomplete_grace": GRACE})
    root, state = config.parent, config.parent / "state"
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        truncated = root / "inbox" / "tiny" / "upload.jpg"
        truncated.write_bytes(jpeg_bytes(7, (120, 90))[:1500])  # fails to load: left in the inbox
        presized, data = root / "inbox" / "other" / "multi.jpg", noisy_jpeg(5)
        with open(presized, "wb") as handle:  # full size at once, first half written: looks unfinished
            handle.truncate(len(data))
            handle.write(data[: len(data) // 2])

        report = wait_for(lambda: (found := status_report(state)).get("waiting_writer") and
                          len(found["waiting_writer"]) == 2 and found, message="both photos waiting in the status")
        waiting = {Path(entry["file"]).name: entry for entry in report["waiting_writer"]}
        assert set(waiting) == {"upload.jpg", "multi.jpg"}
        assert waiting["upload.jpg"]["preset"] == "tiny" and waiting["multi.jpg"]["preset"] == "other"
        assert all(0 < entry["seconds_left"] <= GRACE for entry in waiting.values()), waiting
        assert report["counts"]["failed"] == 0 and report["counts"]["waiting"] == 2, report["counts"]
        assert report["last_errors"] == []
        text = render(report)
        assert "failed: 0" in text and "waiting for the writer: 2" in text, text
        assert any(line.strip().startswith(str(truncated)) and " s left" in line for line in text.splitlines()), text
        assert truncated.exists() and presized.exists() and not files_under(root / "failed")

        wait_for(lambda: len([p for p in files_under(root / "failed") if p.suffix == ".jpg"]) == 2,
                 timeout=GRACE + 60, message="both photos failed once their time was up")
        report = wait_for(lambda: (found := status_report(state))["counts"].get("failed") == 2 and found,
                          message="the status to count them as failed")
        assert not report.get("waiting_writer") and "waiting" not in report["counts"], report
        assert daemon.stop() == 0


def test_seconds_left_are_counted_when_the_status_is_read_and_waiting_is_not_failed() -> None:
    live = {"waiting_writer": [
        {"file": "/i/tiny/a.jpg", "preset": "tiny", "reason": "truncated", "seconds_left": 50, "fails_at": 1060.0,
         "counted_failed": True},
        {"file": "/i/b.jpg", "preset": "tiny", "reason": "a hole", "seconds_left": 9, "fails_at": 1009.0,
         "counted_failed": False},
    ]}
    waiting = waiting_for_writers(live, now=1010.0)
    assert [entry["seconds_left"] for entry in waiting] == [50.0, 0.0]
    report = {"counts": {"done": 1, "failed": 2, "queued": 0, "running": 0},
              "last_errors": [{"file": "/i/tiny/a.jpg", "preset": "tiny", "error": "load: truncated", "when": 2},
                              {"file": "/i/c.jpg", "preset": "tiny", "error": "load: not an image", "when": 1}]}
    report = not_failed_yet(report, waiting)
    assert report["counts"] == {"done": 1, "failed": 1, "queued": 0, "running": 0, "waiting": 2}
    assert [error["file"] for error in report["last_errors"]] == ["/i/c.jpg"]
