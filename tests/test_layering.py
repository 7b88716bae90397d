"""The layers import only downward: core, then plans and session (pure), then the backends.

Read from the source (``ast``), so a violation is found whether or not the
import would run: the core (``socks_sansio/``, the plans and the session
included) imports no I/O module and nothing of ``socks_sansio.adapters``; the
adapters import only public core names (``from socks_sansio import ...``),
never a private core module; each client runner imports only its own backend.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = sorted(p for p in (ROOT / "socks_sansio").rglob("*.py") if "adapters" not in p.relative_to(ROOT).parts)
ADAPTERS = sorted((ROOT / "adapters").rglob("*.py"))
IO_MODULES = {"socket", "select", "selectors", "asyncio", "trio", "ssl", "uvloop", "anyio"}
BACKENDS = {"asyncio", "trio", "socket", "ssl", "selectors"}


def imports_of(path: Path) -> set[str]:
    """Every module *path* imports, absolute (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if package.startswith("adapters"):
        package = "socks_sansio." + package
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_the_files_are_found() -> None:
    assert len(CORE) > 30
    assert len(ADAPTERS) > 15


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_imports_no_io_and_no_adapter(path: Path) -> None:
    imported = imports_of(path)
    assert not {m for m in imported if m.split(".")[0] in IO_MODULES}, "an I/O module in the pure core"
    assert not {m for m in imported if m.startswith("socks_sansio.adapters") or m.split(".")[0] == "adapters"}


def test_the_plans_and_the_session_are_in_the_core() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in CORE}
    assert {"socks_sansio/_client/plan.py", "socks_sansio/_server/session.py"} <= names


@pytest.mark.parametrize("path", ADAPTERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_adapters_use_only_public_core_names(path: Path) -> None:
    private = {
        m for m in imports_of(path)
        if m.startswith("socks_sansio._") and not m.startswith(("socks_sansio.adapters", "socks_sansio.__"))
    }
    assert not private, f"private core modules imported: {sorted(private)}"


@pytest.mark.parametrize(
    ("runner", "own"),
    [("sync", {"socket", "ssl", "selectors"}), ("asyncio", {"asyncio", "socket", "ssl"}), ("trio", {"trio", "ssl"})],
)
def test_each_client_runner_imports_only_its_own_backend(runner: str, own: set[str]) -> None:
    files = sorted((ROOT / "adapters" / "client").glob(f"{runner}*.py"))
    assert files
    for path in files:
        backends = {m.split(".")[0] for m in imports_of(path)} & (BACKENDS | {"trio"})
        assert backends <= own, f"{path.name} imports {sorted(backends - own)}"


def test_no_source_file_is_over_600_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in [*CORE, *ADAPTERS] if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long
