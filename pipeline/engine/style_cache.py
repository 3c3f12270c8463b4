"""Style targets (per-layer Gram matrices) computed once, kept in memory and on disk.

A style's targets depend on the style image(s) and blend weights, the size they
are seen at, the layer set, the pooling and the network weights. So the second
photo of a preset spends nothing on its style, and a restarted daemon reads them
back from ``state/cache/style-targets/`` instead of running the network over the
style image again.

Colour preservation that prepares the style for the photo (``preserve_color:
histogram`` recolours it to the photo's colour mean and covariance, ``luminance``
matches its luminance to the photo's) makes the targets depend on the photo's
rounded colour statistics too; they join the key (``colour``). The cost: in those
modes a photo reuses targets only from a photo with the same rounded statistics
(the same photo again, in practice), so the second photo of a preset computes its
own, one forward pass over the style image per pyramid level.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.files.fileops import write_bytes_atomic

log = logging.getLogger(__name__)

Targets = dict[str, torch.Tensor]


def targets_key(*, styles: list[tuple[str, float]], long_edge: int, layers: tuple[str, ...], pooling: str,
                weights: str, colour: list[Any] | None = None) -> str:
    """A stable name for one set of targets: everything that determines them, hashed.

    ``colour``: how the style was prepared for a photo (the colour mode, its method and
    the photo's rounded colour statistics); None when the style is used as it is.
    """
    document: dict[str, Any] = {"styles": styles, "long_edge": long_edge, "layers": list(layers),
                                "pooling": pooling, "weights": weights, "version": 1}
    if colour is not None:  # absent otherwise, so targets cached before colour keys existed stay valid
        document["colour"] = colour
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Lookup:
    """Targets plus where they came from and what they cost this time."""

    targets: Targets
    source: str  # "memory" | "disk" | "computed"
    seconds: float


class StyleTargetCache:
    """Memory first, then ``folder`` (if any), then ``compute()``; what is computed is stored in both."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._memory: dict[tuple[str, str], Targets] = {}
        self.counts = {"memory": 0, "disk": 0, "computed": 0}  # lookups answered from each place

    def get(self, key: str, device: str, compute: Callable[[], Targets]) -> Lookup:
        began = time.perf_counter()
        memo = self._memory.get((key, device))
        if memo is not None:
            self.counts["memory"] += 1
            return Lookup(memo, "memory", 0.0)
        targets = self._read(key, device)
        source = "disk"
        if targets is None:
            targets = compute()
            source = "computed"
            self._write(key, targets)
        self._memory[(key, device)] = targets
        self.counts[source] += 1
        return Lookup(targets, source, time.perf_counter() - began)

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{key}.pt"

    def _read(self, key: str, device: str) -> Targets | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            loaded = torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # a damaged cache file is recomputed, never fatal
            log.warning("ignoring unreadable style cache %s (%s)", path, exc)
            return None
        return loaded if isinstance(loaded, dict) else None

    def _write(self, key: str, targets: Targets) -> None:
        path = self._path(key)
        if path is None:
            return
        buffer = io.BytesIO()
        torch.save({layer: gram.detach().cpu() for layer, gram in targets.items()}, buffer)
        try:
            write_bytes_atomic(path, buffer.getvalue())
        except OSError as exc:  # a read-only or full state folder only costs speed
            log.warning("could not store style cache %s (%s)", path, exc)
