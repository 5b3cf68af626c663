"""The package's import graph: no cycle, and the flow one way (issue #14).

``api → operations → engines (signing, cns) → keys / trust / stores``: a module never
imports from a layer above its own. Read from the source with :mod:`ast` (no import
is executed), counting every import a module can run — at the top, or inside a
function (a lazy import dodges a cycle at run time, it does not remove it) — but not
those under ``if TYPE_CHECKING:``, which exist for the type checker only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sidecar"

#: Layers that may not import the API layer, nor the HTTP server side of aiohttp.
BELOW_API = ("operations", "cns", "signing", "keys", "trust")

#: Imports upward still there: (module, what it imports). Each one listed here is
#: checked to exist still: when it goes, remove it from this list.
ALLOWED_UPWARD: frozenset[tuple[str, str]] = frozenset(
    {
        # The CNS simulator is an HTTP server by nature: the CNS's stand-in, which the
        # daemon talks to as a client; it is no part of the daemon's layers.
        ("sidecar.cns.simulator", "aiohttp.web"),
    }
)


#: Imports that close a cycle, allowed: each is checked to exist still; when it goes,
#: remove it from this list. None today: keep it that way.
ALLOWED_CYCLE_EDGES: frozenset[tuple[str, str]] = frozenset()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, skipping the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for other in node.orelse:
                yield from _imports(other)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node)


def imported_names(name: str, path: Path) -> set[str]:
    """The dotted names *name*'s imports reach: ``import x.y`` gives ``x.y``; ``from x
    import y`` gives ``x.y`` (a submodule, or a name in ``x``: :func:`import_graph`
    keeps whichever is a module) and, when *y* is not a submodule, ``x`` itself."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _imports(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = name.split(".")
            if not is_package:
                base.pop()
            base = base[: len(base) - (node.level - 1)]
            module = ".".join([*base, node.module] if node.module else base)
        else:
            module = node.module or ""
        found.update(f"{module}.{alias.name}" for alias in node.names)
        found.add(f"{module}.*")  # the module itself, unless every name is a submodule
    return found


def import_graph() -> dict[str, set[str]]:
    """``sidecar`` module → the ``sidecar`` modules it imports.

    ``from . import fastkeys`` inside ``sidecar.sandbox`` is an edge to
    ``sidecar.sandbox.fastkeys``, not to the package (whose ``__init__`` is under way);
    ``from .pki import SandboxPKI`` is an edge to ``sidecar.sandbox.pki``."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        names = imported_names(name, path)
        targets = {n for n in names if n in modules}
        for star in (n for n in names if n.endswith(".*")):
            module = star[:-2]
            # ``from x import a, b``: an edge to x when a or b is a name defined in x.
            takes_names = any(
                n.rsplit(".", 1)[0] == module and n not in modules and not n.endswith(".*")
                for n in names
            )
            if module in modules and takes_names:
                targets.add(module)
        graph[name] = targets - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def upward_imports() -> set[tuple[str, str]]:
    """(module, target) for each import of the API, or of ``aiohttp.web``, below the API."""
    modules = _modules()
    graph = import_graph()
    found = set()
    for name, path in modules.items():
        if name.split(".")[1:2] and name.split(".")[1] in BELOW_API:
            found.update((name, t) for t in graph[name] if t.startswith("sidecar.api"))
            names = imported_names(name, path)
            if any(n == "aiohttp.web" or n.startswith("aiohttp.web.") for n in names):
                found.add((name, "aiohttp.web"))
    return found


def test_no_import_cycle() -> None:
    graph = import_graph()
    gone = sorted(e for e in ALLOWED_CYCLE_EDGES if e[1] not in graph.get(e[0], set()))
    assert not gone, f"gone: remove them from ALLOWED_CYCLE_EDGES: {gone}"
    for module, target in ALLOWED_UPWARD | ALLOWED_CYCLE_EDGES:
        graph.get(module, set()).discard(target)
    found = cycles(graph)
    assert not found, f"import cycles: {[sorted(c) for c in found]}"


def test_nothing_below_the_api_imports_it() -> None:
    found = upward_imports()
    assert sorted(found - ALLOWED_UPWARD) == [], "imports of the API layer from below it"
    assert sorted(ALLOWED_UPWARD - found) == [], "gone: remove them from ALLOWED_UPWARD"


def test_the_check_finds_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """The reading above on a made-up graph: a cycle is found, its members named."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from ..api import app\n"
        "if TYPE_CHECKING:\n    from ..api.keys import SERVICES\n"
        "def f():\n    from .other import thing\n"
    )
    assert imported_names("sidecar.cns.mod", source) == {
        "typing.*",
        "typing.TYPE_CHECKING",
        "sidecar.api.*",
        "sidecar.api.app",
        "sidecar.cns.other.*",
        "sidecar.cns.other.thing",
    }
