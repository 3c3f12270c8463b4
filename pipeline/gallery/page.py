"""The gallery page: ``outbox/index.html``, one card per result, newest first.

Two ways to build it:

- :func:`write_gallery` (``photostyle gallery``) rebuilds from the sidecars under
  the outbox, so any result written by the job runner (``process``, the daemon)
  appears, and a result deleted from the outbox disappears.
- :func:`add_to_gallery` (after each job, the gallery plugin) adds one card to an
  index of cards kept beside the thumbnails (``outbox/.thumbs/.gallery.json``)
  and renders the page from it. It reads the one new sidecar only, so a job
  costs the same with ten results in the outbox or ten thousand; it still drops
  the cards of results deleted since (one ``lstat`` each, plus one per folder).

The outbox is a synced folder others can write, so everything found there is
untrusted: only regular files count (symlinks, FIFOs and devices are skipped
and never opened or followed), sidecars are read without following links or
blocking, at most a few MB, a card's result is where its sidecar is (never a
path the sidecar names), and an entry that is odd in any way is skipped with a
warning, never fatal. The index is a cache others can write too: each of its
entries passes the very check the rebuild applies (:func:`check_result_path`:
no hidden part, every folder a real folder, never a link to one, the result a
regular file), so a planted entry cannot put a link out of the outbox on the
page. If the index is missing or damaged, the page is rebuilt from the sidecars. Updates take a lock (``flock`` on
``.thumbs/.gallery.lock``) so ``process`` and the daemon never lose each
other's cards.

The page is one self-contained file: inline CSS, no script, no external URLs,
thumbnails by relative path, so it works from ``file://``, offline, and from a
synced folder. Everything that comes from file names or the config is made
printable and escaped; URLs percent-encode a name's exact bytes.
"""

from __future__ import annotations

import fcntl
import html
import json
import logging
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.config import GALLERY_PAGE
from pipeline.files.fileops import name_max, read_regular_file, write_text_atomic
from pipeline.job.sidecar import SUFFIX, SidecarError, load_record, path_fields, record_path, sidecar_path
from pipeline.files.textsafe import printable, readable
from pipeline.gallery.thumbnails import KINDS, THUMBS_DIR, relative_to_outbox, thumbnail_relatives, thumbnails_of

log = logging.getLogger(__name__)

INDEX_NAME = GALLERY_PAGE  # a preset of this name is refused by the config
CARDS_NAME = ".gallery.json"  # in outbox/.thumbs: dot-named, so never a preset's thumbnail folder
OLD_LOCK_NAME = ".gallery.lock"  # what versions before the folder lock left in outbox/.thumbs
CARDS_FORMAT = 1
CARDS_MAX_BYTES = 256 * 1024 * 1024  # ~1 million cards; a larger file is not ours
LABELS = {"original": "Original", "style": "Style", "result": "Result"}
_FITTED_SIDECAR = re.compile(r"~[0-9a-f]{8}" + re.escape(SUFFIX) + "$")


@dataclass
class Card:
    """One result as the gallery shows it.

    ``record`` is the full sidecar record when built from the sidecars, or the
    few keys the page shows (preset, seconds, input) when read from the index.
    ``present`` says which thumbnails existed when the card was made, so the page
    is rendered without touching the disk per card.
    """

    outbox: Path
    relative: str  # the result's path under the outbox, "/"-separated: the card's identity in the index
    record: dict[str, Any]
    created: datetime
    present: set[str] = field(default_factory=set)

    @property
    def output(self) -> Path:
        return self.outbox / self.relative

    @property
    def thumbnails(self) -> dict[str, Path]:
        return thumbnails_of(self.outbox, self.relative)


class NotACard(Exception):
    """An outbox entry the gallery does not show; ``str()`` is the reason to log (empty: not worth a warning)."""


def _warn_skip(path: Path, reason: object) -> None:
    log.warning("gallery: skipping %s: %s", printable(path), printable(reason))


def _is_regular(path: Path | str) -> bool:
    """Whether ``path`` itself (not a link's target) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _sidecar_files(outbox: Path) -> Iterator[Path]:
    """Candidate sidecars under the outbox; hidden folders (``.thumbs``) and linked folders are not entered."""
    def unreadable(error: OSError) -> None:
        _warn_skip(Path(error.filename or outbox), error.strerror or error)

    for folder, dirs, files in os.walk(outbox, onerror=unreadable):  # followlinks=False: never leaves the outbox
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.endswith(SUFFIX) and not name.startswith("."):
                yield Path(folder) / name


def _created(record: dict[str, Any]) -> datetime:
    created = datetime.fromisoformat(str(record["created"]))
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def _output_of(sidecar: Path) -> tuple[Path, dict[str, Any] | None]:
    """The result a sidecar belongs to (beside it; ``NotACard`` if it is gone or odd), and the record if read."""
    output = sidecar.with_name(sidecar.name[: -len(SUFFIX)])
    record = None
    if not os.path.lexists(output) and _FITTED_SIDECAR.search(sidecar.name):
        # a result whose name was too long for "NAME.json": its sidecar got a shortened name
        record = _load(sidecar)
        named = record_path(record, "output")
        if named is not None and sidecar_path(sidecar.parent / named.name) == sidecar:
            output = sidecar.parent / named.name
    if not os.path.lexists(output):
        raise NotACard("")  # the result was deleted: not worth a warning
    if not _is_regular(output):
        raise NotACard(f"{printable(output.name)} is not a regular file (a link, folder or special file)")
    return output, record


def _load(sidecar: Path) -> dict[str, Any]:
    try:
        return load_record(sidecar, follow_links=False)
    except SidecarError as exc:
        reason = str(exc)
        raise NotACard(reason.removeprefix(f"{printable(sidecar)}: ")) from None


def _present(outbox: Path, relative: str) -> set[str]:
    """The thumbnails of ``relative`` that are regular files reached through real folders (no link is trusted)."""
    limit = name_max(Path(outbox))
    return {kind for kind, thumbnail in thumbnail_relatives(relative, limit).items()
            if _real_path_problem(outbox, thumbnail.split("/")) is None}


def _real_path_problem(outbox: Path, parts: list[str], folders: set[str] | None = None) -> str | None:
    """Why ``outbox/<parts>`` is not a regular file reached through real folders; None when it is.

    Every component is ``lstat``-ed, never followed: each folder must be a folder
    itself (not a link to one), the last part a regular file. ``""`` means it is
    simply gone. ``folders``, when given, caches folder prefixes already found real
    (one check per folder for a whole index).
    """
    for end in range(1, len(parts)):
        prefix = "/".join(parts[:end])
        if folders is not None and prefix in folders:
            continue
        try:
            mode = os.lstat(os.path.join(outbox, prefix)).st_mode
        except FileNotFoundError:
            return ""
        except OSError as exc:
            return f"{printable(prefix)}: {printable(exc.strerror or exc)}"
        if not stat.S_ISDIR(mode):
            return f"{printable(prefix)} is not a folder in the outbox (a link, file or special file)"
        if folders is not None:
            folders.add(prefix)
    try:
        mode = os.lstat(os.path.join(outbox, *parts)).st_mode
    except FileNotFoundError:
        return ""
    except OSError as exc:
        return printable(exc.strerror or exc)
    if not stat.S_ISREG(mode):
        return f"{printable(parts[-1])} is not a regular file (a link, folder or special file)"
    return None


def check_result_path(outbox: Path, relative: str | None, folders: set[str] | None = None) -> str:
    """``relative`` if it names a result the gallery may show, else ``NotACard`` (empty reason: it is gone).

    The one rule for both ways of building the page, the same one the rebuild's
    walk of the outbox follows: a "/"-separated path under the outbox, no part
    empty, ``.``, ``..`` or hidden (``.thumbs`` and other dot-folders are never
    entered), every folder a real folder (a linked folder is never entered, so it
    cannot lead out of the outbox), and the result a regular file.
    """
    parts = relative.split("/") if relative else []
    if not parts or any(part in ("", ".", "..") for part in parts):
        raise NotACard(f"names {printable(relative)}, which is not in the outbox")
    if any(part.startswith(".") for part in parts):
        raise NotACard(f"names {printable(relative)}, which is hidden (the gallery never shows hidden files)")
    problem = _real_path_problem(outbox, parts, folders)
    if problem is not None:
        raise NotACard(problem and f"names {printable(relative)}: {problem}")
    return relative


def card_from_sidecar(outbox: Path, sidecar: Path) -> Card:
    """The card of one sidecar under ``outbox``; ``NotACard`` when it is not a result photostyle can show."""
    if not _is_regular(sidecar):
        raise NotACard("not a regular file (a link, folder or special file)")
    output, record = _output_of(sidecar)
    if record is None:
        record = _load(sidecar)
    try:
        created = _created(record)
        relative = relative_to_outbox(outbox, output).as_posix()
    except (KeyError, ValueError, TypeError) as exc:
        raise NotACard(f"not a usable sidecar ({type(exc).__name__}: {exc})") from None
    check_result_path(outbox, relative)
    return Card(Path(outbox), relative, record, created, _present(outbox, relative))


def _newest_first(cards: list[Card]) -> list[Card]:
    return sorted(cards, key=lambda card: (card.created, os.fsencode(card.relative)), reverse=True)


def collect(outbox: Path) -> list[Card]:
    """Every result under ``outbox`` with a readable sidecar, newest first (reads every sidecar)."""
    cards = []
    for path in _sidecar_files(outbox):
        try:
            cards.append(card_from_sidecar(outbox, path))
        except NotACard as skip:
            if str(skip):
                _warn_skip(path, skip)
    return _newest_first(cards)


# --- the index of cards: what the page shows, so a job need not read every sidecar ---------------


def _cards_path(outbox: Path) -> Path:
    return Path(outbox) / THUMBS_DIR / CARDS_NAME


def _exact(fields: dict[str, Any], key: str) -> str | None:
    """The text stored by :func:`~pipeline.job.sidecar.path_fields` under ``key``, exact (surrogate-escaped) when it can be."""
    path = record_path(fields, key) if f"{key}_b64" in fields else fields.get(key)
    return str(path) if isinstance(path, (str, Path)) and str(path) else None


def _entry(card: Card) -> dict[str, Any]:
    """A card as the index stores it: its result's path under the outbox (exact bytes kept) and what it shows."""
    record = card.record
    source = _exact(record, "input")
    seconds = record.get("seconds")
    entry: dict[str, Any] = {
        **path_fields("output", card.relative),
        "created": card.created.isoformat(),
        "preset": readable(record.get("preset", "?")),
        "seconds": seconds if isinstance(seconds, (int, float)) else None,
        "thumbnails": sorted(card.present),
    }
    if source is not None:
        entry.update(path_fields("input", os.path.basename(source)))  # the page shows the original's name only
    return entry


def _card_from_entry(entry: Any, outbox: Path, folders: set[str] | None = None) -> Card:
    """A card from an index entry, which is untrusted too: checked as the rebuild checks what it finds.

    ``folders``: folders already found real while reading this index (see :func:`check_result_path`).
    """
    if not isinstance(entry, dict):
        raise NotACard("not an index entry")
    relative = check_result_path(outbox, _exact(entry, "output"), folders)
    try:
        created = _created(entry)
    except (KeyError, ValueError, TypeError) as exc:
        raise NotACard(f"damaged index entry ({exc})") from None
    thumbnails = entry.get("thumbnails")
    present = {kind for kind in KINDS if isinstance(thumbnails, list) and kind in thumbnails}
    record = {key: entry[key] for key in ("preset", "seconds", "input", "input_b64") if key in entry}
    return Card(outbox, relative, record, created, present)


def _read_cards(outbox: Path) -> list[Card] | None:
    """The indexed cards whose results still exist; None when there is no usable index (rebuild instead)."""
    outbox = Path(outbox)
    path = _cards_path(outbox)
    try:
        data = json.loads(read_regular_file(path, CARDS_MAX_BYTES, follow_links=False))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8 or not JSON
        log.warning("gallery: index %s unusable (%s); rebuilding it from the sidecars", printable(path),
                    printable(getattr(exc, "strerror", None) or exc))
        return None
    if not isinstance(data, dict) or data.get("format") != CARDS_FORMAT or not isinstance(data.get("cards"), list):
        log.warning("gallery: index %s not in a known format; rebuilding it from the sidecars", printable(path))
        return None
    cards = []
    folders: set[str] = set()
    for entry in data["cards"]:
        try:
            cards.append(_card_from_entry(entry, outbox, folders))
        except NotACard as skip:
            if str(skip):
                _warn_skip(path, skip)
    return cards


def _write_cards(outbox: Path, cards: list[Card]) -> None:
    document = {"format": CARDS_FORMAT, "cards": [_entry(card) for card in cards]}
    write_text_atomic(_cards_path(outbox), json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n")


@contextmanager
def _locked(outbox: Path) -> Iterator[None]:
    """Hold the gallery's lock: one writer of the index and page at a time (``process`` and the daemon)."""
    folder = Path(outbox) / THUMBS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    # The lock is the folder itself (flock works on a directory's descriptor): no lock file in the outbox,
    # where a client syncing it to a phone would copy an empty file (earlier versions left .gallery.lock).
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        _remove_old_lock_file(folder)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_old_lock_file(folder: Path) -> None:
    old = folder / OLD_LOCK_NAME
    try:
        if old.lstat().st_size == 0 and old.is_file() and not old.is_symlink():
            old.unlink()
    except OSError:
        pass


def _href(relative: str) -> str:
    """A URL from the page to ``relative`` (under the outbox): the name's exact bytes percent-encoded, HTML-escaped."""
    return html.escape(quote(os.fsencode(relative)), quote=True)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _figure(kind: str, card: Card, thumbnail: str) -> str:
    label = LABELS[kind]
    if kind in card.present:
        image = f'<img src="{_href(thumbnail)}" alt="{label}" loading="lazy">'
        if kind == "result":  # the result thumbnail opens the full result
            box = f'<a class="thumb" href="{_href(card.relative)}">{image}</a>'
        else:
            box = f'<div class="thumb">{image}</div>'
    else:
        box = '<div class="thumb missing">not available</div>'
    return f"<figure>{box}<figcaption>{label}</figcaption></figure>"


def _card(card: Card, limit: int) -> str:
    record = card.record
    source = _exact(record, "input")
    source_name = printable(os.path.basename(source) if source else "")
    seconds = record.get("seconds")
    meta = [f'<span class="preset">{html.escape(printable(record.get("preset", "?")))}</span>']
    if isinstance(seconds, (int, float)):
        meta.append(html.escape(_duration(float(seconds))))
    meta.append(f'<time datetime="{html.escape(card.created.isoformat())}">{_when(card.created)}</time>')
    thumbnails = thumbnail_relatives(card.relative, limit)
    figures = "".join(_figure(kind, card, thumbnails[kind]) for kind in KINDS)
    return (
        '<article class="card">'
        f'<div class="trio">{figures}</div>'
        '<div class="caption">'
        f'<div class="name" title="from {html.escape(source_name, quote=True)}">'
        f"{html.escape(printable(os.path.basename(card.relative)))}</div>"
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
    limit = name_max(Path(outbox))
    body = "\n".join(_card(card, limit) for card in cards) or (
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


def _write_page(outbox: Path, cards: list[Card]) -> Path:
    target = Path(outbox) / INDEX_NAME
    write_text_atomic(target, render(cards, outbox))
    return target


def write_gallery(outbox: Path, cards: list[Card] | None = None) -> tuple[Path, int]:
    """Rebuild ``outbox/index.html`` and the index from the sidecars (or ``cards``, already collected).

    Returns the page's path and the number of cards. Reads every sidecar: this is
    ``photostyle gallery``; after a job, :func:`add_to_gallery` does far less.
    """
    with _locked(outbox):
        cards = collect(outbox) if cards is None else cards
        _write_cards(outbox, cards)
        return _write_page(outbox, cards), len(cards)


def add_to_gallery(outbox: Path, sidecar: Path) -> tuple[Path, int]:
    """Add the result of ``sidecar`` (a sidecar photostyle just wrote under ``outbox``) to the page.

    Reads only that sidecar and the index; rebuilds from every sidecar only when
    there is no usable index yet. Returns the page's path and the number of cards.
    """
    with _locked(outbox):
        cards = _read_cards(outbox)
        if cards is None:
            cards = collect(outbox)
        else:
            try:
                card = card_from_sidecar(outbox, sidecar)
            except NotACard as skip:
                _warn_skip(sidecar, str(skip) or "its result is gone")
            else:
                cards = [old for old in cards if old.relative != card.relative] + [card]
            cards = _newest_first(cards)
        _write_cards(outbox, cards)
        return _write_page(outbox, cards), len(cards)
