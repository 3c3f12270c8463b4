"""What happens to an original after its job: processed/, failed/ with a note, kept, or deleted.

Originals are moved, never copied-and-deleted blindly and never overwritten
(:mod:`pipeline.files.fileops`), into a folder per preset: ``inbox/mosaic/a.jpg`` and a
photo dropped into ``inbox/`` itself (the default preset) both land in
``processed/<preset>/`` (or ``failed/<preset>/``).

A failed photo keeps its own name, however long; its note is named by
:func:`error_note_path`, shortened if needed, and its text is printable (the
photo's name may hold newlines or terminal escape codes).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline.files.fileops import fit_name, move_without_overwrite, name_max, remove_if_same, write_text_atomic
from pipeline.files.photo_file import FileIdentity, same_content
from pipeline.files.textsafe import printable

ERROR_NOTE_SUFFIX = ".error.txt"


def after_success(path: Path, config: Any, preset: str, expected: FileIdentity | None = None) -> Path | None:
    """Apply ``watch.after``; return where the original went (None when kept or deleted).

    With ``expected``, only the file taken at intake is moved or deleted; a newer
    version under the same name raises :class:`~pipeline.files.photo_file.FileChanged`.
    A photo whose identical copy is already in ``processed/`` under its name (a
    one-way sync job sending it again) is not filed twice: the inbox copy goes.
    """
    policy = config.watch.after
    if policy == "keep":
        return None
    if policy == "delete":
        remove_if_same(path, expected)
        return None
    already = config.processed / preset / path.name
    if same_content(path, already):
        remove_if_same(path, expected)
        return already
    return move_without_overwrite(path, config.processed / preset, expected)


def error_note_path(moved: Path) -> Path:
    """``failed/a.jpg`` -> ``failed/a.jpg.error.txt``, shortened (keeping ``.jpg.error.txt``) to fit the filesystem."""
    moved = Path(moved)
    name = fit_name(moved.stem, moved.suffix + ERROR_NOTE_SUFFIX, limit=name_max(moved.parent))
    return moved.with_name(name)


def error_paragraph(name: str, preset: str, stage: str, reason: str) -> str:
    """The readable note left beside a failed photo; everything from outside is made printable."""
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    name, preset, stage, reason = (printable(text) for text in (name, preset, stage, reason))
    return (
        f"photostyle could not turn {name} into artwork (preset '{preset}', {when}): the {stage} stage failed "
        f"because {reason.rstrip('.')}. The photo was moved here unchanged. If the problem can be fixed, move it "
        f"back into the inbox to try again.\n"
    )


def superseded_paragraph(name: str, output: Path) -> str:
    """The note that replaces a partial copy's error note once the complete photo was done."""
    name, done = printable(name), printable(str(output))
    return (
        f"This is an incomplete copy of {name} that photostyle took while it was still arriving "
        f"({time.strftime('%Y-%m-%d %H:%M:%S %Z')}): the complete photo arrived later under the same name and "
        f"was turned into artwork ({done}). Nothing is wrong; this partial copy can be deleted.\n"
    )


def after_failure(path: Path, config: Any, preset: str, stage: str, reason: str,
                  expected: FileIdentity | None = None) -> Path:
    """Move the original to ``failed/`` and write ``<name>.error.txt`` beside it; return the new path.

    With ``expected``, a newer version under the same name is not moved (FileChanged).
    """
    moved = move_without_overwrite(path, config.failed / preset, expected)
    write_text_atomic(error_note_path(moved), error_paragraph(path.name, preset, stage, reason))
    return moved
