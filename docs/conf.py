"""Sphinx configuration of the gattn documentation (``make docs``).

Sphinx, as PyG does: the docstrings are written in reStructuredText with Google-style
``Args:`` sections (napoleon) and LaTeX in ``.. math::`` (MathJax, served from the site itself:
the equations render offline), and they cross-reference each other with ``:class:`` /
``:func:`` roles. The pages are Markdown (MyST). The API pages are generated at build time
from the packages' ``__all__`` by ``_ext/gattn_docs.py``: a new
layer, loader or pipeline appears without editing the docs.

The build runs with warnings as errors (``-W``): a docstring that does not parse, a
reference to a gattn object that does not exist, or an ``{include}`` whose README marker is
gone fails it. References to other packages (torch, PyG, Optuna, ...) are not checked: the
build has no network to fetch their inventories.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))  # the checkout's gattn, and benchmarks/ for the charts

import gattn  # noqa: E402

project = "gattn"
author = "the gattn authors"
copyright = "the gattn authors, MIT licence"
release = version = gattn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax from the built site (_static/mathjax), not a CDN: offline equations
    "myst_parser",
    "gattn_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "families/*.intro.md"]
templates_path: list[str] = []
html_theme = "furo"
html_title = f"gattn {release}"
html_show_sourcelink = False

# The MathJax 3 the offline extension copies into _static/mathjax at the end of the build (set here,
# not left to that extension, so that a Sphinx that changes its default cannot bring the CDN back;
# gattn_docs.check_no_external_scripts fails the build if a page loads a script from another host).
mathjax_path = "mathjax/tex-chtml.js"

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Docstrings: Google style (``Args:``, ``Returns:``, ``Raises:``) in reST, as PyG's.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
autodoc_inherit_docstrings = False  # torch.nn.Module's forward() docstring is not ours
autodoc_default_options = {"show-inheritance": True}
autosummary_generate = False  # the generator writes the pages (_ext/gattn_docs.py)
add_module_names = False
python_display_short_literal_types = True

# Every reference to a gattn object must resolve; references to other packages are not
# checked (no network for their inventories). See gattn_docs.resolve_reference.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:obj", r"(True|False|None|-?[\d.]+)"),  # PyG's "(default: :obj:`False`)"
    (r"py:.*", r"gattn(\.\w+)*\._\w+.*"),  # private names (a private base class, a helper module)
    (r"py:class", r"[a-z_][^A-Z]*"),  # napoleon's "Returns: name: ..." fields read as types
    (r"py:.*", r"(?!gattn\b)[\w]+\..*"),  # dotted names outside gattn (torch.Tensor, optuna.Trial, ...)
    (r"py:.*", r"(Tensor|Module|Data|HeteroData|Batch|EdgeIndex|DataFrame|ndarray|Trial|Study|Path|"
               r"Callable|Iterator|Iterable|Sequence|Mapping|MutableMapping|Any|Self|Literal|TypeVar|PathLike|"
               r"np|pd|nn|L|T|optional|default|torch|optuna|EdgeType|NodeType|Metadata)"),  # type aliases
]
suppress_warnings = ["myst.header"]
