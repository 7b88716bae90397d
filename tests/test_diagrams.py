"""docs/diagrams.py draws every state and every transition of each machine's table, in both roles.

The docs' state diagrams are generated from the tables, so a state or a
transition added to a machine appears in them by itself; these tests make sure
nothing is lost on the way (and that each edge's label names the input the
machine's own ``classify`` gives that event).
"""

from __future__ import annotations

import enum
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from socks_sansio import CLIENT, SERVER, Role

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_diagrams", DOCS / "diagrams.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


diagrams = _load()
CASES = [(key, role) for key in sorted(diagrams.PROTOCOLS) for role in (CLIENT, SERVER)]


def _edges(dot: str) -> list[tuple[str, str, str]]:
    """``(source, target, attributes)`` of every edge line."""
    return re.findall(r'^\s*"([A-Z_]+)" -> "([A-Z_]+)" \[(.*)\];$', dot, flags=re.M)


def _nodes(dot: str) -> set[str]:
    return set(re.findall(r'^\s*"([A-Z_]+)" \[', dot, flags=re.M))


def test_the_three_machines_are_drawn() -> None:
    assert set(diagrams.PROTOCOLS) == {"socks5", "socks4", "http"}


@pytest.mark.parametrize(("key", "role"), CASES)
def test_every_state_is_a_node(key: str, role: Role) -> None:
    protocol = diagrams.PROTOCOLS[key]
    dot = diagrams.to_dot(diagrams.diagram(protocol, role))
    assert _nodes(dot) == {state.name for state in protocol.states}
    assert f'start -> "{protocol.initial.name}"' in dot


@pytest.mark.parametrize(("key", "role"), CASES)
def test_every_transition_is_an_edge_with_the_roles_verb(key: str, role: Role) -> None:
    protocol = diagrams.PROTOCOLS[key]
    edges = _edges(diagrams.to_dot(diagrams.diagram(protocol, role)))
    for (source, input_), target in protocol.transitions.items():
        verb = "send" if protocol.sender[source] is role else "receive"
        matching = [
            attrs
            for s, t, attrs in edges
            if (s, t) == (source.name, target.name) and f'tooltip="{type(input_).__name__}.{input_.name}"' in attrs
        ]
        assert len(matching) == 1, (source, input_, target)
        assert f'label="{verb} ' in matching[0]
    table_edges = [attrs for _, _, attrs in edges if "ltail" not in attrs]
    assert len(table_edges) == len(protocol.transitions)


@pytest.mark.parametrize(("key", "role"), CASES)
def test_closed_and_error_are_reached_from_every_live_state(key: str, role: Role) -> None:
    protocol = diagrams.PROTOCOLS[key]
    dot = diagrams.to_dot(diagrams.diagram(protocol, role))
    implicit = {t for _, t, attrs in _edges(dot) if "ltail=cluster_live" in attrs}
    assert implicit == {protocol.closed.name, protocol.error.name}
    live = re.search(r"subgraph cluster_live \{(.*?)\n  \}", dot, flags=re.S)
    assert live is not None
    assert set(re.findall(r'"([A-Z_]+)" \[', live.group(1))) == {state.name for state in protocol.sender}


@pytest.mark.parametrize("key", sorted(diagrams.PROTOCOLS))
def test_every_input_has_a_label_that_classify_agrees_with(key: str) -> None:
    protocol = diagrams.PROTOCOLS[key]
    assert set(protocol.examples) == set(protocol.inputs)
    for input_, example in protocol.examples.items():
        assert protocol.classify(example.event, example.context) is input_, input_


@pytest.mark.parametrize("key", sorted(diagrams.PROTOCOLS))
def test_the_table_lists_every_transition_and_every_unused_input(key: str) -> None:
    protocol = diagrams.PROTOCOLS[key]
    rows = diagrams.table_rows(protocol)
    listed = {(row[0], row[3], row[4]) for row in rows}
    for (source, input_), target in protocol.transitions.items():
        assert (source.name, input_.name, target.name) in listed
    used = {input_ for _, input_ in protocol.transitions}
    assert len(rows) == len(protocol.transitions) + len(set(protocol.inputs) - used)


def test_a_new_state_and_transition_appear_without_touching_the_generator() -> None:
    class State(enum.Enum):
        START = "START"
        NEW_STEP = "NEW_STEP"
        DONE = "DONE"
        CLOSED = "CLOSED"
        ERROR = "ERROR"

    class Input(enum.Enum):
        GO = 1
        FINISH = 2

    class Connection:
        _ERROR, _CLOSED = State.ERROR, State.CLOSED

        def __init__(self, role: Role) -> None:
            self.state = State.START

    protocol = diagrams.Protocol(
        key="toy",
        title="toy",
        connection=Connection,
        states=State,
        inputs=Input,
        transitions={(State.START, Input.GO): State.NEW_STEP, (State.NEW_STEP, Input.FINISH): State.DONE},
        sender={State.START: CLIENT, State.NEW_STEP: SERVER},
        classify=lambda event, context: None,
        examples={},
    )
    dot = diagrams.to_dot(diagrams.diagram(protocol, SERVER))
    assert "NEW_STEP" in _nodes(dot)
    assert ("START", "NEW_STEP", 'label="receive GO"') in [(s, t, a.split(",")[0]) for s, t, a in _edges(dot)]
    assert ("NEW_STEP", "DONE", 'label="send FINISH"') in [(s, t, a.split(",")[0]) for s, t, a in _edges(dot)]


@pytest.mark.parametrize(("key", "role"), CASES)
def test_graphviz_renders_it(key: str, role: Role, tmp_path: Path) -> None:
    dot_binary = shutil.which("dot")
    if dot_binary is None:
        if os.environ.get("CI"):
            pytest.fail("Graphviz's dot is missing (.ci/install-peers.sh installs it)")
        pytest.skip("Graphviz's dot is not installed")
    source = diagrams.to_dot(diagrams.diagram(diagrams.PROTOCOLS[key], role))
    proc = subprocess.run(
        [dot_binary, "-Tsvg"], input=source, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert not proc.stderr.strip(), proc.stderr  # no warnings either
    assert "<svg" in proc.stdout


def test_command_line_prints_dot() -> None:
    proc = subprocess.run(
        [sys.executable, str(DOCS / "diagrams.py"), "http", "server"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("digraph http_server {")
