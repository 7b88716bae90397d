"""State diagrams of the connection machines, generated from their transition tables.

Nothing here is drawn by hand. For each protocol the generator reads the
machine's own tables: the states (the state enum), the legal transitions
(``TRANSITIONS``, keyed by ``(state, input)``), whose turn each live state is
(``SENDER``), the initial state (a new connection's ``state``) and the ERROR
and CLOSED states every machine shares (socks_sansio/_machine.py). A new
state, input or transition therefore shows up in the docs by itself.

What is written here is only how to *name* an input on an edge: one example
event per input (``Example``). tests/test_diagrams.py checks that each
example really is classified as its input by the machine's own ``classify``,
so a label cannot drift away from the table it labels.

The tables are role-neutral (both ends obey the same rules); a diagram is one
role's view of them: in a state where it is this role's turn, the transition
is triggered by an event it *sends*, otherwise by one it *receives*.

Run ``python docs/diagrams.py socks5 client`` to print Graphviz DOT; conf.py
renders the same text with sphinx.ext.graphviz while the docs build.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from socks_sansio import (
    CLIENT,
    SERVER,
    Address,
    AuthMethod,
    Command,
    CommandReply,
    CommandRequest,
    ConnectRequest,
    ConnectResponse,
    Greeting,
    HttpConnectConnection,
    MethodSelection,
    ReplyCode,
    Role,
    Socks4Connection,
    Socks4Reply,
    Socks4ReplyCode,
    Socks4Request,
    Socks5Connection,
    UsernamePasswordReply,
    UsernamePasswordRequest,
)
from socks_sansio import _http_connection as http_table
from socks_sansio import _socks4 as socks4_table
from socks_sansio import _socks5_state as socks5_table

__all__ = ["PROTOCOLS", "Diagram", "Edge", "Example", "Protocol", "diagram", "table_rows", "to_dot"]

_TARGET = Address("example.com", 443)
_CONNECT_REQUEST = ConnectRequest(target=_TARGET)


@dataclass(frozen=True)
class Example:
    """An event that stands for one input, and what the edge says about it."""

    event: Any
    #: What ``classify`` needs besides the event (the request's command, or the HTTP request).
    context: Any = None
    #: The second line of the edge label (the first is the event's class).
    detail: str = ""

    @property
    def name(self) -> str:
        return type(self.event).__name__

    def label(self) -> str:
        return f"{self.name}\n{self.detail}" if self.detail else self.name


@dataclass(frozen=True)
class Protocol:
    """One machine and its tables."""

    key: str
    title: str
    connection: type[Any]
    states: type[enum.Enum]
    inputs: type[enum.Enum]
    transitions: Mapping[tuple[Any, Any], Any]
    sender: Mapping[Any, Role]
    classify: Callable[[Any, Any], Any]
    examples: Mapping[Any, Example]

    @property
    def initial(self) -> enum.Enum:
        state: enum.Enum = self.connection(CLIENT).state
        return state

    @property
    def error(self) -> enum.Enum:
        return self.connection._ERROR  # type: ignore[no-any-return]

    @property
    def closed(self) -> enum.Enum:
        return self.connection._CLOSED  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Edge:
    """One arrow: a table transition, or one of the two every live state has."""

    source: str
    target: str
    label: str
    #: The input (``Input.NAME``) for a table transition; ``""`` for the implicit ones.
    input: str = ""
    #: "send", "receive" or "implicit".
    kind: str = "implicit"


@dataclass(frozen=True)
class Diagram:
    protocol: Protocol
    role: Role
    #: State name -> "ours" (this role sends next), "theirs" (it receives next) or "terminal".
    nodes: dict[str, str] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    initial: str = ""


S5 = socks5_table.Input
S4 = socks4_table.Input
H = http_table.Input

PROTOCOLS: dict[str, Protocol] = {
    "socks5": Protocol(
        key="socks5",
        title="SOCKS5 (RFC 1928, with RFC 1929 inside)",
        connection=Socks5Connection,
        states=socks5_table.Socks5State,
        inputs=S5,
        transitions=socks5_table.TRANSITIONS,
        sender=socks5_table.SENDER,
        classify=socks5_table.classify,
        examples={
            S5.GREETING: Example(Greeting(methods=(AuthMethod.NO_AUTH,))),
            S5.SELECT_NO_AUTH: Example(MethodSelection(method=AuthMethod.NO_AUTH), detail="NO_AUTH"),
            S5.SELECT_USERNAME_PASSWORD: Example(
                MethodSelection(method=AuthMethod.USERNAME_PASSWORD), detail="USERNAME_PASSWORD"
            ),
            S5.SELECT_NO_ACCEPTABLE: Example(MethodSelection(method=AuthMethod.NO_ACCEPTABLE), detail="NO_ACCEPTABLE"),
            S5.SELECT_UNIMPLEMENTED: Example(MethodSelection(method=AuthMethod.GSSAPI), detail="GSSAPI or unknown"),
            S5.AUTH_REQUEST: Example(UsernamePasswordRequest(username=b"alice", password=b"s3cret")),
            S5.AUTH_SUCCESS: Example(UsernamePasswordReply(success=True), detail="success"),
            S5.AUTH_FAILURE: Example(UsernamePasswordReply(success=False), detail="failure"),
            S5.REQUEST: Example(CommandRequest(command=Command.CONNECT, address=_TARGET)),
            S5.CONNECT_SUCCEEDED: Example(
                CommandReply(code=ReplyCode.SUCCEEDED), Command.CONNECT, detail="SUCCEEDED to CONNECT"
            ),
            S5.BIND_SUCCEEDED: Example(
                CommandReply(code=ReplyCode.SUCCEEDED), Command.BIND, detail="SUCCEEDED to BIND"
            ),
            S5.UDP_ASSOCIATE_SUCCEEDED: Example(
                CommandReply(code=ReplyCode.SUCCEEDED), Command.UDP_ASSOCIATE, detail="SUCCEEDED to UDP ASSOCIATE"
            ),
            S5.REPLY_FAILED: Example(
                CommandReply(code=ReplyCode.GENERAL_FAILURE), Command.CONNECT, detail="failure (REP != 0)"
            ),
        },
    ),
    "socks4": Protocol(
        key="socks4",
        title="SOCKS4 and SOCKS4a",
        connection=Socks4Connection,
        states=socks4_table.Socks4State,
        inputs=S4,
        transitions=socks4_table.TRANSITIONS,
        sender=socks4_table.SENDER,
        classify=socks4_table.classify,
        examples={
            S4.REQUEST: Example(Socks4Request(command=Command.CONNECT, address=_TARGET)),
            S4.CONNECT_GRANTED: Example(
                Socks4Reply(code=Socks4ReplyCode.GRANTED), Command.CONNECT, detail="GRANTED to CONNECT"
            ),
            S4.BIND_GRANTED: Example(Socks4Reply(code=Socks4ReplyCode.GRANTED), Command.BIND, detail="GRANTED to BIND"),
            S4.REPLY_FAILED: Example(
                Socks4Reply(code=Socks4ReplyCode.REJECTED), Command.CONNECT, detail="rejected (CD 91-93)"
            ),
        },
    ),
    "http": Protocol(
        key="http",
        title="HTTP CONNECT (RFC 9110 §9.3.6)",
        connection=HttpConnectConnection,
        states=http_table.HttpConnectState,
        inputs=H,
        transitions=http_table.TRANSITIONS,
        sender=http_table.SENDER,
        classify=http_table.classify,
        examples={
            H.REQUEST: Example(_CONNECT_REQUEST),
            H.INTERIM: Example(ConnectResponse(status_code=100), _CONNECT_REQUEST, detail="1xx (not 101)"),
            H.SUCCESS: Example(ConnectResponse(status_code=200), _CONNECT_REQUEST, detail="2xx"),
            H.REFUSED_KEEP_ALIVE: Example(
                ConnectResponse(status_code=407, headers=[("Content-Length", "0")]),
                _CONNECT_REQUEST,
                detail=">= 300, framed, keep-alive",
            ),
            H.REFUSED_CLOSE: Example(
                ConnectResponse(status_code=403, headers=[("Connection", "close")]),
                _CONNECT_REQUEST,
                detail=">= 300, closing",
            ),
        },
    ),
}

_ROLES = {"client": CLIENT, "server": SERVER}


def _label(protocol: Protocol, input_: enum.Enum) -> str:
    example = protocol.examples.get(input_)
    return example.label() if example is not None else input_.name


def diagram(protocol: Protocol, role: Role) -> Diagram:
    """*role*'s view of *protocol*'s tables: every state, every transition, and the two implicit ones."""
    result = Diagram(protocol, role, initial=protocol.initial.name)
    for state in protocol.states:
        sender = protocol.sender.get(state)
        result.nodes[state.name] = "terminal" if sender is None else ("ours" if sender is role else "theirs")
    for (source, input_), target in protocol.transitions.items():
        kind = "send" if protocol.sender.get(source) is role else "receive"
        label = f"{kind} {_label(protocol, input_)}"
        result.edges.append(Edge(source.name, target.name, label, f"{type(input_).__name__}.{input_.name}", kind))
    # The contract of every machine (socks_sansio/_machine.py), from any live state.
    result.edges.append(Edge("*", protocol.closed.name, "send ConnectionClosed,\nor EOF received"))
    result.edges.append(Edge("*", protocol.error.name, "an illegal event, bad bytes,\nor send_failed()"))
    return result


def _quote(text: str) -> str:
    """A DOT string; a newline becomes a centred line break."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


_NODE_STYLE = {
    "ours": 'shape=box, style="rounded,filled", fillcolor="#cfe2f3", color="#1f5fa8"',
    "theirs": 'shape=box, style="rounded,filled", fillcolor="#ffffff", color="#555555"',
    "terminal": 'shape=box, style="filled", peripheries=2, fillcolor="#eeeeee", color="#555555"',
}
_EDGE_STYLE = {
    "send": 'color="#1f5fa8", fontcolor="#1f5fa8", penwidth=1.6',
    "receive": 'color="#333333", fontcolor="#333333", style=dashed',
    "implicit": 'color="#999999", fontcolor="#777777", style=dotted',
}


def to_dot(d: Diagram) -> str:
    """Graphviz DOT for *d*: live states in one cluster, terminal states below it."""
    name = f"{d.protocol.key}_{d.role.value}"
    live = [state for state, kind in d.nodes.items() if kind != "terminal"]
    lines = [
        f"digraph {name} {{",
        "  compound=true; rankdir=TB; nodesep=0.4; ranksep=0.45;",
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9];',
        '  start [shape=point, width=0.12, label=""];',
        "  subgraph cluster_live {",
        f'    label={_quote(f"live states ({d.role.value})")}; labeljust=l; fontname="Helvetica"; fontsize=10;',
        '    style="rounded,dashed"; color="#bbbbbb";',
    ]
    for state in live:
        lines.append(f"    {_quote(state)} [{_NODE_STYLE[d.nodes[state]]}];")
    lines.append("  }")
    for state, kind in d.nodes.items():
        if kind == "terminal":
            lines.append(f"  {_quote(state)} [{_NODE_STYLE[kind]}];")
    lines.append(f'  start -> {_quote(d.initial)} [tooltip="initial state"];')
    anchor = live[-1] if live else d.initial
    for edge in d.edges:
        attrs = [f"label={_quote(edge.label)}", _EDGE_STYLE[edge.kind]]
        if edge.input:
            attrs.append(f"tooltip={_quote(edge.input)}")
        source = edge.source
        if source == "*":
            source = anchor
            attrs.append("ltail=cluster_live")
            attrs.append(f"tooltip={_quote('from any live state')}")
        lines.append(f"  {_quote(source)} -> {_quote(edge.target)} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def table_rows(protocol: Protocol) -> list[tuple[str, str, str, str, str]]:
    """``(state, sent by, event, input, next state)`` for every transition, then every input no state accepts."""
    rows = [
        (source.name, protocol.sender[source].value, _label(protocol, input_), input_.name, target.name)
        for (source, input_), target in protocol.transitions.items()
    ]
    used = {input_ for _, input_ in protocol.transitions}
    for input_ in protocol.inputs:
        if input_ not in used:
            never = f"{protocol.error.name} (never legal)"
            rows.append(("any", "either", _label(protocol, input_), input_.name, never))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a machine's state diagram as Graphviz DOT.")
    parser.add_argument("protocol", choices=sorted(PROTOCOLS))
    parser.add_argument("role", choices=sorted(_ROLES))
    args = parser.parse_args(argv)
    sys.stdout.write(to_dot(diagram(PROTOCOLS[args.protocol], _ROLES[args.role])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
