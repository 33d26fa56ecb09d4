"""Dependencies point inward (DESIGN section 1, STYLE.md): checked on the source, so a shortcut fails CI.

- ``core`` imports only the standard library and ``core`` itself: no clock, no I/O, no third-party code;
- ``service`` knows ports, never drivers: no ``adapters``, ``entrypoints``, ``sandbox`` or ``bootstrap``;
- ``adapters`` never import entrypoints, the service layer or each other (``db`` may use ``crypto``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "grantkeeper"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", modules_under("core"), ids=lambda p: p.name)
def test_core_imports_only_the_standard_library_and_itself(path: Path):
    for name in imported_modules(path):
        top = name.split(".")[0]
        if top == "grantkeeper":
            assert name.startswith("grantkeeper.core"), f"{path.name} imports {name}"
        else:
            assert top in sys.stdlib_module_names or top == "__future__", f"{path.name} imports {name}"


@pytest.mark.parametrize("path", modules_under("service"), ids=lambda p: p.name)
def test_service_knows_ports_never_drivers(path: Path):
    forbidden = (
        "grantkeeper.adapters",
        "grantkeeper.entrypoints",
        "grantkeeper.sandbox",
        "grantkeeper.bootstrap",
    )
    for name in imported_modules(path):
        assert not name.startswith(forbidden), f"{path.name} imports {name}"
        assert name.split(".")[0] not in ("sqlalchemy", "aiohttp", "starlette", "uvicorn"), name


@pytest.mark.parametrize("path", modules_under("adapters"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_adapters_never_import_entrypoints_service_or_each_other(path: Path):
    own = path.relative_to(PACKAGE / "adapters").parts[0].removesuffix(".py")
    allowed = {own, "crypto"} if own == "db" else {own}
    for name in imported_modules(path):
        assert not name.startswith(
            ("grantkeeper.entrypoints", "grantkeeper.service", "grantkeeper.bootstrap")
        )
        if name.startswith("grantkeeper.adapters."):
            assert name.split(".")[2] in allowed, f"{path.name} imports {name}"
