"""Fast presets: training on the preset's objective, resuming, staleness, tiled rendering, the engines.

Tiny sizes and seeded random weights: these check behaviour, not pictures
(``bench/fast.py`` measures speed and quality with trained filters).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import one_scale, run_cli, synthetic_photo, write_config
from daemon_support import DaemonProcess, daemon_config, drop, jpeg_bytes, wait_for
from pipeline.cli import main
from pipeline.engine.fast.network import NetworkShape, TransformNet
from pipeline.engine.fast.tiling import render
from pipeline.engine.fast.training import Trainer, TrainingPhoto, TrainingSettings
from pipeline.engine.nst.layers import FeatureExtractor, init_like_torchvision, vgg19_features
from pipeline.engine.nst.objective import ObjectiveWeights, style_targets
from pipeline.engine.tensors import image_to_tensor

TINY = {"engine": "fast", "precision": "fp32"}
TRAIN = ["--steps", "4", "--crop", "32", "--batch", "2", "--checkpoint-every", "1"]


def _tiny_net(seed: int = 0) -> TransformNet:
    torch.manual_seed(seed)
    net = TransformNet(NetworkShape(width=0.25, residual_blocks=2)).eval()
    with torch.no_grad():
        for parameter in net.parameters():  # away from the initial identity-like affines, so every layer matters
            parameter.add_(0.05 * torch.randn_like(parameter))
    return net


def _project(tmp_path: Path, preset: dict | None = None, photos: int = 3) -> Path:
    """A tiny config whose processed/ holds a few photos to train on."""
    config = write_config(tmp_path / "project", preset={**TINY, **(preset or {})})
    processed = config.parent / "processed"
    processed.mkdir(exist_ok=True)
    for seed in range(photos):
        synthetic_photo((64, 48), seed=seed).save(processed / f"photo{seed}.jpg", quality=95)
    return config


def _sidecar(config: Path, preset: str = "tiny") -> dict:
    return json.loads((config.parent / "state" / "models" / f"{preset}.json").read_text())


def test_tiled_rendering_equals_the_untiled_network_without_seams() -> None:
    net = _tiny_net()
    image = torch.rand(1, 3, 150, 210, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        whole = (net(image).clamp(0, 1) * 255).round().to(torch.uint8)  # plain instance norm over the whole image
    tiled = render(net, image, tile=64)  # 3 × 4 tiles, statistics folded into the convolutions
    difference = (whole.int() - tiled.int()).abs()
    assert difference.max() <= 1, "a seam or a wrong statistic"  # rounding only
    assert (difference > 0).float().mean() < 0.01


def test_training_lowers_the_loss_on_a_tiny_set() -> None:
    torch.manual_seed(0)
    features = vgg19_features()
    init_like_torchvision(features, seed=0)
    weights = ObjectiveWeights(1.0, 1e4, 0.0, ("conv2_2",), ("conv1_1", "conv2_1"), (0.5, 0.5))
    extractor = FeatureExtractor(features, weights.layers)
    style = image_to_tensor(synthetic_photo((48, 48), seed=9).rotate(90))
    targets = style_targets(extractor, [style], [1.0], weights.style_layers)
    photos = [TrainingPhoto(image_to_tensor(synthetic_photo((48, 40), seed=s)), targets) for s in range(3)]
    trainer = Trainer(extractor, weights, photos, photos[:1], TrainingSettings(
        crop=32, batch=2, learning_rate=1e-2, shape=NetworkShape(width=0.25, residual_blocks=1)))
    before = trainer.validate()
    for _ in range(40):
        trainer.step()
    after = trainer.validate()
    assert before is not None and after is not None and after < 0.85 * before  # measured: 0.75 after 30 steps


def test_train_writes_the_model_and_its_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _project(tmp_path)
    assert main(["train", "tiny", "-c", str(config), *TRAIN]) == 0
    assert "tiny" in capsys.readouterr().out
    record = _sidecar(config)
    assert record["steps"] == 4 and record["device"] == "cpu" and record["objective_hash"]
    assert [step for step, _, _ in record["curves"]["train"]] == [1, 2, 3, 4]
    assert record["curves"]["validation"][-1][0] == 4
    assert len(record["photos"]["training"]) == 2 and len(record["photos"]["validation"]) == 1
    assert record["objective"]["preset"]["style_weight"] == 1e6 and "weights" in record["objective"]["model"]


def test_training_keeps_at_most_max_photos_the_first_by_content_hash(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.app import load_app
    from pipeline.commands import train

    config = _project(tmp_path, photos=5)
    monkeypatch.setattr(train, "MAX_PHOTOS", 3)
    photos, where = train.gather_photos(load_app(config), ())
    every = sorted(hashlib.sha256(path.read_bytes()).hexdigest() for path in (config.parent / "processed").iterdir())
    assert [photo.sha256 for photo in photos] == every[:3]
    assert "kept the first 3 of 5 by content hash" in where


def test_a_run_killed_mid_training_resumes_with_the_steps_it_would_have_taken(tmp_path: Path) -> None:
    config = _project(tmp_path / "a")
    twin = tmp_path / "b" / "project"
    shutil.copytree(config.parent, twin)
    note = config.parent / "state" / "models" / "tiny.checkpoint.json"
    args = [sys.executable, "-m", "pipeline", "train", "tiny", "-c", str(config), "--steps", "100000", "--crop", "32",
            "--batch", "2", "--checkpoint-every", "1"]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_for(lambda: note.is_file() and json.loads(note.read_text())["step"] >= 2, timeout=120,
                 message="two checkpoints")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not (config.parent / "state" / "models" / "tiny.pt").exists(), "killed before it finished"
    stopped_at = json.loads(note.read_text())["step"]
    steps = str(stopped_at + 3)
    env = {"OMP_NUM_THREADS": "1"}
    resumed = run_cli("train", "tiny", "-c", config, "--steps", steps, "--crop", "32", "--batch", "2", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from the checkpoint at step {stopped_at}" in resumed.stderr
    fresh = run_cli("train", "tiny", "-c", twin / "config.yaml", "--steps", steps, "--crop", "32", "--batch", "2",
                    env=env)
    assert fresh.returncode == 0, fresh.stderr
    after_kill = [loss for _, _, loss in _sidecar(config)["curves"]["train"]]
    uninterrupted = [loss for _, _, loss in _sidecar(twin / "config.yaml")["curves"]["train"]]
    assert len(after_kill) == len(uninterrupted) == stopped_at + 3
    assert after_kill == pytest.approx(uninterrupted, rel=1e-4)


def test_fast_renders_at_the_photos_own_size_and_a_stale_model_is_not_used(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    config = _project(tmp_path)
    assert main(["train", "tiny", "-c", str(config), *TRAIN]) == 0
    photo = tmp_path / "big.jpg"
    synthetic_photo((120, 90), seed=5).save(photo, quality=95)
    capsys.readouterr()
    assert main(["process", str(photo), "-c", str(config), "--json", "-o", str(tmp_path / "out1")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["fast"]["engine"] == "fast" and record["fast"]["size"] == [120, 90]
    assert record["fast"]["model_sha256"] == _sidecar(config)["model_sha256"]
    assert "loss" not in record, "no optimisation ran"

    document = yaml.safe_load(config.read_text())
    document["presets"]["tiny"]["style_weight"] = 1e3  # the objective changed: the model is stale
    config.write_text(yaml.safe_dump(document))
    assert main(["process", str(photo), "-c", str(config), "--json", "-o", str(tmp_path / "out2")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert "stale: style_weight changed" in record["fast"]["fallback"]
    assert "loss" in record and record["engine"]["name"] == "gatys-vgg19"
    [warning] = [r.getMessage() for r in caplog.records if "optimising instead" in r.getMessage()]
    assert str(photo) in warning and "photostyle train tiny" in warning

    document["presets"]["tiny"]["style_weight"] = 1e6
    document["presets"]["tiny"]["iterations"] = 7  # not part of the objective: the model stays current
    config.write_text(yaml.safe_dump(document))
    assert main(["process", str(photo), "-c", str(config), "--json", "-o", str(tmp_path / "out3")]) == 0
    assert json.loads(capsys.readouterr().out)["fast"]["engine"] == "fast"

    document["limits"] = {"max_output_pixels": 3000}  # 120 × 90 = 10800: rendered at 63 × 47, said so
    config.write_text(yaml.safe_dump(document))
    assert main(["process", str(photo), "-c", str(config), "--json", "-o", str(tmp_path / "out4")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["fast"]["size"] == [63, 47] and "over limits.max_output_pixels" in record["warnings"][0]


def test_fast_without_a_model_falls_back_with_one_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    config = _project(tmp_path)
    photo = tmp_path / "p.jpg"
    synthetic_photo().save(photo, quality=95)
    assert main(["process", str(photo), "-c", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fast"]["fallback"] == "no trained model"
    assert len([r for r in caplog.records if "optimising instead" in r.getMessage()]) == 1


def test_fast_refine_starts_the_optimisation_from_the_networks_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _project(tmp_path, {"engine": "fast+refine"})
    assert main(["train", "tiny", "-c", str(config), *TRAIN]) == 0
    photo = tmp_path / "p.jpg"
    synthetic_photo((64, 48), seed=7).save(photo, quality=95)
    capsys.readouterr()
    assert main(["process", str(photo), "-c", str(config), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["fast"]["engine"] == "fast+refine" and record["fast"]["size"] == [32, 24]
    assert record["engine"]["level_evaluations"] == [3], "one level: the network's output replaces the pyramid"
    assert record["loss"]["final"]["total"] <= record["loss"]["initial"]["total"]


def test_the_daemon_renders_fast_presets_exactly_once(tmp_path: Path) -> None:
    base = {"style": "style.png", "size": 24, "iterations": 2, "schedule": one_scale(), **TINY}
    config = daemon_config(tmp_path, presets={"quick": base, "refined": {**base, "engine": "fast+refine"},
                                              "untrained": base}, default_preset="quick")
    processed = config.parent / "processed"
    processed.mkdir(exist_ok=True)
    for seed in range(2):
        synthetic_photo((64, 48), seed=seed).save(processed / f"seen{seed}.jpg", quality=95)
    for preset in ("quick", "refined"):
        assert main(["train", preset, "-c", str(config), *TRAIN]) == 0
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        for preset in ("quick", "refined"):
            for index in range(2):
                drop(config.parent / "inbox" / preset / f"{preset}{index}.jpg", jpeg_bytes(seed=index, size=(80, 60)))
        outbox = config.parent / "outbox"
        wait_for(lambda: len(list(outbox.glob("*/*.jpg"))) == 4, timeout=120, message="four results")
        daemon.wait_idle(rescans=1)
        models = daemon.status()["models"]
        assert models["quick"]["model"] == models["refined"]["model"] == "current"
        assert models["untrained"]["model"] == "no trained model"
        assert "fast preset without a current model (no trained model)" in daemon.text()
        assert run_cli("status", "-c", config).stdout.count("untrained (engine: fast): no trained model") == 1
    results = sorted(path.relative_to(outbox).as_posix() for path in outbox.glob("*/*.jpg"))
    assert results == ["quick/quick0.jpg", "quick/quick1.jpg", "refined/refined0.jpg", "refined/refined1.jpg"]
    for result in outbox.glob("*/*.jpg"):
        report = json.loads(Path(f"{result}.json").read_text())
        engine = report["report"]["fast"]["engine"]
        assert engine == ("fast" if result.parent.name == "quick" else "fast+refine"), report


def test_training_runs_on_a_local_ray_cluster(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    config = _project(tmp_path, photos=2)
    document = yaml.safe_load(config.read_text())
    document["executor"] = {"kind": "ray", "cpus_per_worker": 1}
    config.write_text(yaml.safe_dump(document))
    result = run_cli("train", "tiny", "-c", config, *TRAIN, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "training on the Ray cluster" in result.stderr
    record = _sidecar(config)
    assert record["steps"] == 4 and (config.parent / "state" / "models" / "tiny.checkpoint.pt").is_file()
