"""File names are bytes: long, non-UTF-8 and hostile names are each done or failed once, never a crash.

Names are made as bytes (``os.fsencode``) on real files in temp folders. A Linux
name may be any bytes but ``/`` and NUL, at most 255 of them; Python hands ones
that are not UTF-8 over as ``str`` with surrogate escapes.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import synthetic_photo, write_config
from pipeline.daemon.disposal import after_failure, error_note_path
from pipeline.files.fileops import DERIVED_RESERVE, NAME_MAX, fit_name, move_without_overwrite, write_new_file
from pipeline.job.sidecar import load_record, path_fields, record_path, sidecar_path
from pipeline.gallery.thumbnails import thumbnail_paths

LATIN1 = b"caf\xe9-\xff"  # an old NAS's Latin-1: not UTF-8
HOSTILE_STEMS = {
    "ascii250": b"a" * 250,
    "utf8": "é".encode() * 124,  # 248 bytes in 2-byte characters
    "emoji": "📷".encode() * 62,  # 248 bytes in 4-byte characters
    "latin1": LATIN1 * 40,
    "mixed": ("ü".encode() + b"\xff") * 83,
}
CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def _photo_bytes(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    synthetic_photo((40, 30), seed=seed).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _create(folder: Path, name: bytes, data: bytes = b"data") -> Path:
    """A real file whose name is exactly ``name`` (bytes), returned as Python sees it."""
    path = os.path.join(os.fsencode(folder), name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data)
    os.close(fd)
    return Path(os.fsdecode(path))


def _name_ok(path: Path, reserve: int = 0) -> bytes:
    """The on-disk name of ``path``: within NAME_MAX less ``reserve`` bytes, and the file exists."""
    raw = os.fsencode(path.name)
    assert len(raw) + reserve <= NAME_MAX, (len(raw), raw)
    assert os.path.lexists(os.fsencode(path))
    return raw


@pytest.mark.parametrize("kind", sorted(HOSTILE_STEMS))
def test_fit_name_cuts_on_a_character_boundary_and_keeps_the_extension(kind: str) -> None:
    stem = os.fsdecode(HOSTILE_STEMS[kind])
    names = {fit_name(stem, suffix, reserve) for suffix in (".jpg", "-1.jpg", "-22.jpg") for reserve in (0, 16)}
    assert len(names) == 6, "each suffix and reserve gives its own name"
    for suffix in (".jpg", "-7.jpg", ".jpg.error.txt"):
        name = fit_name(stem, suffix, DERIVED_RESERVE)
        raw = os.fsencode(name)
        assert len(raw) <= NAME_MAX - DERIVED_RESERVE and name.endswith(suffix)
        kept = os.fsencode(name[: name.rindex("~")])
        assert HOSTILE_STEMS[kind].startswith(kept), "a prefix of the original bytes"
        if kind in ("utf8", "emoji"):
            raw.decode("utf-8")  # no UTF-8 sequence was split
    assert fit_name(stem, ".jpg") == fit_name(stem, ".jpg"), "the same name always gets the same short name"
    assert fit_name(stem + "x", ".jpg") != fit_name(stem + "y", ".jpg"), "names that differ only past the cut"
    assert fit_name("short", ".jpg", DERIVED_RESERVE) == "short.jpg"


@pytest.mark.parametrize("kind", sorted(HOSTILE_STEMS))
def test_results_their_numbered_twins_sidecars_and_thumbnails_fit_the_filesystem(tmp_path: Path, kind: str) -> None:
    """Seen: a 250-byte name retried forever (the temp name was too long); a 240-byte one got no sidecar."""
    stem = os.fsdecode(HOSTILE_STEMS[kind])
    first = write_new_file(b"one", tmp_path, stem, ".jpg")
    second = write_new_file(b"two", tmp_path, stem, ".jpg")
    assert first != second and first.read_bytes() == b"one" and second.read_bytes() == b"two"
    for result in (first, second):
        assert _name_ok(result, DERIVED_RESERVE).endswith(b".jpg")
        sidecar = sidecar_path(result)
        assert sidecar.name == result.name + ".json", "results leave room for their sidecar"
        sidecar.write_text("{}")
        for kind, thumbnail in thumbnail_paths(tmp_path, result).items():
            assert thumbnail.name == f"{result.name}.{kind}.jpg", "and for their thumbnails"
            thumbnail.parent.mkdir(parents=True, exist_ok=True)
            thumbnail.write_bytes(b"thumbnail")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".thumbs"], "no temp file left behind"


def test_a_255_byte_name_moves_twice_into_one_folder_and_gets_error_notes(tmp_path: Path) -> None:
    inbox, failed = tmp_path / "inbox", tmp_path / "failed"
    config = SimpleNamespace(inbox=inbox, failed=failed)
    inbox.mkdir()
    name = b"\x1b[2J\n" + b"z" * 246 + b".jpg"  # 255 bytes, with an escape code and a newline
    moved = []
    for round_ in range(2):
        photo = _create(inbox, name, b"photo %d" % round_)
        moved.append(after_failure(photo, config, "tiny", "load", f"{photo}: not an image\nfake line"))
    assert moved[0].name == os.fsdecode(name), "the photo keeps its own name"
    assert moved[1] != moved[0] and _name_ok(moved[1]).endswith(b"-1.jpg")
    assert {p.read_bytes() for p in moved} == {b"photo 0", b"photo 1"}
    for photo in moved:
        note = error_note_path(photo)
        assert _name_ok(note).endswith(b".jpg.error.txt")
        text = note.read_bytes()
        assert text.count(b"\n") == 1 and text.endswith(b"\n"), "one paragraph"
        assert not CONTROL.search(text[:-1]) and b"\\x1b[2J\\n" in text
    assert error_note_path(moved[0]) != error_note_path(moved[1])
    assert len(list((failed / "tiny").iterdir())) == 4


def test_a_non_utf8_name_fails_with_a_readable_note(tmp_path: Path) -> None:
    """Today's error note for ``café-\\xff.jpg`` raised UnicodeEncodeError."""
    config = SimpleNamespace(inbox=tmp_path / "inbox", failed=tmp_path / "failed")
    config.inbox.mkdir()
    photo = _create(config.inbox, LATIN1 + b".jpg")
    moved = after_failure(photo, config, "tiny", "load", f"{photo}: truncated")
    assert os.fsencode(moved.name) == LATIN1 + b".jpg"
    text = error_note_path(moved).read_text(encoding="utf-8")
    assert "caf\\xe9-\\xff.jpg" in text


def test_moves_keep_long_names_and_number_them_within_the_limit(tmp_path: Path) -> None:
    source, target = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    name = b"\xff" * 251 + b".jpg"
    made = [move_without_overwrite(_create(source, name, bytes([i])), target) for i in range(3)]
    assert len({p.name for p in made}) == 3
    assert os.fsencode(made[0].name) == name
    assert all(_name_ok(p) for p in made) and [p.read_bytes() for p in made] == [b"\0", b"\1", b"\2"]


def test_sidecars_store_paths_losslessly_and_old_ones_still_read() -> None:
    exact = Path(os.fsdecode(b"/photos/" + LATIN1 + b".jpg"))
    fields = path_fields("input", exact)
    assert fields["input"] == "/photos/caf\ufffd-\ufffd.jpg"  # readable, valid Unicode
    assert base64.b64decode(fields["input_b64"]) == os.fsencode(exact)
    assert record_path(json.loads(json.dumps(fields)), "input") == exact
    assert path_fields("input", Path("/photos/café.jpg")) == {"input": "/photos/café.jpg"}  # UTF-8: no copy
    assert record_path({"input": "/photos/old.jpg"}, "input") == Path("/photos/old.jpg")  # a format-1 sidecar


def _run(*args: bytes | str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """``photostyle`` as a user runs it, arguments and output as bytes (names need not be text)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, env=env, cwd=cwd,
                          timeout=600, check=False)


def test_process_does_every_hostile_name_once_and_show_reads_it_back(tmp_path: Path) -> None:
    """Seen: ``x\\xff.jpg`` crashed writing its sidecar; a 250-byte name failed with ``File name too long``."""
    config = write_config(tmp_path / "project")
    photos_dir = tmp_path / "photos"
    photos_dir.mkdir()
    names = [
        b"x\xff.jpg",  # Latin-1 from an SMB share
        b"b" * 246 + b".jpg",  # 250 bytes
        b"c" * 236 + b".jpg",  # 240 bytes
        b'-n "quoted" \x1b[31mred\x1b[0m\nnext.jpg',  # a leading dash, quotes, escape codes, a newline
    ]
    photos = [_create(photos_dir, name, _photo_bytes(i)) for i, name in enumerate(names)]
    bogus = _create(photos_dir, b"bad\n\x1b]0;owned\x07\xfe.jpg", b"not a photo")
    run = _run("process", *map(os.fsencode, [*photos, bogus]), "-c", str(config))
    assert run.returncode == 1, run.stderr.decode(errors="replace")  # the bogus photo failed, alone
    assert b"Traceback" not in run.stderr
    for stream in (run.stdout, run.stderr):
        stream.decode("utf-8")  # printable: no undecodable bytes
        assert not CONTROL.search(stream.replace(b"\n", b"")), stream
    assert len(run.stdout.splitlines()) == len(photos), "one line per photo done"
    [error] = [line for line in run.stderr.splitlines() if line.startswith(b"error:")]
    assert b"bad\\n\\x1b]0;owned\\x07\\xfe.jpg" in error

    outbox = config.parent / "outbox" / "tiny"
    results = sorted(p for p in outbox.iterdir() if not p.name.endswith(".json"))
    assert len(results) == len(photos)
    by_input = {}
    for result in results:
        _name_ok(result, DERIVED_RESERVE)
        record = load_record(sidecar_path(result))
        by_input[os.fsencode(record_path(record, "input"))] = record
        assert record_path(record, "output") == result
    assert set(by_input) == {os.fsencode(photo) for photo in photos}, "every input, exactly as named"
    latin = by_input[os.fsencode(photos[0])]
    assert "input_b64" in latin and "\ufffd" in latin["input"]

    gallery = (config.parent / "outbox" / "index.html").read_text(encoding="utf-8")
    assert gallery.count('<article class="card">') == len(photos)
    assert "x%FF.jpg" in gallery and "\x1b" not in gallery

    result = record_path(latin, "output")
    assert result is not None and os.fsencode(result.name) == b"x\xff.jpg"
    shown = _run("show", os.fsencode(result))
    assert shown.returncode == 0, shown.stderr
    assert b"x\\xff.jpg" in shown.stdout and not CONTROL.search(shown.stdout.replace(b"\n", b""))
    raw = _run("show", os.fsencode(result), "--json")
    assert json.loads(raw.stdout) == latin
