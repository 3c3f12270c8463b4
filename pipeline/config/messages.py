"""Problems in ``config.yaml`` as ``FILE:LINE: dotted.key: message``, in the user's words.

Why a module of its own: pydantic reports a problem at a location inside the
*assembled* document (presets merged with ``preset_defaults``, union members named
by their types) and in its own words (``String should match pattern ...``). A user
edits a YAML file, so every problem is mapped back to the key and line they wrote
and said with the choices and the nearest allowed value ("did you mean").
:class:`~pipeline.errors.ConfigError` carries the lines.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.config.yamlsource import KeyPath, YamlDocument


def did_you_mean(value: Any, choices: Iterable[Any]) -> str:
    """``"; did you mean 'cuda'?"`` for the nearest choice (difflib), or ``""`` when none is near."""
    names = [str(choice) for choice in choices]
    text = str(value)
    same_but_case = [name for name in names if name.lower() == text.lower()]
    match = same_but_case or difflib.get_close_matches(text, names, n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def data_path(data: Any, loc: tuple[Any, ...]) -> KeyPath:
    """Keep only the parts of a pydantic error location that index into the data.

    Pydantic inserts union-member names (``list[StyleRef]``, ``function-after[...]``)
    into locations; users only know their own keys.
    """
    path: list[str | int] = []
    current = data
    for part in loc:
        if isinstance(current, Mapping) and part in current:
            path.append(part)
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            path.append(part)
            current = current[part]
        elif isinstance(current, Mapping) and isinstance(part, str) and not re.search(r"[\[\]]", part):
            path.append(part)  # a missing required key, or an unknown one
            current = None
    return tuple(path)


class ProblemCollector:
    """Formats problems as ``FILE:LINE: dotted.key: message`` using the YAML line map; each once."""

    def __init__(self, path: Path, doc: YamlDocument) -> None:
        self.path = path
        self.doc = doc
        self._problems: dict[str, int] = {}

    def add(self, key: KeyPath, message: str) -> None:
        dotted = ".".join(str(part) for part in key) or "(top level)"
        line = self.doc.line_of(key)
        self._problems.setdefault(f"{self.path}:{line}: {dotted}: {message}", line)

    @property
    def problems(self) -> list[str]:
        """Every problem, in file order."""
        return sorted(self._problems, key=lambda text: self._problems[text])


def _members(annotation: Any) -> list[Any]:
    """The types an annotation may hold, with ``Annotated`` and unions unwrapped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [member for arg in typing.get_args(annotation) for member in _members(arg)]
    return [annotation]


def allowed_keys(model: type[BaseModel], path: KeyPath) -> list[str]:
    """The keys the config accepts in the mapping at ``path`` (to suggest one for a typo)."""
    candidates: list[Any] = [model]
    for part in path:
        following: list[Any] = []
        for candidate in (member for annotation in candidates for member in _members(annotation)):
            origin = typing.get_origin(candidate)
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                if isinstance(part, str) and part in candidate.model_fields:
                    following.append(candidate.model_fields[part].annotation)
            elif origin is dict and isinstance(part, str):
                following.append(typing.get_args(candidate)[1])
            elif origin is list and isinstance(part, int):
                following.append(typing.get_args(candidate)[0])
        candidates = following
    keys: list[str] = []
    for candidate in (member for annotation in candidates for member in _members(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            keys.extend(key for key in candidate.model_fields if key not in keys)
    return keys


def pydantic_message(error: Mapping[str, Any], model: type[BaseModel], path: KeyPath) -> str:
    """Pydantic's message in the user's words: choices and a near match rather than a pattern."""
    if error["type"] == "extra_forbidden":
        return "unknown key" + did_you_mean(path[-1], allowed_keys(model, path[:-1])) if path else "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    message = str(error["msg"])
    message = re.sub(r"^(Value|Assertion) error, ", "", message)
    if error["type"] == "literal_error":
        choices = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        message = f"{message}{did_you_mean(error['input'], choices)}"
    if error["type"] in {"model_type", "dict_type", "list_type"} or message.startswith("unknown "):
        return message  # the message names the value already, or the value is a whole section
    shown = repr(error["input"])
    return f"{message} (got {shown if len(shown) <= 60 else shown[:57] + '...'})"


def _has_path(data: Any, path: KeyPath) -> bool:
    for part in path:
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return False
    return True


def where_written(key: KeyPath, raw: Mapping[str, Any]) -> KeyPath:
    """Where a problem in a merged preset was written: the preset itself, or ``preset_defaults``.

    Every preset starts from ``preset_defaults``, so a mistake there would
    otherwise be reported once per preset, at keys the user never wrote.
    """
    if len(key) < 3 or key[0] != "presets":
        return key
    own = raw.get("presets")
    name, inside = key[1], tuple(key[2:])
    if isinstance(own, Mapping) and _has_path(own.get(name), inside):
        return key
    if _has_path(raw.get("preset_defaults"), inside):
        return ("preset_defaults",) + inside
    return key
