"""Layer rules from STYLE.md, checked on the import graph: protocol/ does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "cowrite"
FORBIDDEN_IN_PROTOCOL = {
    "asyncio",
    "socket",
    "time",
    "selectors",
    "cowrite.server",
    "cowrite.core",
    "uvloop",
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_protocol_package_is_sans_io() -> None:
    for path in (SRC / "protocol").glob("*.py"):
        for name in imports_of(path):
            root = name.split(".")[0]
            assert name not in FORBIDDEN_IN_PROTOCOL and root not in FORBIDDEN_IN_PROTOCOL - {
                "cowrite"
            }, f"{path.name} imports {name}"
            assert not name.startswith(("cowrite.server", "cowrite.core", "cowrite.backends")), (
                f"{path.name} imports {name}"
            )


def test_core_imports_backend_interfaces_only() -> None:
    implementations = ("_sqlite", "_postgres", "_redis", "_memory")
    for path in (SRC / "core").glob("*.py"):
        for name in imports_of(path):
            assert not name.startswith("cowrite.server"), f"core/{path.name} imports {name}"
            if name.startswith("cowrite.backends."):
                assert not name.endswith(implementations), (
                    f"core/{path.name} imports the implementation {name}"
                )


def test_client_sdk_stands_alone() -> None:
    for path in (SRC / "client").glob("*.py"):
        for name in imports_of(path):
            if name.startswith("cowrite."):
                assert name.startswith(("cowrite.protocol", "cowrite.errors", "cowrite.client")), (
                    f"client/{path.name} imports {name}"
                )


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``cowrite`` modules it imports, wherever the import stands
    (inside a function or ``if TYPE_CHECKING:`` too: a cycle that only the type
    checker or a late import sees is still two modules that need each other).
    ``from package import name`` counts as importing the submodule when ``name``
    is one, else the package."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    edges.add(sub if sub in modules else base)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_cycle_check_sees_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert "cowrite.client.session" in import_graph()["cowrite.client.client"]
