"""Writing values into a systemd unit so that systemd reads back exactly what we meant.

A path is user data: it may hold spaces, quotes, backslashes, ``%`` or ``$``.
systemd reads unit values through three layers, and each needs its own escape:

- specifiers (systemd.unit(5)): ``%h``, ``%d`` … are expanded in nearly every
  setting, so every literal ``%`` is written ``%%``;
- quoting (systemd.syntax(7)): list settings (``ExecStart=``, ``Environment=``,
  ``ReadWritePaths=``) split at whitespace, so an item with whitespace, quotes or
  backslashes is wrapped in double quotes with ``\\`` and ``\"`` escaped (valid
  both where C escapes are decoded and where only quotes are removed);
- variables (systemd.service(5), "Command lines"): ``ExecStart=`` arguments expand
  ``$FOO``, so a literal ``$`` is ``$$``; the executable itself is not expanded.

Single-value path settings (``WorkingDirectory=``) are taken literally after
specifiers, so only ``%`` is escaped there. Control characters (a newline in a
folder name) and text that is not UTF-8 cannot be written at all: those raise
:class:`UnitValueError`, with the path, rather than produce a unit systemd misreads.
"""

from __future__ import annotations

import re

from pipeline.errors import PhotostyleError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NEEDS_QUOTES = re.compile(r"""[\s"'\\;]""")


class UnitValueError(PhotostyleError):
    """A value (usually a path) that no systemd unit can hold."""

    exit_code = 2


def _checked(value: str, what: str) -> str:
    if _CONTROL.search(value):
        raise UnitValueError(f"{what} {value!r} contains a control character (newline, tab, …) that a systemd "
                             "unit cannot hold; rename it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UnitValueError(f"{what} {value!r} is not valid UTF-8, which a systemd unit requires; rename it") from None
    return value


def specifiers(value: str, what: str = "value") -> str:
    """``value`` with every ``%`` doubled, so systemd expands no specifier in it."""
    return _checked(value, what).replace("%", "%%")


def word(value: str, what: str = "value", *, variables: bool = False) -> str:
    """One item of a whitespace-separated list setting, quoted only when it has to be.

    ``variables``: the item is an ``ExecStart=`` argument, where ``$`` starts a variable.
    """
    text = specifiers(value, what)
    if variables:
        text = text.replace("$", "$$")
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def single_path(value: str, what: str = "path") -> str:
    """A path for a single-value setting such as ``WorkingDirectory=`` (taken literally, no quotes)."""
    text = specifiers(value, what)
    if text != text.strip() or text.endswith("\\"):
        # systemd strips the value's outer whitespace, and a trailing backslash continues the line.
        raise UnitValueError(f"{what} {value!r} ends in a space or backslash, which a systemd unit cannot hold; "
                             "rename it")
    return text
