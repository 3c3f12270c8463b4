"""``photostyle gallery``: rebuild ``outbox/index.html`` from the sidecars.

The gallery plugin keeps the page current after every job; this command is for
when it is gone or stale (deleted, results removed by hand, the plugin disabled).
A result whose thumbnails are missing gets them from the files that still exist
(the result always; the original and style image only if they are still where the
sidecar says), once: later rebuilds find them and decode nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.app import App
from pipeline.errors import PhotostyleError
from pipeline.gallery import Card, collect, write_gallery
from pipeline.thumbnails import thumbnail_from_file

log = logging.getLogger(__name__)


def _first_style(settings: dict[str, Any]) -> Path | None:
    style = settings.get("style")
    if isinstance(style, list):
        style = style[0].get("image") if style and isinstance(style[0], dict) else None
    return Path(style) if isinstance(style, str) else None


def _sources(card: Card) -> dict[str, Path | None]:
    record = card.record
    return {
        "original": Path(record["input"]) if isinstance(record.get("input"), str) else None,
        "style": _first_style(record.get("settings") or {}),
        "result": card.output,
    }


def fill_missing_thumbnails(cards: list[Card], max_pixels: int) -> int:
    """Make the thumbnails that are missing and whose source still exists; return how many were made."""
    made = 0
    for card in cards:
        for kind, source in _sources(card).items():
            target = card.thumbnails[kind]
            if target.is_file() or source is None or not source.is_file():
                continue
            try:
                thumbnail_from_file(source, target, max_pixels)
                made += 1
            except (OSError, PhotostyleError) as exc:
                log.warning("%s: %s thumbnail not made: %s", card.output, kind, exc)
    return made


def gallery(app: App) -> str:
    """Rebuild the page; the line to print says where it is and how many results it lists."""
    outbox = app.config.outbox
    fill_missing_thumbnails(collect(outbox) if outbox.is_dir() else [], app.config.limits.max_pixels)
    path, count = write_gallery(outbox)
    return f"{path} ({count} result{'' if count == 1 else 's'})"
