"""Cost of updating the gallery after one job, by outbox size: full rebuild vs the index of cards.

Not a test: it prints figures. It fills a temp outbox with N small results and
sidecars (as photostyle writes them, no engine), then times, for each N, the
full rebuild from every sidecar (``photostyle gallery``, and what every job did
before the index) and the per-job update (:func:`pipeline.gallery.page.add_to_gallery`:
read the index, add one card, write the index and the page). Example::

    python bench/gallery_update.py --sizes 100 1000 5000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.gallery.page import add_to_gallery, write_gallery


def _result(outbox: Path, index: int) -> Path:
    """One result (a few bytes: the gallery never decodes it) and a sidecar of a real sidecar's size."""
    output = outbox / "tiny" / f"photo{index:06d}.jpg"
    output.write_bytes(b"\xff\xd8result")
    record = {
        "sidecar_format": 1, "photostyle": "bench", "job_id": f"{index:012x}", "preset": "tiny",
        "input": f"/inbox/photo{index:06d}.jpg", "output": str(output), "seconds": 12.5,
        "settings": {"style": "/styles/starry_night.jpg", "size": 512, "iterations": 300, "padding": "x" * 1500},
        "report": {"engine": {"name": "vgg19", "device": "cpu"}, "loss": {"initial": {}, "final": {}}},
        "created": f"2030-01-01T00:00:00.{index:06d}+00:00",
    }
    Path(f"{output}.json").write_text(json.dumps(record, indent=2))
    return Path(f"{output}.json")


def _median_seconds(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'results':>8} {'rebuild s':>10} {'per job s':>10}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            outbox = Path(folder) / "outbox"
            (outbox / "tiny").mkdir(parents=True)
            for index in range(size):
                _result(outbox, index)
            rebuild = _median_seconds(lambda: write_gallery(outbox), args.repeats)
            extra = iter([_result(outbox, index) for index in range(size, size + args.repeats)])
            per_job = _median_seconds(lambda: add_to_gallery(outbox, next(extra)), args.repeats)
            print(f"{size:>8} {rebuild:>10.3f} {per_job:>10.3f}")


if __name__ == "__main__":
    main()
