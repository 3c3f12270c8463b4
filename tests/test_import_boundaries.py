"""The architecture's seams, checked on the import graph: no circles, torch only in the engine, a light protocol.

Every import counts, those inside functions too (a lazy import hides a circle from
Python, not from a reader). Imports under ``if TYPE_CHECKING:`` are for type
checkers only and do not count.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from conftest import REPO

TORCH = {"torch", "torchvision"}
# The engine (network, losses, optimiser, weights, style targets, device) and the plugin that drives it.
TORCH_ALLOWED = ("pipeline.engine", "plugins.vgg_style")
# Modules that everything below the app may import: they import only the standard library and these.
LIGHT = {"pipeline.execution.protocol": {"pipeline.errors"}, "pipeline.files.hashing": set(), "pipeline.daemon.state_files": set(), "pipeline.engine.weights_names": set(),
         "pipeline.errors": set()}


def _modules() -> dict[str, Path]:
    found = {}
    for path in [*REPO.glob("pipeline/**/*.py"), *REPO.glob("plugins/**/*.py")]:
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return hidden


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    hidden = _type_checking_only(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between our modules, third-party top-level packages each module imports)."""
    modules = _modules()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    external: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported in _imports(path):
            target = imported
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges[name].add(target)
            elif not target:
                external[name].add(imported.split(".")[0])
    return edges, external


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for node in sorted(edges):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_the_import_graph_has_no_circles() -> None:
    edges, _ = _graph()
    assert _cycles(edges) == []


def test_only_the_engine_and_its_plugin_import_torch() -> None:
    _, external = _graph()
    importers = sorted(name for name, packages in external.items() if packages & TORCH)
    assert importers, "the graph found no torch import at all: the check would prove nothing"
    assert [name for name in importers if not name.startswith(TORCH_ALLOWED)] == []


def test_the_light_modules_import_only_the_standard_library_and_each_other() -> None:
    edges, external = _graph()
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for name, allowed in LIGHT.items():
        assert edges[name] <= allowed, (name, edges[name] - allowed)
        assert external[name] <= stdlib, (name, external[name] - stdlib)


def test_a_cycle_is_seen_when_there_is_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_service_install_reaches_no_torch_importer() -> None:
    """``service install`` runs in a fresh interpreter on a machine that may be slow to import torch (3 s)."""
    edges, external = _graph()
    seen, todo = set(), ["pipeline.service.install"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(edges[name])
    assert [name for name in sorted(seen) if external[name] & TORCH] == []


# The rooms of pipeline/, lowest first: a module may import its own room and the rooms below, never above.
LAYERS = [
    {"errors"},
    {"files"},
    {"logs", "hookspecs", "__init__", "engine"},
    {"config"},
    {"plugin_host", "service"},
    {"app", "job"},
    {"gallery", "execution"},
    {"daemon"},
    {"commands"},
    {"cli"},
    {"__main__"},
]


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_room_of_the_core_imports_a_room_above_it() -> None:
    rank = {room: level for level, rooms in enumerate(LAYERS) for room in rooms}
    edges, _ = _graph()
    core = {name for name in edges if name.startswith("pipeline")}
    assert sorted({_room(name) for name in core} - rank.keys()) == [], "a new room needs its place in LAYERS"
    upward = sorted(f"{name} -> {target}" for name in core for target in edges[name]
                    if target in core and rank[_room(target)] > rank[_room(name)])
    assert upward == []
