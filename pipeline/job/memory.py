"""Giving memory back after a photo fails.

Freed memory does not leave the process by itself. Pillow allocates an image in
blocks of a few megabytes, small enough for glibc to serve from its heaps (its
mmap threshold rises to 32 MB once a large block is freed), and glibc keeps
freed heap pages for reuse: after a huge image or a garbage file failed to
decode, the daemon's resident size stays at its peak. Objects can also outlive
the failure: an exception's traceback holds the frames of the stages it went
through, and their locals hold pixels, until the garbage collector breaks the
cycle.

:func:`release_memory` collects those cycles and asks glibc to return free pages
(``malloc_trim(0)``); where there is no glibc (macOS, musl) it only collects.
:func:`drop_tracebacks` cuts an error loose from the frames it was raised through,
so keeping the error (to report it later) does not keep their memory.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library this interpreter runs on
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_memory() -> bool:
    """Collect garbage and return free heap pages to the system; True when glibc's ``malloc_trim`` ran.

    Costs a full garbage collection (milliseconds to a few tenths of a second in a
    process with the model loaded): call it after a failure, not after every photo.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def drop_tracebacks(error: BaseException) -> None:
    """Forget the frames ``error`` (and the errors it was raised from) went through; the message stays."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        pending += [current.__cause__, current.__context__]
