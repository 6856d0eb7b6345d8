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
