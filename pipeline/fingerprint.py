"""What makes two jobs the same: the photo's bytes, the preset, and the preset's effective settings."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def file_hash(path: Path) -> str:
    """SHA-256 of a file's content (never follows a symlink: callers check the file type first)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=256)
def _memoised_hash(path: str, size: int, mtime_ns: int) -> str:
    return file_hash(Path(path))


def stable_file_hash(path: Path) -> str:
    """SHA-256 of a file photostyle reads again and again (style images, weights), memoised on
    (path, size, mtime) so a repeated lookup costs one stat."""
    info = path.stat()
    return _memoised_hash(str(path), info.st_size, info.st_mtime_ns)


def settings_hash(config: Any, preset_name: str) -> str:
    """Hash of everything that changes a preset's output: its settings, its style images' bytes, the model.

    Paths are replaced by the content hash of the files they name, so editing a
    style image in place makes the next photo new work, and moving the project
    folder does not.
    """
    preset = config.presets[preset_name]
    settings = preset.model_dump(mode="json")
    styles = [{"sha256": stable_file_hash(ref.image), "weight": ref.weight} for ref in preset.style_images]
    settings["style"] = styles
    document = {"preset": settings, "model": config.model.model_dump(mode="json")}
    encoded = json.dumps(document, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]
