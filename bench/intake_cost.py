"""What intake's completeness evidence costs per photo: hashing alone, then with SEEK_HOLE and the zero-run scan.

    python bench/intake_cost.py [--megabytes 8] [--runs 20]

Prints the median wall time of each over the runs, on a file of random bytes (a
compressed photo's bytes look random) in a temp folder on this machine's disk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.files.completeness import ZeroRunFinder, first_hole
from pipeline.files.photo_file import hash_descriptor, open_regular


def timed(path: Path, evidence: bool) -> float:
    began = time.perf_counter()
    fd, info = open_regular(path)
    try:
        if evidence:
            finder = ZeroRunFinder()
            first_hole(fd, info.st_size)
            hash_descriptor(fd, watch=finder.feed)
        else:
            hash_descriptor(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "photo.jpg"
        path.write_bytes(os.urandom(int(args.megabytes * 1e6)))
        timed(path, True)  # page cache warm, as for a photo just written by a sync client
        for evidence in (False, True):
            times = [timed(path, evidence) for _ in range(args.runs)]
            label = "hash + holes + zero runs" if evidence else "hash only"
            print(f"{label:26s} {args.megabytes:g} MB: median {statistics.median(times) * 1000:.1f} ms "
                  f"(min {min(times) * 1000:.1f}, {args.runs} runs)")


if __name__ == "__main__":
    main()
