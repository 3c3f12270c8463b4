"""The folders photostyle writes to, and the names that become folders in them.

Why a module of its own: the folders are where a config mistake costs photos,
not just a run. The inbox is read as new photos, the outbox is published, the
state holds the ledger, and a preset name becomes a folder in each of them; so
folders that alias or nest are refused, and so is a preset name that would
escape its folder or take a name the outbox already uses. These checks read the
raw document and the file system, which pydantic's per-field validation cannot.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config.messages import ProblemCollector
from pipeline.config.models import ConfigBase, resolve_config_path

#: A preset name becomes a folder name under the inbox, outbox, processed/ and failed/.
PRESET_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
PRESET_NAME_MAX = 100
PRESET_NAME_RULE = (
    f"a preset name is a folder name: ASCII letters, digits, '_', '-' and '.', not starting with '.', "
    f"at most {PRESET_NAME_MAX} characters"
)

#: The gallery's page, ``outbox/index.html`` (:mod:`pipeline.gallery.page` takes its name from here).
GALLERY_PAGE = "index.html"
#: What photostyle itself keeps at the top of the outbox, beside the preset folders: a preset of one of
#: these names (compared ignoring case, for case-insensitive file systems) could never save a result.
#: Dot-names (``.thumbs``: the gallery's thumbnails and index) are refused by :data:`PRESET_NAME` already.
OUTBOX_OWN_NAMES = {GALLERY_PAGE: "the gallery page", ".thumbs": "the gallery's thumbnails"}


def preset_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a preset name (it would escape its folder, or its outbox folder is taken), or None."""
    if not isinstance(name, str):
        return None  # pydantic reports a key that is not a string
    if len(name) > PRESET_NAME_MAX or not PRESET_NAME.fullmatch(name):
        safe = style_preset_name(name)
        hint = f"; try {safe!r}" if re.search(r"[A-Za-z0-9]", name) else ""
        return f"{PRESET_NAME_RULE} (got {name!r}{hint})"
    for own, what in OUTBOX_OWN_NAMES.items():
        if name.casefold() == own.casefold():
            return (f"{name!r} is taken: outbox/{own} is {what}, so this preset's results could never be saved "
                    "in outbox/" + name + "/; choose another name")
    return None


def style_preset_name(stem: str) -> str:
    """A safe preset name for a style image (``Nuit étoilée`` → ``Nuit_etoilee``), see :data:`PRESET_NAME`.

    The file name comes from whoever can write to the styles folder, and the
    preset name becomes folder names, so it keeps only ASCII letters, digits, ``_``
    and ``-`` (accents are dropped, not the letters), never starts with ``-`` (it
    would read as an option in a shell), and is cut to a safe length.
    """
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_stem).strip("_-")[:PRESET_NAME_MAX].strip("_-")
    return name or "style"


def preset_name_problems(raw: Mapping[str, Any], problems: ProblemCollector) -> None:
    presets = raw.get("presets")
    if not isinstance(presets, Mapping):
        return
    for name in presets:
        reason = preset_name_problem(name)
        if reason:
            problems.add(("presets", name), reason)


FOLDER_KEYS = ("inbox", "outbox", "processed", "failed", "state")
# Folders photos are written to: a styles folder there would turn photos into presets.
PHOTO_FOLDER_KEYS = ("inbox", "outbox", "processed", "failed")


def folder_problems(raw: Mapping[str, Any], base_dir: Path, problems: ProblemCollector) -> None:
    """Refuse folders that alias each other or nest: every one of them has a job of its own.

    The inbox is read as new photos, the outbox is published, the state holds the
    ledger; a folder inside another would be read as photos, published, or
    moved away with them. Symlinks are resolved, so a link cannot hide an alias.
    """
    configured: dict[str, Path] = {}
    real: dict[str, Path] = {}
    for key in FOLDER_KEYS + ("styles",):
        value = raw.get(key, ConfigBase.model_fields[key].default)
        if isinstance(value, (str, Path)) and str(value):
            configured[key] = resolve_config_path(Path(value), base_dir)
            real[key] = configured[key].resolve()

    def written(key: str) -> int | None:
        return problems.doc.lines.get((key,))

    keys = [key for key in FOLDER_KEYS if key in real]
    for index, first in enumerate(keys):
        for second in keys[index + 1:]:
            a, b = real[first], real[second]
            if a == b:
                # Blame the key the user wrote (the later one, if both): the other may be a default.
                blamed, other = (first, second) if (written(first) or 0) > (written(second) or 0) else (second, first)
                problems.add((blamed,), f"{configured[blamed]} is the same folder as {other}; each needs its own")
                continue
            inner, outer = (first, second) if b in a.parents else (second, first) if a in b.parents else (None, None)
            if inner is None or outer is None:
                continue
            if outer == "inbox":
                reason = "it would be picked up as new photos"
            elif inner == "inbox":
                reason = "keep the inbox apart from the other folders"
            else:
                reason = "inbox, outbox, processed, failed and state must not lie inside one another"
            where = "the inbox" if outer == "inbox" else outer
            if written(inner) is not None or written(outer) is None:
                problems.add((inner,), f"{configured[inner]} is inside {where} ({configured[outer]}); {reason}")
            else:
                problems.add((outer,), f"{configured[outer]} contains {inner} ({configured[inner]}); {reason}")
    styles = real.get("styles")
    if styles is None:
        return
    for key in keys:
        folder = real[key]
        if styles == folder:
            problems.add(("styles",), f"{configured['styles']} is the same folder as {key}; "
                         "style images need a folder of their own")
        elif key in PHOTO_FOLDER_KEYS and folder in styles.parents:
            problems.add(("styles",), f"{configured['styles']} is inside {key} ({configured[key]}); "
                         "style images need a folder of their own")
