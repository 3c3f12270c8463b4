"""Several queued photos of one preset in one optimisation (what the daemon does on a GPU), tested on the CPU."""

from __future__ import annotations

import signal
from pathlib import Path


from conftest import synthetic_photo
from daemon_support import DaemonProcess, daemon_config, drop, jpeg_bytes, release
from pipeline.app import load_app
from pipeline.errors import PhotostyleError
from pipeline.job.runner import JobRequest
from pipeline.execution.worker import Worker


def _photos(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, size in enumerate(sizes):
        paths.append(folder / f"p{index}.png")
        synthetic_photo(size, seed=index).save(paths[-1])
    return paths


def test_photos_of_one_size_are_stylised_as_one_batch_each_with_its_own_figures(make_config, tmp_path: Path) -> None:
    worker = Worker(load_app(make_config()))
    photos = _photos(tmp_path / "in", [(48, 36)] * 3)
    results = worker.run_batch([JobRequest(p, "tiny", output_dir=tmp_path / "out") for p in photos])
    assert [r.output.name for r in results] == ["p0.jpg", "p1.jpg", "p2.jpg"]
    for result in results:
        assert result.report["engine"]["batch"] == 3 and result.report["batch"] == 3
        assert result.report["loss"]["final"]["total"] <= result.report["loss"]["initial"]["total"]
        assert result.output.is_file() and result.sidecar.is_file()
    initial = {round(r.report["loss"]["initial"]["total"], 6) for r in results}
    assert len(initial) == 3, "each photo reports its own loss, not the batch's"


def test_a_bad_photo_fails_alone_and_the_rest_still_batch(make_config, tmp_path: Path) -> None:
    worker = Worker(load_app(make_config()))
    photos = _photos(tmp_path / "in", [(48, 36)] * 2)
    bad = tmp_path / "in" / "bad.jpg"
    bad.write_text("not a photo")
    results = worker.run_batch([JobRequest(p, "tiny", output_dir=tmp_path / "out") for p in [photos[0], bad, photos[1]]])
    assert isinstance(results[1], PhotostyleError) and "not an image" in str(results[1])
    assert results[0].report["engine"]["batch"] == 2 and results[2].report["engine"]["batch"] == 2


def test_photos_of_different_shapes_are_stylised_one_by_one(make_config, tmp_path: Path) -> None:
    worker = Worker(load_app(make_config()))
    photos = _photos(tmp_path / "in", [(48, 36), (36, 48)])
    results = worker.run_batch([JobRequest(p, "tiny", output_dir=tmp_path / "out") for p in photos])
    assert [r.report["engine"]["batch"] for r in results] == [1, 1]
    assert "batch" not in results[0].report  # the batch hook declined


def test_batch_size_is_one_on_the_cpu_unless_configured(make_config) -> None:
    assert Worker(load_app(make_config())).batch_size == 1
    assert Worker(load_app(make_config(extra={"watch": {"batch_size": 3}}))).batch_size == 3


def test_the_daemon_batches_queued_photos_of_one_preset(tmp_path: Path) -> None:
    config = daemon_config(tmp_path / "p", watch={"batch_size": 3}, slow=True)
    root = config.parent
    held = tmp_path / "release"
    with DaemonProcess(config, env={"PHOTOSTYLE_TEST_SLOW": "300", "PHOTOSTYLE_TEST_RELEASE": str(held)}) as daemon:
        daemon.wait_ready()
        drop(root / "inbox" / "slow.jpg", jpeg_bytes(1))
        daemon.wait_msg("started")
        for index in range(3):  # queued while the slow one runs
            drop(root / "inbox" / f"queued_{index}.jpg", jpeg_bytes(10 + index))
        drop(root / "inbox" / "other" / "elsewhere.jpg", jpeg_bytes(20))
        daemon.wait_msg("queued", count=5)
        release(held, "slow.jpg")
        daemon.wait_msg("done", count=5)
        assert daemon.stop(signal.SIGTERM) == 0
    started = {Path(e["file"]).name: e["batch"] for e in daemon.messages("started")}
    assert started == {"slow.jpg": 1, "queued_0.jpg": 3, "queued_1.jpg": 3, "queued_2.jpg": 3, "elsewhere.jpg": 1}
    assert len(list((root / "outbox" / "tiny").glob("queued_*.jpg"))) == 3
