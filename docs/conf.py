"""Sphinx configuration: ``sphinx-build -W -b html docs docs/_build/html`` (the ``docs`` extra)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # diagrams.py and socks_docs.py; bench (for bench.plots)

from socks_sansio import __version__  # noqa: E402

project = "socks-sansio"
author = "socks-sansio developers"
copyright = "socks-sansio developers"
release = version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.graphviz",
    "myst_parser",
    "socks_docs",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "_examples", "Thumbs.db", ".DS_Store"]

# Docstrings are Google style (Args / Returns / Raises).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Type hints name private modules (socks_sansio._address.Address); socks_docs.py links them to the
# public names, shown without the module.
python_use_unqualified_type_names = True

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# State diagrams: DOT generated from the machines' tables (diagrams.py), rendered to SVG by `dot`.
graphviz_output_format = "svg"

html_theme = "furo"
html_title = f"socks-sansio {release}"
html_static_path = ["_static"]
