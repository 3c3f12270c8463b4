"""Start-up: seconds from ``photostyle process PHOTO`` starting to its first objective evaluation.

Not a test: it prints figures. Each run is a fresh process (``python -m pipeline process``
as a user types it), timed from just before it is spawned; the child notes when
each phase ends (torch imported, config and plugins loaded, worker prepared —
weights and style targets —, first evaluation done) and exits there. Runs share one state folder,
so the first run pays for the trimmed weights copy and the style targets, and the
later ones show the warm start (weights in the page cache, targets on disk).

``--repo`` times another checkout too (e.g. an older commit unpacked with
``git archive``), interleaved with this one so machine load affects both alike::

    python bench/startup.py --weights HED_VGG19.pth --photo DUSK_PHOTO.jpg \\
        --runs 4 [--repo /tmp/base]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.benchmark import _config  # noqa: E402  (the benchmark's config: preset at a size, these weights)

CHILD = r"""
import json, os, sys, time
marks = {}
def mark(name):
    marks.setdefault(name, time.time())
try:  # what the photostyle command does first (older checkouts have no such step)
    from pipeline.engine.device import configure_cpu_runtime
    configure_cpu_runtime()
except ImportError:
    pass
import torch
mark("torch imported")
import pipeline.app, pipeline.execution.worker, pipeline.engine.nst.engine as engine
load_app, prepare, optimize = pipeline.app.load_app, pipeline.execution.worker.Worker.prepare, engine.optimize
def timed_load_app(*a, **k):
    app = load_app(*a, **k); mark("config and plugins loaded"); return app
def timed_prepare(*a, **k):
    out = prepare(*a, **k); mark("worker prepared (weights, style targets)"); return out
def timed_optimize(objective, start, budget, **k):
    def first(terms):
        mark("first evaluation done")
        with open(os.environ["STARTUP_MARKS"], "w") as f:
            json.dump(marks, f)
        os._exit(0)  # the rest of the photo is not start-up
    k["on_evaluation"] = first
    return optimize(objective, start, budget, **k)
pipeline.app.load_app = timed_load_app
pipeline.execution.worker.Worker.prepare = timed_prepare
engine.optimize = timed_optimize
from pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


def one_run(repo: Path, config: Path, photo: Path, out: Path) -> dict[str, float]:
    marks_file = Path(tempfile.mkstemp(prefix="startup-", suffix=".json")[1])
    env = {**os.environ, "PYTHONPATH": str(repo), "STARTUP_MARKS": str(marks_file)}
    command = [sys.executable, "-c", CHILD, "process", str(photo), "-c", str(config), "-o", str(out)]
    began = time.time()
    done = subprocess.run(command, env=env, cwd=repo, capture_output=True, text=True)
    if done.returncode != 0 or not marks_file.stat().st_size:
        raise SystemExit(f"process failed in {repo}:\n{done.stderr}")
    marks = json.loads(marks_file.read_text())
    marks_file.unlink()
    return {name: at - began for name, at in marks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--photo", required=True)
    parser.add_argument("--preset", default="starry_night")
    parser.add_argument("--style", help="style image (default: the preset's)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--repo", type=Path, action="append", default=[], help="another checkout to time too")
    args = parser.parse_args()
    args.device, args.precision = "cpu", None
    repos = [REPO, *[repo.resolve() for repo in args.repo]]
    folders = {repo: Path(tempfile.mkdtemp(prefix="photostyle-startup-")) for repo in repos}
    configs = {repo: _config(folders[repo], args, args.size, baseline=False) for repo in repos}
    results: dict[Path, list[dict[str, float]]] = {repo: [] for repo in repos}
    for run in range(args.runs):
        for repo in repos:  # interleaved: load on the machine affects every checkout alike
            loadavg = Path("/proc/loadavg").read_text().split()[0]
            marks = one_run(repo, configs[repo], Path(args.photo).resolve(), folders[repo] / f"out{run}")
            results[repo].append(marks)
            phases = "  ".join(f"{name} {seconds:.2f}" for name, seconds in marks.items())
            print(f"{repo.name:>12} run {run + 1}: {phases}   (loadavg {loadavg})", flush=True)
    print("\nseconds from start to the first evaluation (runs after the first: warm)")
    for repo in repos:
        warm = sorted(marks["first evaluation done"] for marks in results[repo][1:])
        first = results[repo][0]["first evaluation done"]
        median = warm[len(warm) // 2] if warm else float("nan")
        print(f"{repo}: first run {first:.2f} s, warm median {median:.2f} s (min {min(warm, default=float('nan')):.2f})")


if __name__ == "__main__":
    main()
