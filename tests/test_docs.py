"""The reference documents every public name; the docs' examples work; their README excerpts exist.

The docs build itself (``sphinx-build -W``) runs in .ci/run, which points
``SOCKS_SANSIO_DOCS_HTML`` at its output; the inventory test reads the
``objects.inv`` found there (locally: build the docs, then set the variable).
"""

from __future__ import annotations

import importlib.util
import os
import re
import zlib
from pathlib import Path
from types import ModuleType

import pytest

import socks_sansio
from socks_sansio import ServerConfig

from .adapters.servers import SOCKS5_OK, serve, socks5_connect_handler

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MODULES = ("client_operations", "server_operations")  # modules in __all__, documented with automodule
ADAPTERS = (
    "socks_sansio.adapters.sync",
    "socks_sansio.adapters.asyncio",
    "socks_sansio.adapters.trio",
    "socks_sansio.adapters.server.asyncio",
    "socks_sansio.adapters.server.trio",
)


def _documented_in_sources() -> set[str]:
    """Full names the reference's autodoc directives name."""
    names: set[str] = set()
    for path in sorted((DOCS / "reference").glob("*.rst")):
        module = None
        for line in path.read_text(encoding="utf-8").splitlines():
            if match := re.match(r"\.\. (?:current)?module:: (\S+)", line):
                module = match.group(1)
            elif match := re.match(r"\.\. auto(?:class|function|data|exception|module|attribute)::\s+(\S+)", line):
                target = match.group(1)
                names.add(target if line.startswith(".. automodule::") or module is None else f"{module}.{target}")
    return names


def test_reference_sources_name_every_public_name() -> None:
    documented = _documented_in_sources()
    missing = [name for name in socks_sansio.__all__ if f"socks_sansio.{name}" not in documented]
    assert not missing, f"add these to docs/reference/*.rst: {missing}"
    assert not [name for name in ADAPTERS if name not in documented]


def _inventory(path: Path) -> dict[str, str]:
    """``{name: role}`` from a Sphinx ``objects.inv`` (version 2: four header lines, then zlib)."""
    raw = path.read_bytes()
    header_end = 0
    for _ in range(4):
        header_end = raw.index(b"\n", header_end) + 1
    assert raw.startswith(b"# Sphinx inventory version 2"), raw[:40]
    entries = {}
    for line in zlib.decompress(raw[header_end:]).decode("utf-8").splitlines():
        if match := re.match(r"(.+?)\s+(\S+:\S+)\s+-?\d+\s+\S+\s+.*", line):
            entries[match.group(1)] = match.group(2)
    return entries


def test_the_built_inventory_has_every_public_name() -> None:
    html = os.environ.get("SOCKS_SANSIO_DOCS_HTML")
    if not html:
        if os.environ.get("CI"):
            pytest.fail("SOCKS_SANSIO_DOCS_HTML is not set: .ci/run builds the docs before the tests")
        pytest.skip("no docs build: run sphinx-build -b html docs DIR, then set SOCKS_SANSIO_DOCS_HTML=DIR")
    inventory = _inventory(Path(html) / "objects.inv")
    missing = [name for name in socks_sansio.__all__ if f"socks_sansio.{name}" not in inventory]
    assert not missing, f"not in the built reference: {missing}"
    for name in MODULES:
        assert inventory[f"socks_sansio.{name}"] == "py:module"
    for name in ADAPTERS:
        assert inventory[name] == "py:module"
    assert inventory["socks_sansio.Socks5Connection.next_event"] == "py:method"  # inherited members are there


def test_every_readme_excerpt_still_exists() -> None:
    """The guide includes README sections between headings: a renamed heading must be noticed."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    markers = []
    for page in DOCS.rglob("*.md"):
        text = page.read_text(encoding="utf-8")
        markers += re.findall(r'^:(?:start-after|end-before): "(.*)"$', text, flags=re.M)
    assert len(markers) >= 10
    missing = [marker for marker in markers if marker not in readme]
    assert not missing, f"README.md no longer has: {missing}"


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", DOCS / "_examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_blocking_runner_example_connects_through_a_proxy() -> None:
    runner = _example("blocking_runner")
    with serve(socks5_connect_handler(SOCKS5_OK)) as proxy:
        sock = runner.connect("192.0.2.7", 80, f"socks5://127.0.0.1:{proxy.port}")
        with sock:
            sock.settimeout(10)
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"  # the scripted proxy echoes once the tunnel is up


def test_the_blocking_runner_example_reports_the_proxys_refusal() -> None:
    runner = _example("blocking_runner")
    refused = b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00"  # REP 5: connection refused
    with serve(socks5_connect_handler(refused)) as proxy, pytest.raises(socks_sansio.ProxyRefusedError) as info:
        runner.connect("192.0.2.7", 80, f"socks5://127.0.0.1:{proxy.port}")
    assert info.value.code == 5


def test_the_toml_example_is_a_working_configuration() -> None:
    from socks_sansio.adapters.cli.serve import config_from_argv

    config = config_from_argv(["--config", str(DOCS / "_examples" / "proxy.toml")])
    assert isinstance(config, ServerConfig)
    assert config.listen == (("127.0.0.1", 1080), ("::1", 1080))
    assert config.users is not None
    assert config.policy.block_private
