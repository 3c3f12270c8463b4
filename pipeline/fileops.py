"""File operations that never lose or overwrite a user's file.

- New files are written to a dot-named temp file in the target folder (watchers
  and sync clients ignore dotfiles), fsynced, then given their final name.
- A final name is claimed with ``link()``, which fails if the name exists, so an
  existing file is never replaced: ``stem.ext``, then ``stem-1.ext``, ``stem-2.ext``…
- Moves keep the source until the destination is complete, across filesystems too.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_NO_HARDLINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS)


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


def _candidates(folder: Path, stem: str, suffix: str) -> Iterator[Path]:
    """``stem.ext``, ``stem-1.ext``, ``stem-2.ext``, … (lazily: usually the first is free)."""
    for n in range(100_000):
        yield folder / (f"{stem}{suffix}" if n == 0 else f"{stem}-{n}{suffix}")


def claim_free_name(source: Path, folder: Path, stem: str, suffix: str) -> Path:
    """Give ``source`` (same filesystem as ``folder``) the first free ``stem[-N]suffix`` there.

    Links then unlinks, so the name appears atomically and is never taken from
    another file. Where hard links are unavailable (some FUSE and SMB mounts) it
    falls back to check-then-rename, which is only racy against other writers.
    """
    for target in _candidates(folder, stem, suffix):
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
    """``data`` in a fsynced, dot-named temp file in ``folder``; removed afterwards unless renamed away."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
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


def write_new_file(data: bytes, folder: Path, stem: str, suffix: str) -> Path:
    """Write ``data`` as a new file ``folder/stem[-N]suffix``, atomically; return its path."""
    with _durable_temp(folder, stem, data) as temp:
        target = claim_free_name(temp, folder, stem, suffix)
    fsync_dir(folder)
    return target


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (for files photostyle owns: status, indexes)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (files photostyle owns: sidecars, thumbnails, sheets)."""
    with _durable_temp(path.parent, path.name, data) as temp:
        os.replace(temp, path)


def move_without_overwrite(source: Path, folder: Path) -> Path:
    """Move ``source`` into ``folder`` under its own name (or ``name-N``); return where it went.

    Across filesystems the file is copied to a temp name, fsynced and claimed
    before the source is removed, so a crash leaves at worst two copies, never none.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = source.stem, source.suffix
    for target in _candidates(folder, stem, suffix):
        try:
            os.link(source, target, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in _NO_HARDLINKS:
                raise
            break  # no hard links here: copy instead
        os.unlink(source)
        fsync_dir(folder)
        return target
    if not stat.S_ISREG(os.lstat(source).st_mode):  # a FIFO or symlink: never read it, rename it
        target = next(t for t in _candidates(folder, stem, suffix) if not (t.exists() or t.is_symlink()))
        os.rename(source, target)
        return target
    fd, temp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=folder)
    os.close(fd)
    temp = Path(temp_name)
    try:
        shutil.copy2(source, temp, follow_symlinks=False)
        target = claim_free_name(temp, folder, stem, suffix)
    finally:
        if temp.exists():
            temp.unlink()
    source.unlink()
    fsync_dir(folder)
    return target
