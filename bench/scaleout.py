"""Scale-out on Ray: photos per minute with 1 and 2 workers, and what Ray costs per photo.

Not a test: it prints figures. It runs the real executors and publishes every
result as ``process`` does (result + sidecar in a temp outbox):

- throughput: ``--photos`` photos through 1, then 2 Ray workers (one torch thread
  each, ``cpus_per_worker: 1``), after each worker has rendered one photo (the
  first loads torch's kernels); scaling efficiency = photos/minute with 2 workers
  over 1 (target: at least 1.8);
- overhead: ``--latency`` photos one at a time, each timed from ``submit`` to its
  result recorded (published), minus the time the worker itself spent rendering
  it, on one Ray worker and on the local executor (one thread too); Ray's overhead
  is the difference (target: under 50 ms).

Ray runs a private runtime on this machine unless ``--address`` names a cluster.
Random weights are fine (cost does not depend on the filters). Example::

    python bench/scaleout.py --photos 16 --size 96 --iterations 20 [--repeat 2]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from pipeline.app import App, load_app
from pipeline.job.context import WorkerResources
from pipeline.execution.local import Executor, LocalExecutor, Submission
from pipeline.job.runner import JobRequest, Rendered, publish

REPO = Path(__file__).resolve().parent.parent


def photo_bytes(seed: int, size: tuple[int, int]) -> bytes:
    """A photo-like JPEG: gradients, a disc and noise (different for each seed)."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.stack([255 * x / width, 255 * y / height, 128 + 100 * np.sin(x / 5.0 + seed)], axis=-1)
    image += rng.normal(0, 8, image.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_config(folder: Path, args: argparse.Namespace, workers: int | None) -> Path:
    executor: Any = "local"
    if workers is not None:
        executor = {"kind": "ray", "workers": workers, "cpus_per_worker": 1, "max_in_flight": 2}
        if args.address:
            executor["address"] = args.address
    data = {
        "device": "cpu", "model": {"weights": args.weights}, "default_preset": "bench",
        "plugins": {"disabled": ["gallery"]}, "executor": executor,
        "presets": {"bench": {"style": str(REPO / "styles" / "starry_night.jpg"), "size": args.size,
                              "iterations": args.iterations, "precision": "fp32",
                              "schedule": {"pyramid": [], "pyramid_iterations": [], "tolerance": 0}}},
    }
    path = folder / f"config-{workers or 'local'}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Run:
    """Submit photos while the executor has room; publish what comes back; time each photo."""

    def __init__(self, app: App, executor: Executor, outbox: Path) -> None:
        self.app, self.executor, self.outbox = app, executor, outbox
        self.resources = WorkerResources(config=app.config, device="coordinator")

    def photos(self, seeds: list[int], size: tuple[int, int], one_at_a_time: bool = False) -> list[dict[str, float]]:
        pending = list(seeds)
        sent: dict[str, tuple[float, JobRequest]] = {}
        timings: list[dict[str, float]] = []
        limit = 1 if one_at_a_time else None
        while pending or sent:
            while pending and self.executor.free_slots() > 0 and (limit is None or len(sent) < limit):
                seed = pending.pop(0)
                request = JobRequest(source=Path(f"photo{seed}.jpg"), preset="bench", output_dir=self.outbox,
                                     data=photo_bytes(seed, size))
                batch_id = uuid.uuid4().hex[:12]
                sent[batch_id] = (time.perf_counter(), request)
                self.executor.submit(Submission(batch_id, [request]))
            self.executor.wait(0.005)
            for completion in self.executor.completions():
                submitted, request = sent.pop(completion.batch_id)
                [outcome] = completion.outcomes
                if not isinstance(outcome, Rendered):
                    raise SystemExit(f"photo failed: {outcome}")
                ctx = completion.contexts[0] if completion.contexts else None
                publish(outcome, request, self.app.host, self.resources, ctx=ctx)
                recorded = time.perf_counter()
                timings.append({"submit_to_recorded": recorded - submitted, "render": outcome.seconds,
                                "recorded": recorded})
        return timings


class LocalWait(LocalExecutor):
    """The local executor, woken by its own completions (the daemon's loop does the same with its event)."""

    def wait(self, timeout: float) -> None:
        self.wake.wait(timeout)
        self.wake.clear()


def measure(args: argparse.Namespace, folder: Path, workers: int | None) -> dict[str, Any]:
    app = load_app(write_config(folder, args, workers))
    if workers is None:
        executor: Executor = LocalWait(threading.Event())
    else:
        from pipeline.execution.ray.executor import RayExecutor

        executor = RayExecutor(app.config.executor, threading.Event(), wait_for_cluster=False)
    began = time.perf_counter()
    executor.start(app)
    started = time.perf_counter() - began
    run = Run(app, executor, folder / f"outbox-{workers or 'local'}")
    size = (args.size, args.size * 3 // 4)
    try:
        run.photos(list(range(1000, 1000 + (workers or 1) * 2)), size)  # warm-up: each worker's first photos
        figures: dict[str, Any] = {"start_seconds": started}
        if args.photos:
            first = time.perf_counter()
            timings = run.photos(list(range(args.photos)), size)
            elapsed = max(t["recorded"] for t in timings) - first
            figures["photos_per_minute"] = 60 * args.photos / elapsed
            figures["render_seconds"] = statistics.mean(t["render"] for t in timings)
        if args.latency and workers in (None, 1):
            timings = run.photos(list(range(2000, 2000 + args.latency)), size, one_at_a_time=True)
            figures["overhead_ms"] = 1000 * statistics.median(t["submit_to_recorded"] - t["render"] for t in timings)
    finally:
        executor.shutdown(time.monotonic() + 5)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=16, help="photos per throughput run")
    parser.add_argument("--latency", type=int, default=8, help="photos timed one at a time for the overhead")
    parser.add_argument("--size", type=int, default=96, help="working size (long edge, px)")
    parser.add_argument("--iterations", type=int, default=20, help="evaluations per photo")
    parser.add_argument("--weights", default="random", help="model.weights (random: cost is the same)")
    parser.add_argument("--address", help="executor.address of a Ray cluster (default: a private runtime)")
    parser.add_argument("--repeat", type=int, default=1, help="Ray runs of each size, alternated (means printed)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the local executor's worker thread: one thread, as each Ray worker has
    print(f"cpus: {os.cpu_count()}, loadavg before: {Path('/proc/loadavg').read_text().split()[:3]}")
    print(f"{args.photos} photos of {args.size}x{args.size * 3 // 4} px, {args.iterations} evaluations, fp32, "
          f"one torch thread per worker")
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray, 1 worker": [], "ray, 2 workers": []}
    with tempfile.TemporaryDirectory(prefix="photostyle-scaleout-") as temp:
        runs["local"].append(measure(args, Path(temp), None))
        for _ in range(args.repeat):  # alternated, so a change in the machine's load hits both alike
            runs["ray, 1 worker"].append(measure(args, Path(temp), 1))
            runs["ray, 2 workers"].append(measure(args, Path(temp), 2))
    print(f"loadavg after: {Path('/proc/loadavg').read_text().split()[:3]}")
    print(f"{'executor':<16} {'start s':>8} {'photos/min':>11} {'render s/photo':>15} {'overhead ms':>12}")
    for name, measured in runs.items():
        for figures in measured:
            overhead = f"{figures['overhead_ms']:.1f}" if "overhead_ms" in figures else "-"
            print(f"{name:<16} {figures['start_seconds']:>8.1f} {figures.get('photos_per_minute', 0):>11.1f} "
                  f"{figures.get('render_seconds', 0):>15.2f} {overhead:>12}")
    results = {name: {key: statistics.mean(run[key] for run in measured) for key in measured[0]}
               for name, measured in runs.items()}
    one, two = results["ray, 1 worker"], results["ray, 2 workers"]
    if args.photos:
        print(f"scaling efficiency, 2 workers over 1: {two['photos_per_minute'] / one['photos_per_minute']:.2f}x "
              f"(target >= 1.8x); the same ratio from the workers' own render time: "
              f"{2 * one['render_seconds'] / two['render_seconds']:.2f}x (below 2 when the cores are shared)")
    if args.latency:
        extra = one["overhead_ms"] - results["local"]["overhead_ms"]
        print(f"Ray's overhead per photo, submit to result recorded, over the local executor: {extra:.1f} ms "
              f"(target < 50 ms)")


if __name__ == "__main__":
    main()
