"""The Sphinx extension of these docs: everything on a page that is generated from the code.

Directives:

* ``.. state-diagram:: PROTOCOL ROLE``: a machine's state diagram, rendered by
  sphinx.ext.graphviz from the DOT that :mod:`diagrams` writes from the
  machine's transition table;
* ``.. state-table:: PROTOCOL``: the same table as text, role-neutral;
* ``.. serve-flags::``: every flag of ``socks-sansio serve``, read from its
  argparse parser;
* ``.. bench-plots:: RESULTS.json``: the plots ``python -m bench.plots`` draws
  from a committed results file (nothing is measured during the build);
* ``.. optional-automodule:: MODULE``: ``automodule`` with ``:members:`` when
  the module exists, a note when it does not.

And one autodoc hook: a constant re-exported by ``socks_sansio/__init__.py``
gets the docstring written after its assignment in the private module that
defines it (autodoc only looks in the module it imports the name from, and
would show ``int``'s docstring instead).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import sys
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import diagrams
from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.ext.graphviz import Graphviz
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

ROOT = Path(__file__).resolve().parent.parent


def _parse(directive: SphinxDirective, text: str) -> list[nodes.Node]:
    """Parse *text* as if it stood where *directive* is (in the page's own markup language)."""
    container = nodes.container()
    nested_parse_with_titles(directive.state, StringList(text.splitlines(), directive.get_source_info()[0]), container)
    return list(container.children)


def _protocol(directive: SphinxDirective, key: str) -> diagrams.Protocol:
    try:
        protocol = diagrams.PROTOCOLS[key]
    except KeyError:
        raise directive.error(f"unknown protocol {key!r}; known: {', '.join(diagrams.PROTOCOLS)}") from None
    for module in (protocol.connection.__module__, protocol.states.__module__):
        directive.env.note_dependency(sys.modules[module].__file__ or "")
    directive.env.note_dependency(diagrams.__file__)
    return protocol


class StateDiagram(Graphviz):
    """``.. state-diagram:: socks5 client``: the DOT comes from the machine's tables."""

    has_content = False
    required_arguments = 2
    optional_arguments = 0

    def run(self) -> list[nodes.Node]:
        key, role_name = self.arguments
        protocol = _protocol(self, key)
        roles = {"client": diagrams.CLIENT, "server": diagrams.SERVER}
        if role_name not in roles:
            raise self.error(f"role must be client or server, not {role_name!r}")
        dot = diagrams.to_dot(diagrams.diagram(protocol, roles[role_name]))
        self.options.setdefault("alt", f"State diagram of {protocol.title}, as the {role_name} sees it")
        self.arguments = []
        self.content = StringList(dot.splitlines(), "diagrams.py")
        return super().run()


Cell = str | tuple[str, str]  # text, or ("code", text)


def _cell(content: Cell) -> nodes.entry:
    paragraph = nodes.paragraph()
    if isinstance(content, tuple):
        if content[1]:
            paragraph += nodes.literal(content[1], content[1])
    else:
        paragraph += nodes.Text(content)
    return nodes.entry("", paragraph)


def _table(headers: list[str], rows: list[list[Cell]], widths: list[int]) -> nodes.table:
    """A docutils table (built as nodes: these directives also run on Markdown pages)."""
    group = nodes.tgroup(cols=len(headers))
    group.extend(nodes.colspec(colwidth=width) for width in widths)
    group += nodes.thead("", nodes.row("", *(_cell(header) for header in headers)))
    group += nodes.tbody("", *(nodes.row("", *(_cell(cell) for cell in row)) for row in rows))
    return nodes.table("", group)


class StateTable(SphinxDirective):
    """``.. state-table:: socks5``: every transition as a table row."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        protocol = _protocol(self, self.arguments[0])
        rows: list[list[Cell]] = [
            [("code", state), sender, event.replace("\n", " "), ("code", input_), ("code", target)]
            for state, sender, event, input_, target in diagrams.table_rows(protocol)
        ]
        return [_table(["state", "sent by", "event", "input", "next state"], rows, [22, 10, 34, 22, 22])]


def _serve_parser() -> argparse.ArgumentParser:
    from socks_sansio.adapters.cli import serve

    parser = argparse.ArgumentParser(prog="socks-sansio")
    commands = parser.add_subparsers(dest="command")
    serve.add_parser(commands)
    sub: argparse.ArgumentParser = commands.choices["serve"]
    return sub


class ServeFlags(SphinxDirective):
    """``.. serve-flags::``: a table of every ``socks-sansio serve`` flag, with its TOML key."""

    def run(self) -> list[nodes.Node]:
        from socks_sansio.adapters.cli import serve

        if serve.__file__:
            self.env.note_dependency(serve.__file__)
        rows: list[list[Cell]] = []
        for action in _serve_parser()._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            flag = ", ".join(action.option_strings)
            takes_value = action.nargs != 0
            if action.choices:
                flag += " {" + ",".join(str(choice) for choice in action.choices) + "}"
            elif takes_value:
                flag += f" {action.metavar or action.dest.upper()}"
            if isinstance(action, argparse._AppendAction):
                value = "[...]"
            elif not takes_value:
                value = "false" if action.const is False else "true"
            else:
                value = "..."
            toml = "" if action.dest == "config" else f"{action.dest.replace('_', '-')} = {value}"
            rows.append([("code", flag), ("code", toml), action.help or ""])
        return [_table(["flag", "TOML key", "what it does"], rows, [30, 22, 48])]


class BenchPlots(SphinxDirective):
    """``.. bench-plots:: _static/bench-full.json``: one figure per plot of that results file."""

    required_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {"outdir": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        from bench import plots

        rel, path = self.env.relfn2path(self.arguments[0], self.env.docname)
        self.env.note_dependency(rel)
        self.env.note_dependency(plots.__file__)
        outdir = self.options.get("outdir", "_generated/bench")
        try:
            drawn = plots.make_plots(plots.load(path), Path(self.env.srcdir) / outdir)
        except (OSError, ValueError) as exc:
            raise self.error(f"cannot plot {self.arguments[0]}: {exc}") from None
        figures: list[nodes.Node] = []
        for plot in drawn:
            figure = nodes.figure()
            figure += nodes.image(uri=f"/{outdir}/{plot.path.name}", alt=plot.title, width="100%")
            figure += nodes.caption(plot.caption, plot.caption)
            figures.append(figure)
        return figures


class OptionalAutomodule(SphinxDirective):
    """``.. optional-automodule:: socks_sansio.adapters.httpx``: documented if it exists."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        try:
            present = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            present = False
        if not present:
            paragraph = nodes.paragraph()
            paragraph += [nodes.literal(name, name), nodes.Text(" is not part of this version.")]
            return [paragraph]
        return _parse(self, f".. automodule:: {name}\n   :members:\n")  # reST pages only (MyST parses Markdown)


@cache
def _reexports() -> dict[str, tuple[str, str]]:
    """Public name -> (defining module, name there), from ``socks_sansio/__init__.py``'s imports."""
    source = (ROOT / "socks_sansio" / "__init__.py").read_text("utf-8")
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                found[alias.asname or alias.name] = (f"socks_sansio.{node.module}", alias.name)
    return found


def _words(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip()]


def _reexported_docstring(app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]) -> None:
    """A public constant's docstring: the one after its assignment where it is defined, never its type's."""
    if what != "data" or not name.startswith("socks_sansio."):
        return
    origin = _reexports().get(name.split(".", 1)[1]) if name.count(".") == 1 else None
    if origin is not None:
        module, attribute = origin
        try:
            comment = ModuleAnalyzer.for_module(module).find_attr_docs().get(("", attribute))
        except Exception:  # no source to analyse: keep what autodoc found
            comment = None
        if comment:
            lines[:] = [*comment, ""]
            return
    own = inspect.getdoc(type(obj))
    if own and _words(lines) == _words(own.splitlines()):
        lines[:] = []  # int's or str's docstring, or an enum member's class docstring: the page says it


def _no_inline_attribute_type(app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]) -> None:
    """Keep napoleon from reading ``value: explanation`` on an attribute's first line as ``type: description``.

    The docstrings here start with what a value is, then a colon; the Google
    convention of a type before the colon is not used. Napoleon reads the
    first non-empty line that way, so it is given an empty reST comment
    (``..``, which renders as nothing) to read instead.
    """
    if what in ("attribute", "data", "property") and any(":" in line for line in lines[:1]):
        lines[:0] = ["..", ""]


@cache
def _public_names() -> frozenset[str]:
    import socks_sansio

    return frozenset(socks_sansio.__all__)


def _public_alias(app: Sphinx, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve ``socks_sansio._module.Name`` (how type hints name it) to ``socks_sansio.Name`` when that is public."""
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("socks_sansio._"):
        return None
    name = target.rsplit(".", 1)[1]
    if name not in _public_names():
        return None
    domain = env.get_domain("py")
    public = f"socks_sansio.{name}"
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], public, node, contnode)


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.graphviz")
    app.connect("missing-reference", _public_alias)
    app.add_directive("state-diagram", StateDiagram)
    app.add_directive("state-table", StateTable)
    app.add_directive("serve-flags", ServeFlags)
    app.add_directive("bench-plots", BenchPlots)
    app.add_directive("optional-automodule", OptionalAutomodule)
    app.setup_extension("sphinx.ext.napoleon")
    # Before napoleon (priority 500): first the right docstring, then its first line protected.
    app.connect("autodoc-process-docstring", _reexported_docstring, priority=300)
    app.connect("autodoc-process-docstring", _no_inline_attribute_type, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
