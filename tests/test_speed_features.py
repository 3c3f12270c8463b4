"""Speed features with behaviour users rely on: the style-target cache, the schedule, out-of-memory fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import synthetic_photo, synthetic_style
from pipeline.app import load_app
from pipeline.job.runner import JobRequest
from pipeline.engine.nst.engine import EngineSettings, stylize
from pipeline.engine.nst.layers import FeatureExtractor, init_like_torchvision, vgg19_features
from pipeline.engine.nst.objective import Objective, ObjectiveWeights, style_targets
from pipeline.execution.worker import Worker
from plugins.vgg_style.transfer import style_cache

LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


def test_style_targets_are_computed_once_then_read_from_memory_and_disk(make_config, tmp_path: Path) -> None:
    config = make_config(preset={"schedule": {"pyramid": [0.5], "pyramid_iterations": [2]}, "size": 48})
    photos = []
    for index in range(2):
        photos.append(tmp_path / f"photo{index}.png")
        synthetic_photo((48, 36), seed=index).save(photos[-1])

    first_worker = Worker(load_app(config))
    first_worker.prepare("tiny")  # what the daemon does at start
    cache = style_cache(first_worker.resources)
    assert cache.counts == {"memory": 0, "disk": 0, "computed": 2}  # two pyramid levels
    stored = sorted((config.parent / "state" / "cache" / "style-targets").glob("*.pt"))
    assert len(stored) == 2
    for photo in photos:
        report = first_worker.run(JobRequest(source=photo, preset="tiny", output_dir=tmp_path / "out")).report
        assert report["style_targets"] == {"source": "memory,memory", "seconds": 0.0}

    second_worker = Worker(load_app(config))  # a restarted daemon
    second_worker.prepare("tiny")
    assert style_cache(second_worker.resources).counts == {"memory": 0, "disk": 2, "computed": 0}
    for layer, gram in style_cache(second_worker.resources)._memory.items():
        assert torch.equal(gram["conv1_1"], cache._memory[layer]["conv1_1"])


SINGLE_SCALE = {"schedule": {"pyramid": [], "pyramid_iterations": []}}


def test_a_changed_style_image_or_layer_set_is_new_targets(make_config, tmp_path: Path) -> None:
    config = make_config(preset=SINGLE_SCALE)
    worker = Worker(load_app(config))
    worker.prepare("tiny")
    synthetic_style(seed=7).save(config.parent / "style.png")  # the user edits the style in place
    fresh = Worker(load_app(config))
    fresh.prepare("tiny")
    assert style_cache(fresh.resources).counts["computed"] == 1
    other_layers = make_config(preset={**SINGLE_SCALE, "style_layers": ["conv1_1", "conv2_1"]})
    third = Worker(load_app(other_layers))
    third.prepare("tiny")
    assert style_cache(third.resources).counts["computed"] == 1


def test_a_damaged_cache_file_is_recomputed(make_config) -> None:
    config = make_config(preset=SINGLE_SCALE)
    Worker(load_app(config)).prepare("tiny")
    [stored] = (config.parent / "state" / "cache" / "style-targets").glob("*.pt")
    stored.write_bytes(b"garbage")
    worker = Worker(load_app(config))
    worker.prepare("tiny")
    assert style_cache(worker.resources).counts["computed"] == 1


@pytest.fixture(scope="module")
def objective_parts() -> tuple[FeatureExtractor, ObjectiveWeights, dict]:
    features = vgg19_features()
    init_like_torchvision(features, seed=0)
    weights = ObjectiveWeights(1.0, 1e5, 0.0, ("conv4_2",), LAYERS, (0.2,) * 5)
    extractor = FeatureExtractor(features.eval(), weights.layers)
    style = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return extractor, weights, {"style": style}


def _objective_factory(parts, sizes_seen: list[tuple[int, int]]):
    extractor, weights, extra = parts

    def objective_at(level_content: torch.Tensor) -> Objective:
        sizes_seen.append(tuple(level_content.shape[-2:]))
        targets = style_targets(extractor, [extra["style"]], [1.0], weights.style_layers)
        return Objective(extractor, level_content, targets, weights)

    return objective_at


def test_pyramid_runs_coarse_levels_first_with_their_budgets(objective_parts) -> None:
    content = torch.rand(1, 3, 40, 64, generator=torch.Generator().manual_seed(2))
    seen: list[tuple[int, int]] = []
    settings = EngineSettings(iterations=5, pyramid=(0.5,), pyramid_iterations=(4,))
    result = stylize(content, _objective_factory(objective_parts, seen), settings, min_side=16)
    assert seen == [(20, 32), (40, 64)]
    assert result.level_evaluations == (4, 5) and result.evaluations == 9
    assert result.image.shape == content.shape


def test_coarse_levels_too_small_for_the_network_are_skipped(objective_parts) -> None:
    content = torch.rand(1, 3, 24, 32)
    seen: list[tuple[int, int]] = []
    settings = EngineSettings(iterations=3, pyramid=(0.25, 0.5), pyramid_iterations=(3, 3))
    result = stylize(content, _objective_factory(objective_parts, seen), settings, min_side=16)
    assert seen == [(24, 32)] and result.level_evaluations == (3,)


def test_tolerance_and_time_budget_stop_early(objective_parts) -> None:
    content = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    factory = _objective_factory(objective_parts, [])
    converged = stylize(content, factory, EngineSettings(iterations=200, tolerance=0.5, window=3))
    assert converged.evaluations < 200
    timed = stylize(content, factory, EngineSettings(iterations=200, time_budget=0.01))
    assert timed.evaluations < 10


def test_clamped_objective_keeps_the_optimised_pixels_displayable(objective_parts) -> None:
    content = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    factory = _objective_factory(objective_parts, [])
    result = stylize(content, factory, EngineSettings(iterations=15, box="clamp"))
    extractor, weights, extra = objective_parts
    objective = factory(content)
    # the reported final loss is the loss of the image as saved (clamped)
    assert objective.evaluate(result.image).total == pytest.approx(result.final.total, rel=1e-4)


OOM_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    from pipeline.app import load_app
    from pipeline.job.runner import JobRequest
    from pipeline.execution.worker import Worker

    photo, margin_mb, out = Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    worker = Worker(load_app(Path(sys.argv[1])))
    worker.prepare("tiny")
    worker.run(JobRequest(source=photo, preset="warm_up", output_dir=out / "warm-up"))  # lazy imports, threads
    # The model is loaded and warm; now cap the address space, as a small GPU would.
    status = open("/proc/self/status").read()
    current = int(status.split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (current + margin_mb * 2**20, resource.RLIM_INFINITY))
    result = worker.run(JobRequest(source=photo, preset="tiny", output_dir=out))
    print(json.dumps({"output": str(result.output), "report": result.report}))
""")


def first_layer_only() -> dict:
    """Only the first layer, in fp32: the memory still grows with the pixels (measured as VmPeak growth:
    367 MB at 512 x 384, 209 MB at 384 x 288, 120 MB at 288 x 216), at a hundredth of the arithmetic."""
    return {"content_layers": ["conv1_1"], "style_layers": ["conv1_1"], "precision": "fp32",
            "schedule": {"pyramid": [], "pyramid_iterations": []}}


def test_out_of_memory_retries_at_a_smaller_size_with_a_warning(make_config, tmp_path: Path) -> None:
    # fp32 forced: the same kernels, and the same memory, on CPUs with and without bf16.
    presets = {"tiny": {"style": "style.png", "size": 512, "iterations": 2, **first_layer_only()},
               "warm_up": {"style": "style.png", "size": 16, "iterations": 1, **first_layer_only()}}
    config = make_config(extra={"presets": presets})
    photo = tmp_path / "big.png"
    synthetic_photo((512, 384)).save(photo)
    script = tmp_path / "oom.py"
    script.write_text(OOM_SCRIPT)
    # A fixed glibc mmap threshold: each large buffer is its own mapping, unmapped when freed. (By default glibc
    # raises the threshold after the first free and keeps later buffers in its heap, whose address space the cap
    # still counts: a failed attempt's memory would stay "used", and the retries could fail down to 16 px.)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    # 200 MB more than the warm process: 512 px needs 1.8 times that, 288 px 0.6 times.
    done = subprocess.run([sys.executable, str(script), str(config), str(photo), "200", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    warnings = record["report"]["warnings"]
    assert warnings and all("out of memory at" in w and "retrying at" in w for w in warnings)
    assert "out of memory at 512 px" in warnings[0]
    assert max(record["report"]["engine"]["working_size"]) < 512
    assert Path(record["output"]).is_file()
    assert "out of memory at 512 px" in done.stderr  # and the log says so


def test_out_of_memory_is_recognised_on_cpu_and_cuda() -> None:
    from plugins.vgg_style.transfer import is_out_of_memory

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4 GB"))
    assert is_out_of_memory(RuntimeError("could not create a primitive"))  # oneDNN, when its memory runs out
    assert is_out_of_memory(RuntimeError("std::bad_alloc"))  # a C++ allocation, translated by torch
    assert is_out_of_memory(MemoryError())  # ... or by pybind11
    assert not is_out_of_memory(RuntimeError("Given input size: (512x1x2). Output size is too small"))
    assert not is_out_of_memory(ValueError("a value error that mentions out of memory is still a value error"))


def test_start_up_does_not_warm_style_targets_at_a_size_over_the_memory_limit(make_config) -> None:
    # 256 px square needs about 270 MB in fp32: under a 64 MB limit photos run smaller, so the
    # targets at 256 px would never be used; under a 1 GB limit they are warmed as usual.
    cache_dir = "state/cache/style-targets"
    for limit, warmed in ((64, 0), (1024, 1)):
        config = make_config(extra={"limits": {"memory_mb": limit}},
                             preset={"size": 256, "iterations": 2, "precision": "fp32", **SINGLE_SCALE})
        worker = Worker(load_app(config))
        worker.prepare("tiny")
        assert style_cache(worker.resources).counts["computed"] == warmed, limit
        assert len(list((config.parent / cache_dir).glob("*.pt"))) == warmed


def test_a_working_size_over_the_memory_limit_is_reduced_with_a_warning(make_config, tmp_path: Path) -> None:
    from plugins.vgg_style.transfer import MB_PER_MEGAPIXEL

    # fp32 forced: "auto" would pick bf16 on some CPUs and fp32 on others, and the estimate differs.
    # 256 px needs about 270 MB; 64 MB is the smallest limit the config accepts.
    config = make_config(extra={"limits": {"memory_mb": 64}},
                         preset={"size": 256, "iterations": 2, "precision": "fp32", **SINGLE_SCALE})
    photo = tmp_path / "wide.png"
    synthetic_photo((400, 300)).save(photo)
    result = Worker(load_app(config)).run(JobRequest(source=photo, preset="tiny", output_dir=tmp_path / "out"))
    [warning] = result.report["warnings"]
    assert "working size 256 px needs about" in warning and "over the memory limit of 64 MB" in warning
    assert result.report["engine"]["precision"] == "float32"
    width, height = result.report["engine"]["working_size"]
    assert max(width, height) < 256
    assert MB_PER_MEGAPIXEL["fp32"] * width * height / 1e6 <= 64 * 1.05  # the reduced size fits the estimate
