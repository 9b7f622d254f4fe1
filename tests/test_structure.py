"""The package's shape, read from its source (nothing imported): no import cycle between its modules, and no
function longer than a screen. Both are checks anyone can rerun; see issue 15."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "sparsebert"
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(node: ast.If) -> bool:
    """`if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`): imports for annotations only, never executed."""
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(tree: ast.AST, modules: set[str]) -> set[str]:
    """The package modules a module imports, wherever the import statement is (module level or inside a
    function: a deferred import still ties the two modules together), except under TYPE_CHECKING."""
    found, todo = set(), [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and is_type_checking(node):
            todo += node.orelse
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from pkg import module`
        todo += list(ast.iter_child_nodes(node))
    return {name for name in found if name in modules}


def import_graph(package: Path) -> dict[str, set[str]]:
    files = {module_name(p): p for p in package.rglob("*.py")}
    return {name: imported_modules(ast.parse(path.read_text()), set(files)) - {name} for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, as the path around it (depth-first search; each cycle reported from where it was
    first closed)."""
    found, state = [], {}  # state: 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_cycle_finder_finds_a_deferred_import_cycle():
    """The finder itself, on hand-made modules: a -> b at module level, b -> a inside a function (as
    data/tasks.py -> data/formats.py once was), c -> a without a way back."""
    trees = {"p.a": "from p import b\n", "p.b": "def f():\n    from p.a import x\n", "p.c": "import p.a\n"}
    graph = {name: imported_modules(ast.parse(code), set(trees)) - {name} for name, code in trees.items()}
    assert graph == {"p.a": {"p.b"}, "p.b": {"p.a"}, "p.c": {"p.a"}}
    assert cycles(graph) == [["p.a", "p.b", "p.a"]]
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p.a import x\n"
    assert imported_modules(ast.parse(typed), {"p.a"}) == set()


def test_the_package_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert {"sparsebert.masks", "sparsebert.dam", "sparsebert.data.tasks"} <= set(graph)
    assert "sparsebert.masks" in graph["sparsebert.dam"]  # the walk sees real edges
    assert cycles(graph) == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_is_longer_than_80_lines(path):
    """A function (from its `def` line, docstring included) that does not fit a screen does more than one thing."""
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]  # fmt: skip
    assert not long, f"{path.relative_to(SRC)}: {', '.join(long)}"
