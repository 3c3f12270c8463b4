"""Choosing the torch device from the config's ``device`` setting, and the CPU runtime's settings.

torch is imported inside the functions: :func:`configure_cpu_runtime` must run
before torch is first imported, and commands that need no network should not pay
for importing it.
"""

from __future__ import annotations

import os

from pipeline.errors import PhotostyleError


def configure_cpu_runtime() -> None:
    """Environment for torch's OpenMP threads; call before torch is first imported (OpenMP reads it once).

    ``OMP_WAIT_POLICY=PASSIVE``: a thread that finishes its share of an operation sleeps
    instead of spinning while it waits for the others. With the CPU shared with other
    processes (a desktop, a busy server), spinning threads take the cores the working
    threads need: measured on two cores at load average 8–10 (bench/evaluation_cost.py),
    2.7 s instead of 3.2–5.8 s per evaluation at 256 px. On a quiet machine it costs a
    little (about 15% at 128 px, nothing measurable at 256 px), so a value the user set
    (``ACTIVE`` for a machine photostyle has to itself) is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def set_cpu_threads(threads: int) -> None:
    """Give torch's CPU work ``threads`` threads (a Ray worker's reserved CPUs); torch is imported here."""
    import torch

    torch.set_num_threads(threads)


def resolve_device(spec: str) -> str:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must be present."""
    import torch

    if spec == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PhotostyleError(f"device {spec!r} requested, but CUDA is not available; use device: auto or cpu")
        index = int(spec.split(":", 1)[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise PhotostyleError(f"device {spec!r} requested, but only {torch.cuda.device_count()} CUDA device(s)")
    if spec == "mps" and not torch.backends.mps.is_available():
        raise PhotostyleError("device 'mps' requested, but Apple MPS is not available; use device: auto or cpu")
    return spec
