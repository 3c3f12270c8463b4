"""Choosing the torch device from the config's ``device`` setting."""

from __future__ import annotations

import torch

from pipeline.errors import PhotostyleError


def resolve_device(spec: str) -> str:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must be present."""
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
