"""Is a file that stopped changing actually complete? Evidence beyond size and mtime.

Multi-stream downloaders (rclone's multi-thread copy, aria2, some SMB clients)
set a file to its full size first and fill it in at offsets; a writer may also
presize a file, close it between chunks and come back later. When a stream
stalls, size and mtime stand still and the file is still open nowhere, so the
stability gate and inotify's close-write both see a finished file. A baseline
JPEG with a zero-filled part decodes without an error, as flat colour, so the
decoder is no help either. Two kinds of evidence are cheap and need no help
from the writer:

- **holes**: a region never written is a hole in a sparse file, and
  ``SEEK_HOLE`` finds it on local file systems (ext4, XFS, Btrfs, tmpfs, ZFS; on
  ext4 and XFS also preallocated-but-unwritten extents). Network shares (NFS,
  SMB) and some FUSE file systems report no holes: the whole file looks like data.
- **zero runs**: compressed image data never holds :data:`ZERO_RUN` zero bytes
  in a row, so a run that long is bytes the writer has not delivered yet. This
  works on every file system, network shares included; it misses a stall that
  leaves less than that unwritten, or a writer that presizes with other bytes.

Either makes intake wait for the writer (up to ``watch.incomplete_grace``), so
the photo is neither rendered from bytes that never arrived nor moved away
while its writer still has work to do.
"""

from __future__ import annotations

import os

ZERO_RUN = 32 * 1024  # bytes: no JPEG, PNG, WebP, HEIC or TIFF photo holds this many zero bytes in a row
_ZEROS = bytes(ZERO_RUN)


def first_hole(fd: int, size: int) -> int | None:
    """Offset of the first hole before ``size`` in the open file ``fd``, or None (none, or not reportable)."""
    seek_hole = getattr(os, "SEEK_HOLE", None)
    if seek_hole is None or size <= 0:
        return None
    try:
        offset = os.lseek(fd, 0, seek_hole)
    except OSError:  # EINVAL/ENXIO: the file system cannot say
        return None
    finally:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
        except OSError:
            pass
    return offset if offset < size else None


class ZeroRunFinder:
    """Fed a file's bytes in order, finds the first run of :data:`ZERO_RUN` zero bytes, across chunk boundaries."""

    def __init__(self) -> None:
        self.offset = 0  # bytes seen so far
        self._trailing = 0  # zero bytes at the end of what was seen
        self.found: int | None = None  # where the first long run starts

    def feed(self, chunk: bytes) -> None:
        if self.found is not None or not chunk:
            self.offset += len(chunk)
            return
        # lstrip/rstrip copy the chunk: only where it starts or ends with a zero byte (rarely, in a photo)
        leading = len(chunk) - len(chunk.lstrip(b"\0")) if chunk[0] == 0 else 0
        if self._trailing + leading >= ZERO_RUN:
            self.found = self.offset - self._trailing
        else:
            inside = chunk.find(_ZEROS)
            if inside >= 0:
                self.found = self.offset + inside
        if leading == len(chunk):
            self._trailing += len(chunk)
        else:
            self._trailing = len(chunk) - len(chunk.rstrip(b"\0")) if chunk[-1] == 0 else 0
        self.offset += len(chunk)


def incomplete_reason(hole: int | None, zero_run: int | None) -> str | None:
    """One line saying why a file looks unfinished, or None when nothing suggests it."""
    if hole is not None:
        return f"it has a region never written at byte {hole} (a writer is still filling it in)"
    if zero_run is not None:
        return f"it holds {ZERO_RUN // 1024} KiB of zero bytes at byte {zero_run} (bytes not delivered yet)"
    return None
