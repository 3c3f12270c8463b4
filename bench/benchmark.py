"""Speed benchmark: the project's default engine against the plain single-scale baseline.

Not a test: it prints figures. For each working size it runs, each in a fresh
subprocess (so peak memory is per run):

- **baseline**: plain L-BFGS (strong Wolfe line search, history 100), 300 objective
  evaluations from the photo, at the working size, fp32, cold style targets;
- **project**: the preset exactly as configured (schedule, precision, caches), through
  the same job runner ``photostyle process`` uses, cold style-target cache;
- **second photo**: a second photo of the same preset in the same worker, to show
  the style-target cache (seconds spent on style targets, first vs second).

Both saved outputs (8-bit, as the user gets them) are scored under the seed's
objective at the working size with the same weights; the project counts when its
score is at or below the baseline's. Speed = baseline seconds / project seconds,
wall clock for the whole photo (load to save).

Use trained filters: random weights behave differently. Offline, build a VGG19-shaped
network with trained filters with a HED-to-VGG19 conversion script (not in this repository), then e.g.::

    python bench/benchmark.py --weights HED_VGG19.pth \\
        --photo DUSK_PHOTO.jpg --sizes 256 512

On a GPU add ``--device cuda --sizes 512 1024 2048``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BASELINE_EVALUATIONS = 300


def _config(folder: Path, args: argparse.Namespace, size: int, baseline: bool) -> Path:
    """A config in ``folder``: the bundled preset's settings at ``size``, this machine's weights and device."""
    import yaml

    bundled = yaml.safe_load((REPO / "config.yaml").read_text())
    preset = {**bundled.get("preset_defaults", {}), **bundled["presets"][args.preset]}
    preset["style"] = str((REPO / preset["style"]).resolve()) if args.style is None else str(Path(args.style).resolve())
    preset["size"] = size
    preset["output"] = {"format": "png", "keep_metadata": False}  # lossless: the score sees the engine, not JPEG
    if args.precision:
        preset["precision"] = args.precision
    if baseline:
        preset["iterations"] = BASELINE_EVALUATIONS
        preset["schedule"] = {"pyramid": [], "pyramid_iterations": [], "tolerance": 0.0, "box": "none"}
        preset["precision"] = "fp32"
    config = {
        "inbox": str(folder / "inbox"), "outbox": str(folder / "outbox"), "processed": str(folder / "processed"),
        "failed": str(folder / "failed"), "state": str(folder / "state"), "device": args.device,
        "model": {"weights": str(Path(args.weights).resolve())}, "default_preset": "bench",
        "presets": {"bench": preset}, "plugins": {"disabled": ["gallery"]},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peaks(device: str) -> float:
    """Forget the peak so far (model loading), so the job's own peak can be read; returns RSS now."""
    import torch

    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak-RSS high-water mark (proc(5))
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    return _status_mb("VmRSS")


def _peak_memory(device: str, before_mb: float) -> dict[str, float]:
    import torch

    peak = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "job_peak_mb": _status_mb("VmHWM") - before_mb}
    if device.startswith("cuda") and torch.cuda.is_available():
        peak["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def _score(config_path: Path, output: Path, worker: Any = None, photo: Path | None = None) -> dict[str, float]:
    """The seed's objective (fp32, working size) at a saved output (``worker``: reuse its model and caches)."""
    import torch

    from pipeline.app import load_app
    from pipeline.job.imageio import load_photo, resize_long_edge
    from pipeline.engine.nst.layers import FeatureExtractor
    from pipeline.engine.nst.objective import Objective
    from pipeline.engine.tensors import image_to_tensor
    from pipeline.execution.worker import Worker
    from plugins.vgg_style.transfer import network, objective_weights, preset_style_targets, style_long_edge

    if worker is None:
        worker = Worker(load_app(config_path))
    app = worker.app
    preset = app.config.presets["bench"]
    weights = objective_weights(preset)
    extractor = FeatureExtractor(network(worker.resources), weights.layers)
    result = load_photo(output, app.config.limits.max_pixels).image
    photo = load_photo(photo or Path(os.environ["BENCH_PHOTO"]), app.config.limits.max_pixels).image
    content = image_to_tensor(resize_long_edge(photo, max(result.size)), worker.resources.device)
    assert tuple(content.shape[-2:]) == (result.size[1], result.size[0]), "scored at the working size"
    targets = preset_style_targets(preset, extractor, worker.resources, style_long_edge(preset, max(result.size)))
    objective = Objective(extractor, content, targets.targets, weights)
    with torch.no_grad():
        return objective.evaluate(image_to_tensor(result, worker.resources.device)).as_dict()


def run_one(args: argparse.Namespace) -> None:
    """Child process: one photo (or two, for the cache) through the job runner; print a JSON line."""
    from pipeline.app import load_app
    from pipeline.job.runner import JobRequest
    from pipeline.execution.worker import Worker
    from plugins.vgg_style.transfer import style_cache

    folder = Path(tempfile.mkdtemp(prefix="photostyle-bench-"))
    config_path = _config(folder, args, args.size, args.run == "baseline")
    app = load_app(config_path)
    began = time.perf_counter()
    worker = Worker(app)
    worker.prepare("bench")  # model and style targets: part of the first photo's wall clock
    prepared = time.perf_counter() - began
    counts = style_cache(worker.resources).counts
    computed_at_start = dict(counts)
    before_mb = _reset_peaks(args.device)
    first = worker.run(JobRequest(source=Path(args.photo), preset="bench"))
    seconds = time.perf_counter() - began
    record: dict[str, Any] = {
        "run": args.run, "size": args.size, "seconds": seconds, "prepare_seconds": prepared,
        "evaluations": first.report["engine"]["evaluations"],
        "level_evaluations": first.report["engine"]["level_evaluations"],
        "working_size": first.report["engine"]["working_size"], "precision": first.report["engine"]["precision"],
        "style_targets_first": {"source": f"computed x{computed_at_start['computed']}",
                                "seconds": first.report["style_targets"]["seconds"]},
        **_peak_memory(args.device, before_mb),
    }
    if args.run == "project":
        again = worker.run(JobRequest(source=Path(args.photo), preset="bench", output_dir=folder / "second"))
        record["second_seconds"] = again.seconds
        record["style_targets_second"] = again.report["style_targets"]
        record["second_computed"] = counts["computed"] - computed_at_start["computed"]
    os.environ["BENCH_PHOTO"] = str(Path(args.photo).resolve())
    record["score"] = _score(config_path, first.output)
    print(json.dumps(record), flush=True)


def _child(args: argparse.Namespace, run: str, size: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--run", run, "--size", str(size), "--weights", args.weights,
               "--photo", args.photo, "--preset", args.preset, "--device", args.device]
    if args.precision:
        command += ["--precision", args.precision]
    if args.style:
        command += ["--style", args.style]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{run} at {size} px failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    sys.path.insert(0, str(REPO))
    from pipeline.engine.device import configure_cpu_runtime

    configure_cpu_runtime()  # as the photostyle command does, before torch is imported
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="VGG19 state dict with trained filters")
    parser.add_argument("--photo", required=True)
    parser.add_argument("--style", help="style image (default: the preset's)")
    parser.add_argument("--preset", default="starry_night", help="bundled preset whose settings are used")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help="override the preset's")
    parser.add_argument("--run", choices=["baseline", "project"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_one(args)
        return
    import torch

    print(f"photostyle benchmark: device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"preset {args.preset}, weights {Path(args.weights).name}, photo {Path(args.photo).name}")
    for size in args.sizes:
        base = _child(args, "baseline", size)
        ours = _child(args, "project", size)
        megapixels = ours["working_size"][0] * ours["working_size"][1] / 1e6
        ok = ours["score"]["total"] <= base["score"]["total"]
        print(f"\n== {size} px (working size {ours['working_size'][0]}x{ours['working_size'][1]}) ==")
        print(f"baseline: {base['seconds']:8.1f} s  loss {base['score']['total']:.5g}  "
              f"({base['evaluations']} evaluations, {base['precision']})  job peak RSS +{base['job_peak_mb']:.0f} MB")
        print(f"project:  {ours['seconds']:8.1f} s  loss {ours['score']['total']:.5g}  "
              f"(evaluations per level {ours['level_evaluations']}, {ours['precision']})  "
              f"job peak RSS +{ours['job_peak_mb']:.0f} MB")
        print(f"speed: {base['seconds'] / ours['seconds']:.2f}x  quality: "
              f"{'at or below' if ok else 'ABOVE'} the baseline's loss "
              f"({100 * (ours['score']['total'] / base['score']['total'] - 1):+.1f}%)")
        for key in ("gpu_max_allocated_mb",):
            if key in ours:
                print(f"GPU max allocated: {ours[key]:.0f} MB ({ours[key] / megapixels:.0f} MB/MP)")
        print(f"memory above the loaded model: baseline {base['job_peak_mb'] / megapixels:.0f} MB, "
              f"project {ours['job_peak_mb'] / megapixels:.0f} MB per working megapixel "
              f"(process peak RSS {ours['rss_mb']:.0f} MB, including torch and the model)")
        first, second = ours["style_targets_first"], ours["style_targets_second"]
        print(f"style targets: first photo {first['source']} (at start, in {ours['prepare_seconds']:.1f} s with the "
              f"model), second photo {second['seconds']:.2f} s ({second['source']}, computed "
              f"x{ours['second_computed']}); second photo total {ours['second_seconds']:.1f} s")


if __name__ == "__main__":
    main()
