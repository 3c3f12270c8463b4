"""``photostyle gallery``: rebuild ``outbox/index.html`` from the sidecars.

The gallery plugin keeps the page current after every job; this command is for
when it is gone or stale (deleted, results removed by hand, the plugin disabled).
A result whose thumbnails are missing gets them from the files that still exist
(the result always; the original and style image only if they are still where the
sidecar says), once: later rebuilds find them and decode nothing.

A sidecar is untrusted (the outbox is a synced folder), and it names the
original and the style image by path. Publishing a thumbnail of whatever path a
sidecar names would leak any image the user can read, so only files photostyle
itself put there are decoded: an original still in the inbox or ``processed/``,
a style image the config uses or in the styles folder; each a regular file,
never a link.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from pipeline.app import App
from pipeline.errors import PhotostyleError
from pipeline.gallery.page import Card, collect, write_gallery
from pipeline.job.sidecar import record_path
from pipeline.files.textsafe import printable
from pipeline.gallery.thumbnails import is_inside, thumbnail_from_file

log = logging.getLogger(__name__)


def _first_style(settings: dict[str, Any]) -> Path | None:
    style = settings.get("style")
    if isinstance(style, list):
        style = style[0].get("image") if style and isinstance(style[0], dict) else None
    return Path(style) if isinstance(style, str) else None


def _sources(card: Card) -> dict[str, Path | None]:
    record = card.record
    return {
        "original": record_path(record, "input"),
        "style": _first_style(record.get("settings") or {}),
        "result": card.output,
    }


class TrustedSources:
    """Which files a rebuild may decode: where photostyle's own originals and style images live."""

    def __init__(self, config: Any) -> None:
        self.roots = {
            "original": [Path(config.inbox), Path(config.processed)],
            "style": [Path(config.styles)],
            "result": [Path(config.outbox)],
        }
        self.styles = {
            Path(ref.image).resolve() for preset in config.presets.values() for ref in preset.style_images
        }

    def allows(self, kind: str, path: Path) -> bool:
        """Whether ``path`` is a regular file (not a link) where a ``kind`` source of photostyle's is."""
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                return False
        except OSError:
            return False
        if kind == "style" and path.resolve() in self.styles:
            return True
        return any(is_inside(path, root) for root in self.roots[kind])


def fill_missing_thumbnails(cards: list[Card], max_pixels: int, trusted: TrustedSources) -> int:
    """Make the thumbnails that are missing and whose trusted source still exists; return how many were made."""
    made = 0
    for card in cards:
        targets = card.thumbnails
        for kind, source in _sources(card).items():
            if kind in card.present or source is None or not trusted.allows(kind, source):
                continue
            try:
                thumbnail_from_file(source, targets[kind], max_pixels)
                card.present.add(kind)
                made += 1
            except (OSError, ValueError, PhotostyleError) as exc:
                log.warning("%s: %s thumbnail not made: %s", printable(card.output), kind, printable(exc))
    return made


def gallery(app: App) -> str:
    """Rebuild the page; the line to print says where it is and how many results it lists."""
    outbox = app.config.outbox
    cards = collect(outbox) if outbox.is_dir() else []
    fill_missing_thumbnails(cards, app.config.limits.max_pixels, TrustedSources(app.config))
    path, count = write_gallery(outbox, cards)
    return printable(f"{path} ({count} result{'' if count == 1 else 's'})")
