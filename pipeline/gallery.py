"""The gallery page: ``outbox/index.html``, one card per result, newest first.

It is built from the sidecars under the outbox, not from a list of its own, so
any result written by the job runner (``process``, the daemon) appears, and a
result deleted from the outbox disappears at the next rebuild. Rebuilding reads
only the small JSON sidecars and checks which thumbnails exist; it never decodes
an image, so the plugin can afford to rebuild after every job.

The page is one self-contained file: inline CSS, no script, no external URLs,
thumbnails by relative path, so it works from ``file://``, offline, and from a
synced folder. Everything that comes from file names or the config is escaped.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.fileops import write_text_atomic
from pipeline.sidecar import SUFFIX, SidecarError, load_record
from pipeline.thumbnails import KINDS, thumbnail_paths

log = logging.getLogger(__name__)

INDEX_NAME = "index.html"
LABELS = {"original": "Original", "style": "Style", "result": "Result"}


@dataclass
class Card:
    """One result as the gallery shows it."""

    output: Path
    record: dict[str, Any]
    created: datetime
    thumbnails: dict[str, Path]


def _sidecar_files(outbox: Path) -> Iterator[Path]:
    """Sidecars under the outbox whose result is still there; hidden folders (``.thumbs``) are skipped."""
    for folder, dirs, files in os.walk(outbox):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.endswith(SUFFIX) and not name.startswith("."):
                path = Path(folder) / name
                if path.with_name(name[: -len(SUFFIX)]).is_file():
                    yield path


def _created(record: dict[str, Any]) -> datetime:
    created = datetime.fromisoformat(str(record["created"]))
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def collect(outbox: Path) -> list[Card]:
    """Every result under ``outbox`` with a readable sidecar, newest first."""
    cards = []
    for path in _sidecar_files(outbox):
        try:
            record = load_record(path)
            created = _created(record)
        except (SidecarError, KeyError, ValueError) as exc:
            log.debug("gallery: skipping %s: %s", path, exc)
            continue
        output = path.with_name(path.name[: -len(SUFFIX)])
        cards.append(Card(output, record, created, thumbnail_paths(outbox, output)))
    cards.sort(key=lambda card: (card.created, str(card.output)), reverse=True)
    return cards


def _href(target: Path, outbox: Path) -> str:
    """A relative URL from the page to ``target``, percent-encoded and HTML-escaped."""
    relative = Path(os.path.relpath(target, outbox)).as_posix()
    return html.escape(quote(relative), quote=True)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _figure(kind: str, card: Card, outbox: Path) -> str:
    thumbnail = card.thumbnails[kind]
    label = LABELS[kind]
    if thumbnail.is_file():
        image = f'<img src="{_href(thumbnail, outbox)}" alt="{label}" loading="lazy">'
        if kind == "result":  # the result thumbnail opens the full result
            box = f'<a class="thumb" href="{_href(card.output, outbox)}">{image}</a>'
        else:
            box = f'<div class="thumb">{image}</div>'
    else:
        box = '<div class="thumb missing">not available</div>'
    return f"<figure>{box}<figcaption>{label}</figcaption></figure>"


def _card(card: Card, outbox: Path) -> str:
    record = card.record
    source_name = Path(str(record.get("input", ""))).name
    seconds = record.get("seconds")
    meta = [f'<span class="preset">{html.escape(str(record.get("preset", "?")))}</span>']
    if isinstance(seconds, (int, float)):
        meta.append(html.escape(_duration(float(seconds))))
    meta.append(f'<time datetime="{html.escape(card.created.isoformat())}">{_when(card.created)}</time>')
    figures = "".join(_figure(kind, card, outbox) for kind in KINDS)
    return (
        '<article class="card">'
        f'<div class="trio">{figures}</div>'
        '<div class="caption">'
        f'<div class="name" title="from {html.escape(source_name, quote=True)}">'
        f"{html.escape(card.output.name)}</div>"
        f'<div class="meta">{" · ".join(meta)}</div>'
        "</div></article>"
    )


STYLE = """
:root { color-scheme: light dark; --bg: #f3f2ee; --card: #ffffff; --ink: #1f1f23; --muted: #6c6c74;
  --frame: #e6e4de; --chip: #ecebf7; --chip-ink: #3b3a8c; }
@media (prefers-color-scheme: dark) { :root { --bg: #16161a; --card: #222227; --ink: #ececf1;
  --muted: #9c9ca6; --frame: #2d2d33; --chip: #2f2e52; --chip-ink: #c9c8ff; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { padding: 24px 28px 4px; }
h1 { margin: 0; font-size: 22px; font-weight: 650; letter-spacing: -0.01em; }
header p { margin: 4px 0 0; color: var(--muted); }
main { display: grid; gap: 20px; padding: 16px 28px 40px;
  grid-template-columns: repeat(auto-fill, minmax(min(100%, 400px), 1fr)); }
.card { background: var(--card); border-radius: 12px; overflow: hidden;
  box-shadow: 0 1px 2px rgba(0, 0, 0, .06), 0 4px 14px rgba(0, 0, 0, .06); }
.trio { display: grid; grid-template-columns: repeat(3, 1fr); gap: 6px; padding: 10px 10px 0; }
figure { margin: 0; min-width: 0; }
.thumb { display: block; aspect-ratio: 1; width: 100%; overflow: hidden; border-radius: 6px;
  background: var(--frame); }
.thumb img { display: block; width: 100%; height: 100%; object-fit: cover; }
a.thumb:hover img { opacity: .9; }
.missing { display: flex; align-items: center; justify-content: center; color: var(--muted); font-size: 12px; }
figcaption { padding-top: 4px; text-align: center; font-size: 11px; letter-spacing: .06em;
  text-transform: uppercase; color: var(--muted); }
.caption { padding: 8px 14px 12px; }
.name { font-weight: 600; overflow-wrap: anywhere; }
.meta { color: var(--muted); font-size: 13px; }
.preset { display: inline-block; padding: 0 8px; border-radius: 999px; background: var(--chip);
  color: var(--chip-ink); font-weight: 500; }
.empty { grid-column: 1 / -1; color: var(--muted); }
"""


def render(cards: list[Card], outbox: Path, generated: datetime | None = None) -> str:
    """The whole page for ``cards`` (already in display order)."""
    generated = generated or datetime.now(UTC)
    count = f"{len(cards)} result" + ("" if len(cards) == 1 else "s")
    body = "\n".join(_card(card, outbox) for card in cards) or (
        '<p class="empty">No results yet: drop a photo into the inbox or run <code>photostyle process</code>.</p>'
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>photostyle gallery</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<header><h1>photostyle gallery</h1><p>{count} · updated {_when(generated)}</p></header>\n"
        f"<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def write_gallery(outbox: Path) -> tuple[Path, int]:
    """Rebuild ``outbox/index.html`` from the sidecars, atomically; return its path and the number of cards."""
    cards = collect(outbox)
    target = Path(outbox) / INDEX_NAME
    write_text_atomic(target, render(cards, outbox))
    return target, len(cards)
