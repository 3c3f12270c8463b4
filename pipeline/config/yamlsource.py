"""YAML loading that remembers where every key came from, and refuses what YAML should not allow.

Validation errors are only useful when they point at the line a user has to edit,
so the loader keeps a map from each key path (``("presets", "mosaic", "size")``)
to the 1-based line of that key in the file.

Three things plain ``yaml.safe_load`` accepts are refused here, each with a line:

- **Duplicate keys.** YAML keeps the last one silently, so a second ``presets:``
  appended to the file would throw away the first one's settings.
- **Alias bombs.** Aliases (``*name``) share one node in the composed graph, so
  the graph stays as small as the file; but every later step (line map,
  validation, merging of ``preset_defaults``) walks the *expanded* tree, and
  nine levels of nine aliases expand to 387 million values. The expansion is
  counted on the composed graph, before anything is constructed, and the walk
  stops at :data:`MAX_ALIAS_EXPANSION` values, so a bomb costs constant time
  and memory. An alias inside its own anchor (``cyc: &c [*c]``) is a loop that
  expands without end: it is found first, by a walk over the composed graph's
  distinct nodes, and nothing deeper than :data:`MAX_DEPTH` levels is walked.
- **Syntax errors in PyYAML's words.** ``expected <block end>, but found
  '<block mapping start>'`` becomes "indentation doesn't match the lines above".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent

KeyPath = tuple[str | int, ...]

#: Most values that aliases may add to a document. A config written by hand uses a handful;
#: a "billion laughs" document needs millions.
MAX_ALIAS_EXPANSION = 10_000

#: Deepest nesting of the expanded document. A config nests five or six levels; aliases can stack a file's
#: nesting many times over, and every value's key path is as long as its depth.
MAX_DEPTH = 64

MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class YamlProblem:
    """One problem with the YAML itself, at a 1-based line (and column, for syntax errors)."""

    line: int
    message: str
    column: int | None = None
    key: KeyPath = ()

    def format(self, path: Path | str) -> str:
        """``FILE:LINE:COL: message`` for syntax, ``FILE:LINE: dotted.key: message`` for a key."""
        where = f"{path}:{self.line}" + (f":{self.column}" if self.column is not None else "")
        if self.key:
            return f"{where}: {'.'.join(map(str, self.key))}: {self.message}"
        return f"{where}: {self.message}"


class YamlSyntaxError(Exception):
    """The text is not a usable YAML document; ``problems`` says where and why (at least one)."""

    def __init__(self, problems: list[YamlProblem]) -> None:
        super().__init__("; ".join(problem.message for problem in problems))
        self.problems = problems
        self.line = problems[0].line
        self.message = problems[0].message

    def format(self, path: Path | str) -> list[str]:
        return [problem.format(path) for problem in self.problems]


@dataclass
class YamlDocument:
    """Parsed YAML data plus the line of every mapping key and sequence item."""

    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int:
        """Line of the deepest known prefix of ``path`` (1 when nothing matches)."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return 1


class _Loader(yaml.SafeLoader):
    """SafeLoader that remembers where each alias was *used* (a node only knows where it was defined)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        #: (id(parent node), id(key node) or item index) -> 1-based line of the ``*alias`` there.
        self.alias_lines: dict[tuple[int, int], int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if parent is not None and index is not None and self.check_event(AliasEvent):
            slot = index if isinstance(index, int) else id(index)
            self.alias_lines[(id(parent), slot)] = self.peek_event().start_mark.line + 1
        return super().compose_node(parent, index)


# PyYAML's problem texts (regex on "context | problem") -> what to tell a person. ``{start}`` is where
# the unclosed thing was opened (PyYAML's context mark).
_PLAIN_SYNTAX = [
    (r"found character '\\t'", "a tab character: YAML indents with spaces only"),
    (r"expected <block end>, but found", "indentation doesn't match the lines above"),
    (r"mapping values are not allowed here",
     "a ':' where none belongs: check the indentation, or put quotes around a value that contains ': '"),
    (r"could not find expected ':'", "a key without ':' (or a line indented like a key by mistake)"),
    (r"while parsing a flow sequence", "the '[' at {start} is not closed with ']' (or an item lacks a ',')"),
    (r"while parsing a flow mapping", "the '{{' at {start} is not closed with '}}' (or an item lacks a ',')"),
    (r"while scanning a (double-)?quoted scalar.*(unknown escape character|escape sequence)",
     "an unknown '\\' escape in a double-quoted string: use single quotes for paths with '\\'"),
    (r"while scanning a quoted scalar", "the quote at {start} is not closed"),
    (r"found undefined alias '?([^' ]+)'?", "alias '*{0}' is used before (or without) an anchor '&{0}'"),
    (r"found duplicate anchor '?([^' ;]+)'?", "anchor '&{0}' is defined twice"),
    (r"expected a single document", "more than one document ('---'): a config is a single document"),
    (r"found character '(.)' that cannot start any token", "a value cannot start with '{0}': put it in quotes"),
    (r"could not determine a constructor for the tag '([^']*)'", "unknown tag '{0}': remove it"),
    (r"found unhashable key", "a key must be a plain value, not a list or mapping"),
    (r"while scanning an? (alias|anchor)", "an alias or anchor name must follow '*' or '&' directly"),
    (r"found unexpected end of stream", "the file ends in the middle of a value (a quote or bracket not closed?)"),
]


def _plain_syntax_message(exc: yaml.MarkedYAMLError) -> str:
    context = (exc.context or "").strip()
    problem = (exc.problem or "").strip()
    text = f"{context} | {problem}"
    start = exc.context_mark
    where = f"line {start.line + 1}, column {start.column + 1}" if start is not None else "its start"
    for pattern, plain in _PLAIN_SYNTAX:
        match = re.search(pattern, text, flags=re.DOTALL)
        if match:
            return plain.format(*match.groups(), start=where)
    return " ".join(part for part in (context, problem) if part) or "invalid YAML"


def _syntax_problem(exc: yaml.MarkedYAMLError) -> YamlProblem:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, None)
    return YamlProblem(line=line, column=column, message=f"YAML syntax error: {_plain_syntax_message(exc)}")


def _scalar_key(node: yaml.Node) -> Any:
    """The key a scalar key node stands for, compared as YAML would after construction."""
    return (node.tag, node.value)


_NO_PART = object()  # a child at its parent's own key path (a merged mapping, a mapping used as a key)


def _children(node: yaml.Node) -> list[tuple[yaml.Node, Any, tuple[int, int]]]:
    """A node's children, in document order: (child, the key path part it adds, its slot in ``alias_lines``)."""
    if isinstance(node, yaml.MappingNode):
        found: list[tuple[yaml.Node, Any, tuple[int, int]]] = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                found.append((value_node, _NO_PART, (id(node), id(key_node))))
            elif isinstance(key_node, yaml.ScalarNode):
                found.append((value_node, key_node.value, (id(node), id(key_node))))
            else:
                found += [(key_node, _NO_PART, (id(node), -1)), (value_node, _NO_PART, (id(node), id(key_node)))]
        return found
    if isinstance(node, yaml.SequenceNode):
        return [(item, index, (id(node), index)) for index, item in enumerate(node.value)]
    return []


def _find_cycle(root: yaml.Node, alias_lines: dict[tuple[int, int], int]) -> YamlProblem | None:
    """The alias that closes a loop in the composed graph (``cyc: &c [*c]``), or None when there is none.

    A depth-first walk over *distinct* collection nodes, each holding a link to its parent's entry
    rather than its whole key path, so time and memory are linear in the file's size however the
    aliases would expand. A loop must be refused before anything walks the expanded tree: it expands
    without end, one level deeper each time (a 413-byte loop once cost 425 MB before the expansion
    limit stopped it).
    """
    state: dict[int, int] = {}  # 1: on the current path, 2: finished
    # (node, its link, leaving?); a link is (parent's link, key path part) or None at the root
    stack: list[tuple[yaml.Node, Any, bool]] = [(root, None, False)]
    while stack:
        node, link, leaving = stack.pop()
        if leaving:
            state[id(node)] = 2
            continue
        if state.get(id(node)) == 2:
            continue
        state[id(node)] = 1
        stack.append((node, link, True))
        children = [child for child in _children(node) if not isinstance(child[0], yaml.ScalarNode)]
        for child, part, slot in children:
            if state.get(id(child)) == 1:
                parts: list[Any] = [] if part is _NO_PART else [part]
                while link is not None:
                    link, above = link
                    if above is not _NO_PART:
                        parts.append(above)
                line = alias_lines.get(slot) or child.start_mark.line + 1
                return YamlProblem(line, "an alias ('*name') here refers to a value that contains it: a loop "
                                   "that never ends; refused", key=tuple(reversed(parts)))
        stack.extend((child, (link, part), False) for child, part, _ in reversed(children))
    return None


def _walk(root: yaml.Node, alias_lines: dict[tuple[int, int], int]) -> dict[KeyPath, int]:
    """Record the line of every key, and refuse duplicate keys and alias bombs.

    One iterative depth-first walk over the expanded tree (what construction and
    validation will see), in document order. Values reached through an alias are
    counted; past :data:`MAX_ALIAS_EXPANSION` the walk stops, so its cost is
    bounded by the file's size plus that limit, whatever the aliases would
    expand to. Raises :class:`YamlSyntaxError`.
    """
    lines: dict[KeyPath, int] = {}
    problems: list[YamlProblem] = []
    seen: set[int] = set()
    expanded = 0
    # (node, its key path, (line, key path) of the outermost alias it was reached through)
    stack: list[tuple[yaml.Node, KeyPath, tuple[int, KeyPath] | None]] = [(root, (), None)]
    while stack:
        node, path, via_alias = stack.pop()
        if via_alias is not None:
            expanded += 1
            if expanded > MAX_ALIAS_EXPANSION:
                line, key = via_alias
                message = (f"aliases ('*name') expand the document past {MAX_ALIAS_EXPANSION} values here: refused "
                           "as a YAML bomb; write the settings out instead")
                raise YamlSyntaxError([YamlProblem(line, message, key=key)])
        if len(path) > MAX_DEPTH:
            line = via_alias[0] if via_alias is not None else node.start_mark.line + 1
            raise YamlSyntaxError([YamlProblem(line, f"values nest more than {MAX_DEPTH} levels deep here: "
                                               "a config nests a few; refused", key=path[:1])])
        first_visit = id(node) not in seen
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            continue
        children: list[tuple[yaml.Node, KeyPath, tuple[int, KeyPath] | None]] = []
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            merges: list[tuple[yaml.Node, yaml.Node]] = []
            for key_node, value_node in node.value:
                if key_node.tag == MERGE_TAG:
                    merges.append((key_node, value_node))
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    children.append((key_node, path, via_alias))  # still counted against the bomb limit
                    children.append((value_node, path, via_alias))
                    continue
                key_path = path + (key_node.value,)
                key_line = key_node.start_mark.line + 1
                lines.setdefault(key_path, key_line)
                identity = _scalar_key(key_node)
                if identity in first_line:
                    if first_visit:
                        problems.append(YamlProblem(
                            key_line, f"duplicate key (first at line {first_line[identity]})", key=key_path
                        ))
                else:
                    first_line[identity] = key_line
                alias_line = alias_lines.get((id(node), id(key_node)))
                child_via = via_alias or ((alias_line, key_path) if alias_line is not None else None)
                children.append((value_node, key_path, child_via))
            # ``<<: *base`` merges base's keys into this mapping: its lines count for this path,
            # after the keys written here (which win).
            for key_node, value_node in merges:
                alias_line = alias_lines.get((id(node), id(key_node)))
                child_via = via_alias or ((alias_line, path) if alias_line is not None else None)
                children.append((value_node, path, child_via))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                item_path = path + (index,)
                alias_line = alias_lines.get((id(node), index))
                lines.setdefault(item_path, alias_line if alias_line is not None else item.start_mark.line + 1)
                child_via = via_alias or ((alias_line, item_path) if alias_line is not None else None)
                children.append((item, item_path, child_via))
        stack.extend(reversed(children))
    if problems:
        raise YamlSyntaxError(sorted(problems, key=lambda problem: problem.line))
    return lines


def parse_yaml(text: str) -> YamlDocument:
    """Parse one YAML document; raise :class:`YamlSyntaxError` on bad syntax, duplicate keys or alias bombs."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader refuses control characters here already
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(data=None)
        cycle = _find_cycle(node, loader.alias_lines)
        if cycle is not None:
            raise YamlSyntaxError([cycle])
        lines = _walk(node, loader.alias_lines)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise YamlSyntaxError([_syntax_problem(exc)]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise YamlSyntaxError([YamlProblem(
            line, f"YAML syntax error: the control character #x{exc.character:04x} is not allowed", column=column
        )]) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError([YamlProblem(1, f"YAML error: {exc}")]) from None
    except RecursionError:
        raise YamlSyntaxError([YamlProblem(1, "YAML error: values nest too deeply")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return YamlDocument(data=data, lines=lines)


def read_yaml(path: Path) -> YamlDocument:
    """Read and parse a YAML file (see :func:`parse_yaml`)."""
    return parse_yaml(path.read_text(encoding="utf-8"))
