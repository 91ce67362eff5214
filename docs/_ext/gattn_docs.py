"""Sphinx extension: the generated parts of the gattn documentation.

At the start of every build (``builder-inited``) it writes, under ``docs/_generated/``:

* ``api/gattn.<name>.rst``: one API page per public module of :mod:`gattn` (every
  ``gattn/<name>.py`` or package not starting with ``_``). A page documents the names of the
  module's ``__all__``, then, section by section, the ``__all__`` of each of its public
  submodules that are not documented yet (a re-exported class is documented once, under its
  shortest public name). A summary table heads each section.
* ``families/<pipeline>.md``: one page per registered pipeline (:mod:`gattn.pipelines`):
  its docstring, a hand-written introduction ``docs/families/<pipeline>.intro.md`` if there is
  one (paper, results), the options of its typed configuration, its search space, and the
  config files ``configs/<pipeline>_*.yaml`` that produced the published results.
* ``command.md``: the ``gattn`` command's ``--help`` texts, from its parser.

So a new layer (added to ``gattn.nn.__all__``), loader, module or pipeline appears in the
documentation without editing it. It also resolves references written against a defining
module (``gattn.pipelines.base.Pipeline``) to the public name the object is documented under
(``gattn.pipelines.Pipeline``), and lets every other reference to a gattn object that does not
exist fail the build (``nitpicky`` with ``-W``).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import io
import pkgutil
import re
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "_generated"

#: documented object id -> the public name it is documented under (filled while generating)
DOCUMENTED: dict[int, str] = {}
#: every documented public name
DOCUMENTED_NAMES: set[str] = set()
#: short name -> documented full names (for references by short name from a re-export)
BY_SHORT_NAME: dict[str, set[str]] = {}


# ------------------------------------------------------------------------------ helpers
def _write(path: Path, text: str) -> None:
    """Write only when the text changed, so that Sphinx rebuilds only what changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def _title(text: str, char: str = "=") -> str:
    return f"{text}\n{char * len(text)}\n"


def public_modules() -> list[str]:
    """``gattn.<name>`` for every public module and package of gattn, sorted."""
    import gattn

    return sorted(f"gattn.{m.name}" for m in pkgutil.iter_modules(gattn.__path__) if not m.name.startswith("_"))


def _submodules(module: Any) -> list[str]:
    """Public submodules of a package, depth first (names without a ``_`` component)."""
    if not hasattr(module, "__path__"):
        return []
    found = []
    for info in pkgutil.walk_packages(module.__path__, prefix=module.__name__ + "."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        found.append(info.name)
    return sorted(found)


def _exports(module: Any) -> list[str]:
    names = getattr(module, "__all__", None)
    return list(dict.fromkeys(names)) if names else []


def _kind(obj: Any) -> str:
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            return "exception"
        return "class"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj) or callable(obj) and hasattr(obj, "__wrapped__"):
        return "function"
    if inspect.ismodule(obj):
        return "module"
    return "data"


def _shared_value(obj: Any) -> bool:
    return obj is None or isinstance(obj, (bool, int, float, str, bytes))


def _directive(kind: str, name: str) -> str:
    if kind in ("class", "exception"):
        return f".. auto{kind}:: {name}\n   :members:\n   :undoc-members:\n"
    if kind == "function":
        return f".. autofunction:: {name}\n"
    return f".. autodata:: {name}\n   :no-value:\n"


def _first_paragraph(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")


# --------------------------------------------------------------------------- API pages
def api_page(module_name: str) -> str:
    """The reST of the API page of ``module_name`` (records what it documents)."""
    module = importlib.import_module(module_name)
    parts = [_title(f"``{module_name}``"), f".. automodule:: {module_name}\n   :no-members:\n"]
    sections = [(module_name, module)] + [(n, importlib.import_module(n)) for n in _submodules(module)]
    for name, mod in sections:
        fresh = []
        for export in _exports(mod):
            if not hasattr(mod, export):
                raise AttributeError(f"{name}.__all__ names {export!r}, which {name} does not define")
            obj = getattr(mod, export)
            if _kind(obj) == "module":
                continue
            if _shared_value(obj):
                # a constant of the same value elsewhere (ids of small ints and strings are shared)
                if f"{name}.{export}" in DOCUMENTED_NAMES:
                    continue
            elif id(obj) in DOCUMENTED:
                continue
            else:
                DOCUMENTED[id(obj)] = f"{name}.{export}"
            DOCUMENTED_NAMES.add(f"{name}.{export}")
            BY_SHORT_NAME.setdefault(export, set()).add(f"{name}.{export}")
            fresh.append(export)
        if mod is not module:
            parts.append(_title(f"``{name}``", "-"))
            parts.append(f".. py:module:: {name}\n")
            summary = _first_paragraph(mod)
            if summary:
                parts.append(summary + "\n")
            if not fresh:
                parts.append("Its public names are documented above.\n" if _exports(mod) else
                             "(No ``__all__``: nothing public to list.)\n")
                continue
        if not fresh:
            continue
        parts.append(f".. currentmodule:: {name}\n")
        parts.append(".. autosummary::\n   :nosignatures:\n\n" + "".join(f"   {n}\n" for n in fresh))
        for export in fresh:
            parts.append(_directive(_kind(getattr(mod, export)), export))
    return "\n".join(parts)


# ------------------------------------------------------------------------ family pages
def _option_rows(config_cls: type) -> list[tuple[str, str, str, str]]:
    rows = []
    for field in dataclasses.fields(config_cls):
        meta = dict(field.metadata)
        default = field.default if field.default is not dataclasses.MISSING else (
            field.default_factory() if field.default_factory is not dataclasses.MISSING else "")
        flag = "--" + field.name.replace("_", "-")
        help_text = str(meta.get("help", "")).replace("|", "\\|").replace("\n", " ")
        group = str(meta.get("group", ""))
        rows.append((flag, f"`{default!r}`", group, help_text))
    return rows


def family_page(name: str, cls: type) -> str:
    intro = ROOT / "docs" / "families" / f"{name}.intro.md"
    doc = inspect.getdoc(cls) or ""
    lines = [f"# `{name}`", "", doc.split("\n\n")[0] if doc else cls.__name__, ""]
    documented = DOCUMENTED.get(id(cls))
    what = f":class:`{documented}`" if documented else f"``{cls.__module__}.{cls.__name__}``"
    lines += ["```{eval-rst}", f"Pipeline class: {what} (module :mod:`{cls.__module__}`), selection metric "
              f"``{cls.metric}``.", "```", ""]
    if intro.is_file():
        lines += [f"```{{include}} ../../families/{intro.name}", "```", ""]
    configs = sorted((ROOT / "configs").glob(f"{name}_*.yaml"))
    if configs:
        lines += ["## Configurations of the published results", "",
                  "Each file is the configuration behind one result; "
                  "`gattn train --config configs/<file>` repeats it.", ""]
        for path in configs:
            lines += [f"### `configs/{path.name}`", "", f"```{{literalinclude}} ../../../configs/{path.name}",
                      ":language: yaml", "```", ""]
    lines += ["## Options", "", f"`gattn train {name} --help` lists them too; a config file uses the option names "
              "(with `_`) as keys.", "", "| option | default | group | meaning |", "|---|---|---|---|"]
    lines += [f"| `{flag}` | {default} | {group} | {help_text} |" for flag, default, group, help_text
              in _option_rows(cls.Config)]
    lines += [""]
    return "\n".join(lines)


def command_page() -> str:
    from gattn.cli import build_parser
    from gattn.pipelines.registry import discover

    parser = build_parser()
    lines = ["# `gattn --help`", "", "Generated from the command's parser at build time.", "",
             "```text", parser.format_help().rstrip(), "```", ""]
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for command, sub in subparsers.choices.items():
        lines += [f"## `gattn {command}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    first = sorted(discover())[:1]
    if first:
        buffer = io.StringIO()
        with redirect_stdout(buffer):
            text = subparsers.choices["train"]._subparsers._group_actions[0].choices[first[0]].format_help()
        lines += [f"## `gattn train {first[0]} --help` (one pipeline's options)", "", "```text", text.rstrip(),
                  "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ events
def generate(app: Sphinx) -> None:
    from gattn.pipelines.registry import discover

    DOCUMENTED.clear()
    DOCUMENTED_NAMES.clear()
    BY_SHORT_NAME.clear()
    modules = public_modules()
    for name in modules:
        _write(OUT / "api" / f"{name}.rst", api_page(name))
    for stale in (OUT / "api").glob("*.rst"):
        if stale.stem not in modules and stale.stem != "index":
            stale.unlink()
    _write(OUT / "api" / "index.rst", _title("API reference") + "\nOne page per module of gattn, generated from "
           "each module's ``__all__`` and docstrings.\n\n.. toctree::\n   :maxdepth: 1\n\n"
           + "".join(f"   {name}\n" for name in modules))
    registry = discover()
    for name, cls in sorted(registry.items()):
        _write(OUT / "families" / f"{name}.md", family_page(name, cls))
    for stale in (OUT / "families").glob("*.md"):
        if stale.stem not in registry:
            stale.unlink()
    _write(OUT / "command.md", command_page())


def resolve_reference(app: Sphinx, env: Any, node: Any, contnode: nodes.Node) -> nodes.Node | None:
    """A ``gattn.a.b.Name`` reference to an object documented under another public name."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    documented = None
    if target.startswith("gattn."):
        obj = _lookup(target)
        if obj is not None:
            documented = DOCUMENTED.get(id(obj))
    elif "." not in target and len(BY_SHORT_NAME.get(target, ())) == 1:
        documented = next(iter(BY_SHORT_NAME[target]))
    if not documented or documented == target:
        return None
    domain = env.get_domain("py")
    for role in (node.get("reftype"), "obj"):
        found = domain.resolve_xref(env, node.get("refdoc", ""), app.builder, role, documented, node, contnode)
        if found is not None:
            return found
    return None


def _lookup(dotted: str) -> Any:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


_MARKER = re.compile(r"<!-- docs:([\w:-]+):begin -->")


def readme_markers() -> list[str]:
    """The names of the README sections marked for inclusion in the docs."""
    return _MARKER.findall((ROOT / "README.md").read_text())


_ATTRIBUTE_KINDS = ("attribute", "data", "property")


def _napoleon_without_inline_types(app: Sphinx) -> None:
    """Napoleon reads the first line of an attribute's docstring as ``type: description``;
    gattn's attribute docstrings are prose (the type is the annotation), so napoleon sees them
    as plain text."""
    from sphinx.ext.napoleon import _process_docstring

    listeners = app.events.listeners.get("autodoc-process-docstring", [])
    for listener in list(listeners):
        if listener.handler is _process_docstring:
            app.disconnect(listener.id)

            def process(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
                _process_docstring(app, "object" if what in _ATTRIBUTE_KINDS else what, name, obj, options, lines)

            app.connect("autodoc-process-docstring", process, priority=listener.priority)


def _drop_type_docstring(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """A constant without a doc comment would show its type's docstring (``dict``'s): none."""
    if what in _ATTRIBUTE_KINDS and lines and not inspect.isclass(obj):
        own = inspect.getdoc(type(obj)) or ""
        if "\n".join(lines).strip() == own.strip():
            lines.clear()


# ------------------------------------------------------------------- offline site
_SCRIPT_SRC = re.compile(r"""<script\b[^>]*\bsrc\s*=\s*["']?((?:https?:)?//[^"'\s>]+)""", re.IGNORECASE)


def external_scripts(html_dir: Path) -> dict[str, list[str]]:
    """The scripts each built page loads from another host: ``{page: [url, ...]}`` (empty when
    the site works offline). A protocol-relative ``//host/x.js`` counts as external."""
    found: dict[str, list[str]] = {}
    for page in sorted(Path(html_dir).rglob("*.html")):
        urls = _SCRIPT_SRC.findall(page.read_text(errors="replace"))
        if urls:
            found[str(page.relative_to(html_dir))] = sorted(set(urls))
    return found


def check_no_external_scripts(app: Sphinx, exception: Exception | None) -> None:
    """Fail an HTML build whose pages load a script from another host (MathJax from a CDN):
    the site is read offline too, and equations would show as raw LaTeX."""
    if exception is not None or app.builder.format != "html":
        return
    found = external_scripts(Path(app.outdir))
    if found:
        page, urls = next(iter(found.items()))
        raise RuntimeError(f"{len(found)} built pages load scripts from another host (e.g. {page}: {', '.join(urls)}); "
                           "serve them from _static (see mathjax_path in docs/conf.py)")
    mathjax = app.config.mathjax_path
    if mathjax and not (Path(app.outdir) / "_static" / mathjax).is_file():
        raise RuntimeError(f"mathjax_path {mathjax!r} is not in the built site's _static folder "
                           "(is the sphinx-mathjax-offline extension loaded?)")


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.napoleon")
    _napoleon_without_inline_types(app)
    app.connect("autodoc-process-docstring", _drop_type_docstring, priority=100)
    app.connect("builder-inited", generate)
    app.connect("missing-reference", resolve_reference)
    app.connect("build-finished", check_no_external_scripts, priority=900)  # after the MathJax copy (500)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
