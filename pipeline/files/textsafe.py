"""Text from the outside world (file names, error messages) made safe to show on one line.

File names in a synced inbox are written by other people's devices. On Linux a
name is bytes: Python hands names that are not UTF-8 over as ``str`` with
*surrogate escapes* (``b"x\\xff.jpg"`` -> ``"x\\udcff.jpg"``, see :func:`os.fsdecode`),
and those strings cannot be encoded as UTF-8. A name may also hold a newline
(which would forge a whole log line), terminal escape codes (which would
repaint the terminal that runs ``photostyle status`` or ``journalctl``),
Unicode line separators or bidi overrides (which make text read differently
from what it is).

Everything that prints or logs outside text goes through one of these:

- :func:`printable` for text a person reads (logs, ``status``, ``show``, notes):
  control and invisible-format characters become visible escapes (``\\n``,
  ``\\x1b``, ``\\u202e``), undecodable bytes ``\\xff``; the result is one line.
- :func:`quoted` for a ``key="value"`` field: the same, plus ``\\`` and ``"``
  escaped, inside double quotes, so the value can be split back unambiguously.
- :func:`readable` for JSON meant for people and other programs: valid Unicode,
  undecodable bytes replaced by U+FFFD (pair it with a lossless copy, see
  :mod:`pipeline.job.sidecar`).
- :func:`safe_json` for JSON printed to a terminal.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 controls, DEL, C1 controls (0x9b is a one-byte CSI on some terminals), the Unicode line and
# paragraph separators, bidi embeddings/overrides/isolates and marks (the "Trojan Source" characters,
# CVE-2021-42574), the byte-order mark, and every lone surrogate (undecodable bytes of a file name).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)
# What json.dumps(ensure_ascii=False) leaves raw inside strings (it escapes C0 itself; a raw "\n" is indentation).
_UNSAFE_IN_JSON = re.compile("[" + _UNSAFE.pattern[len("[\x00-\x1f"):])
_UNSAFE_OR_QUOTE = re.compile(_UNSAFE.pattern[:-1] + '\\\\"]')
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"'}
_NEEDS_QUOTES = re.compile(r'[\s"=\\]')


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a surrogate-escaped byte of a non-UTF-8 name: show the byte itself
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value: object) -> str:
    """``str(value)`` on one line, with nothing a terminal or a log reader would act on.

    ``printable("a\\nb\\x1b[2J")`` is ``"a\\\\nb\\\\x1b[2J"``; plain text, accents and emoji
    pass unchanged. Backslashes are left alone (this is for reading, not parsing).
    """
    text = str(value)
    return _UNSAFE.sub(lambda match: _escape(match.group()), text)


def quoted(value: object) -> str:
    """``value`` as a log field value: bare when plain, else in double quotes with escapes.

    Quoted when empty or holding whitespace, ``"``, ``=``, ``\\`` or anything
    :func:`printable` escapes, so ``key=value`` pairs can never be forged.
    """
    text = str(value)
    if text and not _NEEDS_QUOTES.search(text) and not _UNSAFE.search(text):
        return text
    return '"' + _UNSAFE_OR_QUOTE.sub(lambda match: _escape(match.group()), text) + '"'


def readable(value: object) -> str:
    """Valid Unicode for ``str(value)``: a name's undecodable bytes become U+FFFD (lossy)."""
    text = str(value)
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file name produces (not U+DC80..U+DCFF)
        data = text.encode("utf-8", "surrogatepass")
    return data.decode("utf-8", "replace")


def is_utf8(value: object) -> bool:
    """Whether ``str(value)`` encodes as UTF-8 (a file name that is valid UTF-8 on disk)."""
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def safe_json(data: Any, **options: Any) -> str:
    """``json.dumps`` that keeps readable non-ASCII text but escapes what a terminal would act on.

    The escaped characters only ever occur inside JSON strings, where ``\\uXXXX``
    means the same character, so the output parses back to exactly ``data``.
    """
    text = json.dumps(data, ensure_ascii=False, **options)
    return _UNSAFE_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
