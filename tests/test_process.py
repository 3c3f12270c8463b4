"""``photostyle process``: outputs, naming, JSON, failures, weights, reproducibility."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import run_cli, synthetic_photo
from pipeline.cli import main
from pipeline.engine.nst.layers import init_like_torchvision, vgg19_features


def test_process_writes_the_stylized_photo_to_the_outbox(photo: Path, config_file: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["process", str(photo), "-c", str(config_file)]) == 0
    output = config_file.parent / "outbox" / "tiny" / "holiday.jpg"
    assert output.is_file()
    with Image.open(output) as result:
        assert result.format == "JPEG" and result.size == (32, 24)  # working size, aspect kept
    assert str(output) in capsys.readouterr().out
    assert photo.is_file(), "process never moves or deletes the photo"


def test_output_dir_option_and_never_overwriting(photo: Path, config_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    precious = target / "holiday.jpg"
    precious.write_bytes(b"the user's own file")
    for _ in range(2):
        assert main(["process", str(photo), "-c", str(config_file), "-o", str(target)]) == 0
    assert precious.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in target.iterdir()) == [
        "holiday-1.jpg", "holiday-1.jpg.json", "holiday-2.jpg", "holiday-2.jpg.json", "holiday.jpg"  # + sidecars
    ]


def test_json_reports_paths_time_and_loss_terms(photo: Path, config_file: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["process", str(photo), "-c", str(config_file), "--json"]) == 0
    [line] = capsys.readouterr().out.strip().splitlines()
    record = json.loads(line)
    assert record["input"] == str(photo) and record["preset"] == "tiny"
    assert Path(record["output"]).is_file() and record["seconds"] > 0
    for when in ("initial", "final"):
        assert set(record["loss"][when]) >= {"content", "style", "total"}
    assert record["loss"]["initial"]["content"] == 0.0  # starts from the photo itself
    assert record["loss"]["final"]["total"] <= record["loss"]["initial"]["total"]


def test_bad_photos_get_one_line_each_and_the_rest_still_run(tmp_path: Path, photo: Path, config_file: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(photo.read_bytes()[: len(photo.read_bytes()) // 2])
    missing = tmp_path / "gone.jpg"
    status = main(["process", str(text), str(truncated), str(missing), str(photo), "-c", str(config_file), "--json"])
    assert status == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    for bad, line in zip((text, truncated, missing), errors, strict=True):
        assert str(bad) in line
    assert "not an image" in errors[0] and "truncated" in errors[1] and "not found" in errors[2]
    assert "Traceback" not in captured.err
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [("error" in r) for r in records] == [True, True, True, False]
    assert (config_file.parent / "outbox" / "tiny" / "holiday.jpg").is_file()


def test_same_seed_same_input_same_output(photo: Path, make_config, tmp_path: Path) -> None:
    config = make_config(preset={"init": "noise", "seed": 3, "output": {"format": "png"}})
    for name in ("a", "b"):
        assert main(["process", str(photo), "-c", str(config), "-o", str(tmp_path / name)]) == 0
    first, second = (Image.open(tmp_path / name / "holiday.png") for name in ("a", "b"))
    assert first.tobytes() == second.tobytes()


def test_unknown_preset_is_refused(photo: Path, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["process", str(photo), "-c", str(config_file), "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """An empty torch cache and a proxy that refuses connections: torchvision cannot download."""
    dead = "http://127.0.0.1:9"
    return {"TORCH_HOME": str(tmp_path / "torch-home"), "https_proxy": dead, "HTTPS_PROXY": dead,
            "http_proxy": dead, "HTTP_PROXY": dead}


def test_missing_weights_stop_before_anything_is_processed(photo: Path, make_config, tmp_path: Path) -> None:
    config = make_config(extra={"model": {"weights": "torchvision"}})
    result = run_cli("process", photo, "-c", config, env=_offline_env(tmp_path))
    assert result.returncode == 3
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "photostyle weights import" in line and "weights status" in line
    assert "Traceback" not in result.stderr
    assert not (config.parent / "outbox").exists()


def test_weights_import_makes_torchvision_weights_work_offline(photo: Path, make_config, tmp_path: Path) -> None:
    features = vgg19_features()
    init_like_torchvision(features, seed=11)
    source = tmp_path / "my-vgg19.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, source)
    env = _offline_env(tmp_path)
    status = run_cli("weights", "status", env=env)
    assert status.returncode == 3 and "not cached" in status.stdout
    imported = run_cli("weights", "import", source, env=env)
    assert imported.returncode == 0, imported.stderr
    assert "imported VGG19 state dict" in imported.stdout
    assert (tmp_path / "torch-home" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth").is_file()
    config = make_config(extra={"model": {"weights": "torchvision"}})
    result = run_cli("process", photo, "-c", config, env=env)
    assert result.returncode == 0, result.stderr
    assert (config.parent / "outbox" / "tiny" / "holiday.jpg").is_file()


def test_weights_import_refuses_a_file_that_is_not_vgg19(tmp_path: Path) -> None:
    bogus = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, bogus)
    result = run_cli("weights", "import", bogus, env=_offline_env(tmp_path))
    assert result.returncode == 3
    assert "not a VGG19 state dict" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "torch-home" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth").exists()


def test_progress_bar_shows_evaluations_and_loss_on_a_terminal(photo: Path, make_config) -> None:
    config = make_config(preset={"iterations": 6})
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    env = dict(os.environ)
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "process", str(photo), "-c", str(config)],
                               stdout=subprocess.DEVNULL, stderr=secondary, env=env)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=120) == 0
    os.close(primary)
    shown = b"".join(chunks).decode(errors="replace")
    assert "holiday.jpg" in shown and "eval" in shown and "loss" in shown


def test_process_many_photos_reuses_one_network(tmp_path: Path, make_config, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import plugins.vgg_style.transfer as transfer

    loads: list[str] = []
    real = transfer.load_features
    monkeypatch.setattr(transfer, "load_features", lambda *args, **kwargs: loads.append("load") or real(*args, **kwargs))
    config = make_config()
    photos = []
    for i in range(3):
        path = tmp_path / f"p{i}.png"
        synthetic_photo(seed=i).save(path)
        photos.append(str(path))
    assert main(["process", *photos, "-c", str(config), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["output"]).name for r in records] == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert loads == ["load"], "three photos, one network loaded"
