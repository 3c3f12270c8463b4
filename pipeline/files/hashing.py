"""Hashing file contents, with nothing but the standard library (no torch, no config, no job code).

Kept apart so that every module that needs a content hash (settings hashing, the
weights' identity, the style cache) can import it without pulling the rest in,
and without import circles (weights -> settings hash -> weights, before).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

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
