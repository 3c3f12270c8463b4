"""File operations that never lose or overwrite a user's file.

- New files are written to a temp file, fsynced, then given their final name.
  The temp file lives in the *staging folder* (``state/tmp/``, see
  :func:`use_staging_folder`) when that is on the same filesystem as the
  target, so a sync client that copies the outbox out (rsync, rclone,
  Syncthing: none of them skips dotfiles) only ever sees finished files;
  elsewhere it is a dot-named temp file beside its target.
- A final name is claimed with ``link()``, which fails if the name exists, so an
  existing file is never replaced: ``stem.ext``, then ``stem-1.ext``, ``stem-2.ext``…
- Moves keep the source until the destination is complete, across filesystems too,
  and, given the identity the file had when it was taken, move only that file:
  a newer version that a sync client put under the same name meanwhile is left
  where it is (:class:`~pipeline.files.photo_file.FileChanged`), never filed as done.
- Every name photostyle makes fits the filesystem: a name is at most NAME_MAX
  (255) *bytes*, and a photo's own name may already be close to that. One
  function, :func:`fit_name`, shortens every derived name (results and their
  ``-N``, sidecars, thumbnails, ``.error.txt`` notes), so they all agree; temp
  names are short by construction.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.files.photo_file import FileChanged, FileIdentity, open_regular

_NO_HARDLINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS)

NAME_MAX = 255  # bytes in one path component on Linux, macOS and every common filesystem
# Room a result's name leaves for the names derived from it: its sidecar (``NAME.json``, +5 bytes)
# and its gallery thumbnails (``NAME.original.jpg``, +13), so those never need shortening.
DERIVED_RESERVE = 16
_TEMP_STEM_BYTES = 32  # temp names only need to be unique and dot-named: keep them short
_CUT_MARK_BYTES = 9  # "~" and 8 hex digits

_staging: Path | None = None  # where temp files go (state/tmp), set once per process by the commands that write


def staging_folder(state: Path) -> Path:
    """Where temp files are staged for a config whose state folder is ``state`` (one sub-folder per process)."""
    return state / "tmp"


def use_staging_folder(folder: Path | None) -> None:
    """Write temp files in ``folder/<pid>/`` (made if needed) instead of beside their targets, where it can.

    Process-wide on purpose: sidecars, thumbnails, the gallery and results are all
    written through this module, and each must keep its half-written bytes out of
    a folder that sync clients copy out. A target on another filesystem than
    ``folder`` still gets its temp file beside it (a rename cannot cross filesystems).
    One sub-folder per process lets :func:`clean_staging` tell a killed process's
    leftovers from the temp files of a ``photostyle process`` running right now.
    """
    global _staging
    if folder is not None:
        folder = folder / str(os.getpid())
        folder.mkdir(parents=True, exist_ok=True)
    _staging = folder


def staging_shares_filesystem(target: Path) -> bool:
    """True when temp files for ``target`` (a folder) can be staged outside it (see :func:`use_staging_folder`)."""
    if _staging is None:
        return False
    existing = next((folder for folder in (target, *target.parents) if folder.exists()), target)
    try:
        return os.stat(_staging).st_dev == os.stat(existing).st_dev
    except OSError:
        return False


def _temp_folder(target: Path) -> Path:
    return _staging if _staging is not None and staging_shares_filesystem(target) else target


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def clean_staging() -> int:
    """Remove the temp files that killed processes left in the staging folder; returns how many.

    A process's sub-folder goes once that process is gone; this process's own
    sub-folder is emptied too (a previous process may have had the same pid).
    """
    if _staging is None:
        return 0
    removed = 0
    for entry in list(os.scandir(_staging.parent)):
        mine = entry.path == str(_staging)
        if not entry.name.isdigit() or not entry.is_dir(follow_symlinks=False):
            continue
        if not mine and _alive(int(entry.name)):
            continue
        for leftover in list(os.scandir(entry.path)):
            try:
                if leftover.is_file(follow_symlinks=False) or leftover.is_symlink():
                    os.unlink(leftover.path)
                    removed += 1
            except OSError:
                continue
        if not mine:
            try:
                os.rmdir(entry.path)
            except OSError:
                pass
    return removed


def _encoded(text: str) -> bytes:
    """``text`` as the bytes of a name on disk (what :func:`os.fsencode` gives on Linux and macOS)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no file name produces: count it as UTF-8 would
        return text.encode("utf-8", "surrogatepass")


def name_bytes(name: str) -> int:
    """Length of ``name`` on disk: its bytes, as the filesystem counts them (not its characters)."""
    return len(_encoded(name))


def name_max(folder: Path) -> int:
    """The longest name ``folder``'s filesystem takes, in bytes (at most 255; some, like eCryptfs, take less)."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return NAME_MAX
    return min(NAME_MAX, limit) if limit > 0 else NAME_MAX


def _cut(text: str, budget: int) -> str:
    """The longest prefix of ``text`` of at most ``budget`` bytes, cut between characters.

    A UTF-8 sequence is never split; a surrogate-escaped byte of a non-UTF-8
    name (U+DC80..U+DCFF) is one byte on disk and counts as one.
    """
    used = 0
    for index, char in enumerate(text):
        used += len(_encoded(char))
        if used > budget:
            return text[:index]
    return text


def fit_name(stem: str, suffix: str = "", reserve: int = 0, limit: int = NAME_MAX) -> str:
    """``stem + suffix``, shortened if needed so that it plus ``reserve`` bytes fits in ``limit`` bytes.

    The suffix (``.jpg``, ``-2.jpg``, ``.json``, ``.jpg.error.txt``) is kept and the
    stem cut on a character boundary; a cut name ends its stem with ``~`` and 8
    hex digits of a hash of the whole name, so two long names that share a prefix
    still get different short names, and the same name always gets the same one.
    A suffix too long to keep (``a.<250 bytes>``) is cut like the stem.
    """
    name = stem + suffix
    budget = limit - reserve
    if name_bytes(name) <= budget:
        return name
    mark = "~" + hashlib.blake2s(_encoded(name), digest_size=4).hexdigest()
    room = budget - _CUT_MARK_BYTES - name_bytes(suffix)
    if room < 1:  # the suffix itself leaves no room: treat it as part of the stem
        stem, suffix = name, ""
        room = budget - _CUT_MARK_BYTES
    if room < 1:
        raise ValueError(f"no room for a name in {limit} bytes with {reserve} reserved")
    return _cut(stem, room) + mark + suffix


def _temp_prefix(name: str) -> str:
    """``.NAME.`` with NAME cut short: the temp name stays far below NAME_MAX whatever ``name`` is."""
    return f".{_cut(name, _TEMP_STEM_BYTES)}."


def fsync_dir(folder: Path) -> None:
    """Make a rename or link durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_regular_file(path: Path, max_bytes: int, *, follow_links: bool = True) -> bytes:
    """The bytes of a regular file, for files others may have planted (sidecars, indexes in a synced outbox).

    Opened as :func:`~pipeline.files.photo_file.open_regular` opens (non-blocking, a FIFO
    cannot hang the caller; anything but a regular file refused; with
    ``follow_links=False`` a symlink refused too), and refused over ``max_bytes``.
    Every refusal is an OSError with a readable ``strerror``.
    """
    fd, info = open_regular(path, follow_links=follow_links)
    try:
        if info.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"{info.st_size} bytes, over the {max_bytes} expected", str(path))
        chunks, left = [], max_bytes + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:  # it grew while being read
            raise OSError(errno.EFBIG, f"over the {max_bytes} bytes expected", str(path))
        return data
    finally:
        os.close(fd)


def _candidates(folder: Path, stem: str, suffix: str, reserve: int = 0) -> Iterator[Path]:
    """``stem.ext``, ``stem-1.ext``, ``stem-2.ext``, … (lazily: usually the first is free), each fitted."""
    limit = name_max(folder)
    for n in range(100_000):
        yield folder / fit_name(stem, suffix if n == 0 else f"-{n}{suffix}", reserve, limit)


def claim_free_name(source: Path, folder: Path, stem: str, suffix: str, reserve: int = 0) -> Path:
    """Give ``source`` (same filesystem as ``folder``) the first free ``stem[-N]suffix`` there.

    Names are shortened with :func:`fit_name` so that each, plus ``reserve``
    bytes, fits the filesystem.

    Links then unlinks, so the name appears atomically and is never taken from
    another file. Where hard links are unavailable (some FUSE and SMB mounts) it
    falls back to check-then-rename, which is only racy against other writers.
    """
    for target in _candidates(folder, stem, suffix, reserve):
        try:
            os.link(source, target)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in _NO_HARDLINKS:
                raise
            if target.exists() or target.is_symlink():
                continue
            os.rename(source, target)
            return target
        os.unlink(source)
        return target
    raise FileExistsError(f"{folder}: no free name for {stem}{suffix}")


@contextmanager
def _durable_temp(folder: Path, name: str, data: bytes) -> Iterator[Path]:
    """``data`` in a fsynced temp file for ``folder`` (staged outside it where possible); removed unless renamed away."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=_temp_prefix(name), suffix=".tmp", dir=_temp_folder(folder))
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        yield temp
    finally:
        if temp.exists():
            temp.unlink()


def write_new_file(data: bytes, folder: Path, stem: str, suffix: str, reserve: int = DERIVED_RESERVE) -> Path:
    """Write ``data`` as a new file ``folder/stem[-N]suffix``, atomically; return its path.

    The name leaves ``reserve`` bytes free (by default enough for the sidecar and
    thumbnails named after it), shortening ``stem`` when the photo's name is long.
    """
    with _durable_temp(folder, stem, data) as temp:
        target = claim_free_name(temp, folder, stem, suffix, reserve)
    fsync_dir(folder)
    return target


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (for files photostyle owns: status, indexes)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (files photostyle owns: sidecars, thumbnails, sheets)."""
    with _durable_temp(path.parent, path.name, data) as temp:
        os.replace(temp, path)


def _is(info: os.stat_result, expected: FileIdentity | None) -> bool:
    return expected is None or FileIdentity.of(info) == expected


def remove_if_same(source: Path, expected: FileIdentity | None) -> None:
    """Remove the name ``source`` only while it still is ``expected`` (a sync client may have replaced it).

    The name is first renamed to a dot-named park beside it, which is atomic, so
    whatever is parked is what was at the name at that instant; it is then
    removed if it is the expected file, and otherwise (a newer version arrived
    in the instant between) put back under its name, or ``name-N`` if yet
    another one took the name: the caller sees a file at ``source`` again and
    takes it as new work.
    """
    if expected is None:
        os.unlink(source)
        return
    park = source.with_name(f"{_temp_prefix(source.name)}{os.getpid()}.{time.monotonic_ns() % 10**9}.park")
    os.rename(source, park)
    if _is(os.lstat(park), expected):
        os.unlink(park)
        return
    claim_free_name(park, source.parent, source.stem, source.suffix)


_PARK_NAME = re.compile(r"^\.(?P<name>.+)\.\d+\.\d+\.park$", re.DOTALL)


def restore_parked(folder: Path) -> list[Path]:
    """Put back files :func:`remove_if_same` parked when a kill -9 struck mid-way; returns where they went.

    The window is the instant between two system calls, but a parked file is a
    user's photo under a hidden name, so the daemon looks for them at start.
    """
    restored = []
    for parent, subfolders, files in os.walk(folder):
        for name in files:
            match = _PARK_NAME.match(name)
            if match is None:
                continue
            original = Path(match["name"])
            try:
                restored.append(claim_free_name(Path(parent) / name, Path(parent), original.stem, original.suffix))
            except OSError:
                continue
    return restored


def move_without_overwrite(source: Path, folder: Path, expected: FileIdentity | None = None) -> Path:
    """Move ``source`` into ``folder`` under its own name (or ``name-N``, fitted); return where it went.

    With ``expected`` (the identity the file had when it was taken) only that file
    moves: if the name now holds another file (replaced by a sync client while its
    old version rendered), nothing moves and :class:`FileChanged` is raised, so
    the caller can take the new version as new work.

    Across filesystems the file is copied to a temp name, fsynced and claimed
    before the source is removed, so a crash leaves at worst two copies, never none.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = source.stem, source.suffix
    info = os.lstat(source)
    if not _is(info, expected):
        raise FileChanged(errno.ESTALE, "a newer version replaced it")
    linked = info.st_nlink > 1 or not stat.S_ISREG(info.st_mode)
    if linked:  # never a new link to a file linked elsewhere too (nor read a FIFO): rename it
        try:
            return _rename_into(source, folder)
        except OSError as exc:
            if exc.errno != errno.EXDEV or not stat.S_ISREG(info.st_mode):
                raise
    for target in ([] if linked else _candidates(folder, stem, suffix)):
        try:
            os.link(source, target, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in _NO_HARDLINKS:
                raise
            break  # no hard links here: copy instead
        if not _is(os.lstat(target), expected):  # replaced between the check and the link
            os.unlink(target)
            raise FileChanged(errno.ESTALE, "a newer version replaced it")
        remove_if_same(source, expected)
        fsync_dir(folder)
        return target
    fd, temp_name = tempfile.mkstemp(prefix=_temp_prefix(stem), suffix=".tmp", dir=_temp_folder(folder))
    os.close(fd)
    temp = Path(temp_name)
    try:
        with open(source, "rb", opener=lambda name, flags: open_regular(Path(name))[0]) as original:
            if not _is(os.fstat(original.fileno()), expected):
                raise FileChanged(errno.ESTALE, "a newer version replaced it")
            with open(temp, "wb") as copy:
                shutil.copyfileobj(original, copy, 1 << 20)
                copy.flush()
                os.fsync(copy.fileno())
        shutil.copystat(source, temp, follow_symlinks=False)
        target = claim_free_name(temp, folder, stem, suffix)
    finally:
        if temp.exists():
            temp.unlink()
    remove_if_same(source, expected)
    fsync_dir(folder)
    return target


def _rename_into(source: Path, folder: Path) -> Path:
    """Rename ``source`` to the first free name in ``folder`` (same filesystem); check-then-rename, ours alone."""
    target = next(t for t in _candidates(folder, source.stem, source.suffix) if not (t.exists() or t.is_symlink()))
    os.rename(source, target)
    fsync_dir(folder)
    return target
