"""Where a fast preset's model lives, and whether it is current: file names and the sidecar, without torch.

``state/models/<preset>.pt`` holds the network, ``<preset>.json`` beside it how it
was trained (the preset's objective and its hash, the weights, the photos, the
loss curves), and ``<preset>.checkpoint.pt`` the training state while a run is
unfinished. The sidecar is written last and names the model file's SHA-256, so
a model whose write was cut short never passes for a finished one.

``status`` reads these without importing torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "photostyle-fast-model/1"


@dataclass(frozen=True)
class ModelFiles:
    model: Path
    sidecar: Path
    checkpoint: Path

    @classmethod
    def of(cls, state: Path, preset: str) -> ModelFiles:
        folder = state / "models"
        return cls(folder / f"{preset}.pt", folder / f"{preset}.json", folder / f"{preset}.checkpoint.pt")


def read_sidecar(files: ModelFiles) -> dict[str, Any] | None:
    """The sidecar as a dict; None when there is none or it cannot be read."""
    try:
        document = json.loads(files.sidecar.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) and document.get("format") == FORMAT else None


def changed_keys(trained: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The objective's keys whose value differs between training and now (``style_weight``, ``weights``, …)."""
    changed = []
    for section in ("preset", "model"):
        before, after = trained.get(section, {}), now.get(section, {})
        changed += [key for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]
    return changed


def problem(files: ModelFiles, objective: dict[str, Any], objective_hash: str) -> str | None:
    """Why the preset's model cannot be used now (no model, stale, unreadable); None when it is current."""
    sidecar = read_sidecar(files)
    if sidecar is None:
        return "no trained model"
    if sidecar.get("objective_hash") != objective_hash:
        changed = changed_keys(sidecar.get("objective", {}), objective)
        return f"model is stale: {', '.join(changed) or 'the objective'} changed since it was trained"
    return None
