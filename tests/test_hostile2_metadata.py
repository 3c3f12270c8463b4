"""Metadata Pillow cannot carry is dropped with a warning; the photo is done (issue 17, item 3).

Two hostile inputs: a 1 MB EXIF block in a PNG or WebP (a JPEG segment holds
64 KB, so writing the result raised ``ValueError: EXIF data is too long``), and a
CMYK JPEG whose embedded profile parses but cannot build a colour transform
(``PyCMSError``). Each escaped the job as an internal error: the photo was
rendered three times, and the good photos of its batch failed with it. Now the
metadata is left out, the log and the sidecar's report say so, and the photo is
done like any other.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli, synthetic_photo
from PIL import Image
from test_imageio import synthetic_cmyk_profile

from pipeline.app import load_app
from pipeline.job.context import JobResult
from pipeline.job.runner import JobRequest
from pipeline.job.sidecar import read_sidecar
from pipeline.execution.worker import Worker

MAKE = 0x010F
USER_COMMENT = 0x9286
SIZE = (48, 36)


def huge_exif() -> bytes:
    """EXIF with a 1 MB user comment: PNG's eXIf and WebP's EXIF chunks hold it, a JPEG's APP1 segment cannot."""
    exif = Image.Exif()
    exif[MAKE] = "Acme"
    exif[USER_COMMENT] = b"ASCII\x00\x00\x00" + b"x" * 1_000_000
    return exif.tobytes()


def exif_png(path: Path, seed: int = 1) -> Path:
    synthetic_photo(SIZE, seed=seed).save(path, format="PNG", exif=huge_exif())
    return path


def exif_webp(path: Path, seed: int = 2) -> Path:
    synthetic_photo(SIZE, seed=seed).save(path, format="WEBP", exif=huge_exif(), quality=95)
    return path


def cmyk_jpeg(path: Path, seed: int = 3) -> Path:
    """A CMYK JPEG whose profile says CMYK input but has no table to build a transform from."""
    synthetic_photo(SIZE, seed=seed).convert("CMYK").save(
        path, format="JPEG", quality=95, icc_profile=synthetic_cmyk_profile(with_table=False))
    return path


def good_jpeg(path: Path, seed: int) -> Path:
    synthetic_photo(SIZE, seed=seed).save(path, format="JPEG", quality=95)
    return path


def test_process_drops_what_cannot_be_carried_and_finishes_each_photo(make_config, tmp_path: Path) -> None:
    config = make_config()
    inbox = tmp_path / "in"
    inbox.mkdir()
    photos = [exif_png(inbox / "long-exif.png"), exif_webp(inbox / "long-exif.webp"), cmyk_jpeg(inbox / "print.jpg")]

    result = run_cli("process", *photos, "-c", config, "--json")

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(record["input"]).name for record in records] == ["long-exif.png", "long-exif.webp", "print.jpg"]
    expected = ["EXIF dropped", "EXIF dropped", "CMYK colour profile cannot be used"]
    for photo, record, words in zip(photos, records, expected, strict=True):
        output = Path(record["output"])
        with Image.open(output) as written:
            assert written.format == "JPEG" and written.size == (32, 24)
            assert len(written.getexif()) == 0 and not written.info.get("icc_profile")
        [warning] = read_sidecar(output)["report"]["warnings"]
        assert words in warning and "\n" not in warning
        logged = [line for line in result.stderr.splitlines() if words in line and f"{photo}:" in line]
        assert len(logged) == 1 and "WARNING" in logged[0].upper()
    assert "JPEG cannot hold" in read_sidecar(Path(records[0]["output"]))["report"]["warnings"][0]
    assert "cannot build transform" in read_sidecar(Path(records[2]["output"]))["report"]["warnings"][0]


def test_png_output_keeps_the_long_exif_it_can_hold(make_config, tmp_path: Path) -> None:
    config = make_config(preset={"output": {"format": "png"}})
    photo = exif_png(tmp_path / "long-exif.png")
    result = run_cli("process", photo, "-c", config, "--json")
    assert result.returncode == 0, result.stderr
    output = Path(json.loads(result.stdout)["output"])
    with Image.open(output) as written:
        written.load()
        assert written.getexif()[MAKE] == "Acme"
    assert "warnings" not in read_sidecar(output)["report"]


def test_both_cases_inside_a_batch_of_four_leave_the_good_photos_alone(make_config, tmp_path: Path) -> None:
    """With ``watch.batch_size: 4`` one such photo sent the three good photos of its batch to ``failed/``."""
    worker = Worker(load_app(make_config(extra={"watch": {"batch_size": 4}})))
    folder = tmp_path / "in"
    folder.mkdir()
    photos = [good_jpeg(folder / "a.jpg", 4), exif_png(folder / "b.png"), cmyk_jpeg(folder / "c.jpg"),
              good_jpeg(folder / "d.jpg", 5)]

    results = worker.run_batch([JobRequest(photo, "tiny", output_dir=tmp_path / "out") for photo in photos])

    assert all(isinstance(result, JobResult) for result in results), results
    assert [result.report.get("batch") for result in results] == [4, 4, 4, 4]  # stylised together
    warnings = [read_sidecar(result.output)["report"].get("warnings", []) for result in results]
    assert warnings[0] == [] and warnings[3] == []
    assert len(warnings[1]) == 1 and warnings[1][0].startswith("EXIF dropped")
    assert len(warnings[2]) == 1 and "CMYK colour profile cannot be used" in warnings[2][0]
