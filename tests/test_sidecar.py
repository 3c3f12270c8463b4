"""Sidecars: every result says how it was made; ``photostyle show`` prints it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import synthetic_photo
from pipeline.cli import main
from pipeline.job.sidecar import read_sidecar, sidecar_path

STAGES = {"load", "preprocess", "stylize", "postprocess", "save"}
LOSS_TERMS = {"content", "style", "tv", "total"}


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    paths = []
    for i, name in enumerate(("first.jpg", "second.png")):
        path = tmp_path / "photos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        synthetic_photo(seed=i).save(path)
        paths.append(path)
    return paths


def test_every_output_has_a_sidecar_that_says_how_to_reproduce_it(
    photos: list[Path], make_config, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(preset={"seed": 5, "watermark": {"text": "hi"}})
    assert main(["process", *map(str, photos), "-c", str(config), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 2
    for photo, printed in zip(photos, records, strict=True):
        output = Path(printed["output"])
        assert printed["sidecar"] == str(sidecar_path(output)) == f"{output}.json"
        record = read_sidecar(output)
        assert record["photostyle"] and record["job_id"]
        assert record["input"] == str(photo) and record["output"] == str(output)
        assert record["preset"] == "tiny"
        settings = record["settings"]  # the full validated preset, plugin sections included
        assert settings["size"] == 32 and settings["iterations"] == 3 and settings["seed"] == 5
        assert settings["style"] == str(config.parent / "style.png")
        assert settings["output"] == {"format": "jpeg", "quality": 92, "keep_metadata": True}
        assert settings["watermark"]["text"] == "hi" and settings["preserve_color"] == "none"
        engine = record["report"]["engine"]
        assert engine["settings"]["seed"] == 5
        assert engine["weights"] == "random:seed0" and engine["device"] == "cpu" and engine["pooling"] == "max"
        assert engine["working_size"] == [32, 24] and engine["evaluations"] >= 1
        loss = record["report"]["loss"]
        assert set(loss["initial"]) >= LOSS_TERMS and set(loss["final"]) >= LOSS_TERMS
        assert set(record["timings"]) >= STAGES and record["seconds"] > 0
        created = datetime.fromisoformat(record["created"])
        assert created.utcoffset() == timedelta(0)
        assert abs(datetime.now(timezone.utc) - created) < timedelta(minutes=10)
    folder = Path(records[0]["output"]).parent
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "no temp files left behind"


def test_show_prints_the_sidecar_summary_and_raw_json(photo: Path, config_file: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["process", str(photo), "-c", str(config_file)]) == 0
    output = config_file.parent / "outbox" / "tiny" / "holiday.jpg"
    capsys.readouterr()
    assert main(["show", str(output)]) == 0
    summary = capsys.readouterr().out
    for expected in (str(output), str(photo), "tiny", "random:seed0", "seed", "loss", "content", "size: 32"):
        assert expected in summary
    assert main(["show", str(output), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == read_sidecar(output)
    assert main(["show", f"{output}.json"]) == 0  # naming the sidecar itself works too


def test_show_without_a_sidecar_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "not-ours.jpg"
    synthetic_photo().save(plain)
    broken = tmp_path / "broken.jpg"
    synthetic_photo().save(broken)
    Path(f"{broken}.json").write_text("{not json")
    for target in (plain, broken, tmp_path / "missing.jpg"):
        assert main(["show", str(target)]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        [line] = captured.err.splitlines()
        assert line.startswith("error: ") and str(target.name) in line


def test_a_result_whose_sidecar_cannot_be_written_is_taken_back_with_a_clear_error(
    photo: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A result only counts with its sidecar (issue 8.11): on a full disk both are retried, none is half-kept."""
    def disk_full(result: object, ctx: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pipeline.job.runner.write_sidecar", disk_full)
    assert main(["process", str(photo), "-c", str(config_file)]) == 1
    assert not any((config_file.parent / "outbox" / "tiny").glob("holiday*"))
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {photo}: ") and "sidecar not written (No space left on device)" in line
    assert photo.is_file()
