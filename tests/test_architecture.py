"""The package's structure as docs/design.md ("Layers") states it, checked from the source.

Every import of every module of ``ckdb`` (function-level ones included) is read with ``ast``:
no import circle, no module over 800 lines, no private name taken from another module, the
record layer (``ckdb.tables``) below every operation, only the interfaces above the ``Store``
facade, and ``lmdb`` only in ``ckdb._env``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "ckdb"
MAX_LINES = 800

#: What the record layer may import (besides itself): the byte format, the environment, the
#: manifest checks of capture. Nothing that operates on a store.
RECORD_LAYER_MAY_IMPORT = {
    "ckdb._env",
    "ckdb.capture",
    "ckdb.codec",
    "ckdb.encoding",
    "ckdb.errors",
    "ckdb.keys",
    "ckdb.layout",
    "ckdb.meta",
    "ckdb.records",
    "ckdb.retention",
}
#: The facade and what is built on it (the only modules that may import ckdb.store).
ABOVE_THE_FACADE = ("ckdb", "ckdb.cli", "ckdb.demo", "ckdb.summary", "ckdb.testing",
                    "ckdb.integrations")  # fmt: skip


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The ckdb module an imported dotted name lives in (a module or its package)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> list[tuple[str, ast.AST]]:
    """(imported module or name, node) for every import in ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, node) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.extend((f"{base}.{alias.name}", node) for alias in node.names)
    return out


def _edges(module: str) -> set[str]:
    found = set()
    for name, _node in _imports(module):
        target = _resolve(name) if name.startswith("ckdb") else None
        if target is not None and target != module:
            found.add(target)
    return found


GRAPH = {m: _edges(m) for m in MODULES}


def _cycle() -> list[str] | None:
    """One import circle, or None (depth-first search with colours)."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if colour.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in colour and (found := visit(nxt)):
                return found
        stack.pop()
        colour[node] = 2
        return None

    for start in sorted(GRAPH):
        if start not in colour and (found := visit(start)):
            return found
    return None


def test_the_walk_sees_the_package() -> None:
    # A walk that read nothing would pass every check below.
    assert {"ckdb.store", "ckdb.tables", "ckdb.tables.checkpoints", "ckdb.cli"} <= set(MODULES)
    assert "ckdb.tables" in GRAPH["ckdb.reading"]
    assert "ckdb.reading" in GRAPH["ckdb.store"]


def test_no_import_circle() -> None:
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_the_circle_finder_finds_a_circle() -> None:
    GRAPH["ckdb.layout"].add("ckdb.store")
    try:
        found = _cycle()
    finally:
        GRAPH["ckdb.layout"].discard("ckdb.store")
    assert found is not None and found[0] == found[-1]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module: str) -> None:
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines (split it: docs/design.md, Layers)"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_crosses_a_module_boundary(module: str) -> None:
    imported_modules: dict[str, str] = {}  # local alias -> ckdb module
    for name, node in _imports(module):
        if not name.startswith("ckdb"):
            continue
        head, _, last = name.rpartition(".")
        is_module = name in MODULES
        if isinstance(node, ast.ImportFrom) and not is_module and head in MODULES:
            assert not (last.startswith("_") and not last.startswith("__")), (
                f"{module} imports the private name {last} from {head}"
            )
        if is_module:
            alias = next(a for a in node.names if name.endswith(a.name))  # type: ignore[attr-defined]
            imported_modules[alias.asname or alias.name.rpartition(".")[2]] = name
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in imported_modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            raise AssertionError(
                f"{module} uses {imported_modules[node.value.id]}.{node.attr} (private)"
            )


def test_the_record_layer_imports_only_the_format_below_it() -> None:
    for module, targets in GRAPH.items():
        if module == "ckdb.tables" or module.startswith("ckdb.tables."):
            above = {t for t in targets if not t.startswith("ckdb.tables")}
            assert above <= RECORD_LAYER_MAY_IMPORT, (module, above - RECORD_LAYER_MAY_IMPORT)


def test_only_the_interfaces_import_the_facade() -> None:
    for module, targets in GRAPH.items():
        if "ckdb.store" in targets:
            assert module in ABOVE_THE_FACADE or module.startswith(
                tuple(f"{m}." for m in ABOVE_THE_FACADE[1:])
            ), f"{module} imports ckdb.store: operations take the record layer instead"


def test_the_record_layer_imports_no_framework() -> None:
    """The LangGraph saver's keys and records live in the record layer so that scrub checks
    them where LangGraph is not installed: nothing there may import it (or another framework)."""
    for module in MODULES:
        if module.startswith("ckdb.tables"):
            names = {name.split(".")[0] for name, _node in _imports(module)}
            assert not names & {"langgraph", "langchain_core"}, (module, names)


def test_only_env_imports_lmdb() -> None:
    for module in MODULES:
        names = {name.split(".")[0] for name, _node in _imports(module)}
        if "lmdb" in names:
            assert module == "ckdb._env", f"{module} imports lmdb (only ckdb._env may)"
