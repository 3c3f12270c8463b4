"""Reading a photo from the inbox without being fooled by what the name points to.

The inbox is written by other people's devices and sync clients, so between the
moment a photo is fingerprinted and the moment it is run, its name can be swapped
for a symlink to a private file, a FIFO or another photo. Names are therefore only
used to *open*: with ``O_NOFOLLOW`` (a symlink fails to open) and ``O_NONBLOCK`` (a
FIFO does not block), then ``fstat`` on the open descriptor must show a regular file,
and everything after that (size check, hash, bytes for decoding) comes from that one
descriptor. :class:`FileIdentity` remembers device, inode, size and mtime at intake;
:func:`read_verified` refuses a file that is no longer the same one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ImageLoadError

CHUNK = 1 << 20
_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)


class NotAPhotoFile(OSError):
    """The name is a symlink, FIFO, device or folder: never read, failed with this reason."""


class FileChanged(OSError):
    """The file under this name is not the one that was fingerprinted (replaced, swapped, rewritten)."""


@dataclass(frozen=True)
class FileIdentity:
    """Which file a name meant when it was fingerprinted: device, inode, size and mtime."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, info: os.stat_result) -> FileIdentity:
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def open_regular(path: Path, *, follow_links: bool = False) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading without following a symlink; the descriptor and its ``fstat``.

    The one place photostyle opens a file others may have planted: non-blocking, so
    a FIFO cannot hang it, and checked on the descriptor, so the name cannot be
    swapped between the check and the read. ``follow_links`` is for files the
    config names (style images), which may be links on purpose.

    Raises :class:`NotAPhotoFile` for anything but a regular file (the descriptor is
    closed then), or the OSError of ``open`` (FileNotFoundError, PermissionError, …).
    """
    try:
        fd = os.open(path, _FLAGS if follow_links else _FLAGS | _NO_FOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW on a symlink
            raise NotAPhotoFile(errno.ELOOP, "a symbolic link; photostyle only takes regular files "
                                "(copy the photo in instead)") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotAPhotoFile(errno.EINVAL, "not a regular file (a FIFO, socket, device or folder); "
                            "photostyle only takes regular files")
    return fd, info


def _read_all(fd: int, size_hint: int) -> bytes:
    chunks = []
    while True:
        block = os.read(fd, max(CHUNK, size_hint))
        if not block:
            return b"".join(chunks)
        chunks.append(block)


def hash_descriptor(fd: int, *, watch: Callable[[bytes], None] | None = None) -> str:
    """SHA-256 of everything readable from ``fd`` (from its current offset); ``watch`` sees each block too."""
    digest = hashlib.sha256()
    while block := os.read(fd, CHUNK):
        digest.update(block)
        if watch is not None:
            watch(block)
    return digest.hexdigest()


def read_verified(path: Path, expected: FileIdentity, content_hash: str | None = None) -> bytes:
    """The bytes of ``path``, provided it is still the file fingerprinted as ``expected``.

    The descriptor's device and inode must match (not a swapped-in file or link),
    its size and mtime must match (not rewritten), and, when given, the bytes must
    hash to ``content_hash``. Raises :class:`FileChanged` otherwise.
    """
    fd, info = open_regular(path)
    try:
        if FileIdentity.of(info) != expected:
            raise FileChanged(errno.ESTALE, "the file changed or was replaced after it was queued")
        data = _read_all(fd, info.st_size)
    finally:
        os.close(fd)
    if content_hash is not None and hashlib.sha256(data).hexdigest() != content_hash:
        raise FileChanged(errno.ESTALE, "the file's content changed after it was queued")
    return data


def read_photo_bytes(path: Path) -> bytes:
    """The bytes of a regular file, opened without following links (``process``, ``preview``)."""
    fd, info = open_regular(path)
    try:
        return _read_all(fd, info.st_size)
    finally:
        os.close(fd)


def load_error(path: Path, error: OSError) -> ImageLoadError:
    """The one-line error for a photo file that could not be opened or read."""
    if isinstance(error, FileNotFoundError):
        return ImageLoadError(f"{path}: file not found")
    if isinstance(error, PermissionError):
        return ImageLoadError(f"{path}: permission denied")
    return ImageLoadError(f"{path}: {error.strerror or error}")


def read_named_photo(photo: Path) -> bytes:
    """A photo named on the command line, read without following a link; ImageLoadError with one line."""
    try:
        data = read_photo_bytes(photo)
    except OSError as exc:
        raise load_error(photo, exc) from None
    if not data:
        raise ImageLoadError(f"{photo}: empty file (0 bytes)")
    return data


def same_content(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are two regular files (not links) with the same bytes."""
    try:
        fd_a, info_a = open_regular(a)
    except OSError:
        return False
    try:
        try:
            fd_b, info_b = open_regular(b)
        except OSError:
            return False
        try:
            if info_a.st_size != info_b.st_size:
                return False
            return hash_descriptor(fd_a) == hash_descriptor(fd_b)
        finally:
            os.close(fd_b)
    finally:
        os.close(fd_a)
