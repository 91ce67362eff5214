"""The documentation: its code examples run, its generated API pages list every public name,
and the charts it shows match the README tables they are drawn from.

The site's build itself (Sphinx with warnings as errors) is ``make docs``, which ``make test``
runs after pytest.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts and "_generated" not in p.parts)

mktestdocs = pytest.importorskip("mktestdocs", reason="the docs tests need the dev extra (mktestdocs)")


def _python_blocks(path: Path) -> list[str]:
    return mktestdocs.grab_code_blocks(path.read_text(), lang="python")


def test_the_guide_pages_hold_examples() -> None:
    with_examples = [p.name for p in PAGES if _python_blocks(p)]
    assert {"getting-started.md", "kernels.md", "pipelines.md", "tuning.md"} <= set(with_examples)


@pytest.mark.parametrize("page", [p for p in PAGES if _python_blocks(p)], ids=lambda p: str(p.relative_to(DOCS)))
def test_every_python_example_of_a_page_runs(page: Path) -> None:
    """The blocks of a page run in order in one namespace (a page's later blocks use the
    earlier ones' names), as a reader pastes them."""
    mktestdocs.check_md_file(page, memory=True)


def _gattn_modules() -> list[str]:
    import gattn

    names = ["gattn"]
    for info in pkgutil.walk_packages(gattn.__path__, prefix="gattn."):
        names.append(info.name)
    return sorted(names)


def test_docstring_examples_run() -> None:
    """Every ``>>>`` example in a gattn docstring runs (doctest), wherever it is."""
    failures, tried = 0, 0
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for name in _gattn_modules():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # an optional backend (triton without a GPU build, ...)
            if "gattn" in str(exc):
                raise
            continue
        for test in finder.find(module, name):
            if test.examples:
                result = runner.run(test, out=sys.stdout.write)
                failures, tried = failures + result.failed, tried + result.attempted
    assert tried > 0, "no docstring example found (the Dashboard class has one)"
    assert failures == 0, f"{failures} of {tried} docstring examples failed (see the output above)"


@pytest.fixture(scope="module")
def gattn_docs():
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import gattn_docs

        yield gattn_docs
    finally:
        sys.path.remove(str(DOCS / "_ext"))


def test_the_api_pages_list_every_public_name(gattn_docs) -> None:
    modules = gattn_docs.public_modules()
    assert {"gattn.kernels", "gattn.nn", "gattn.transforms", "gattn.datasets", "gattn.metrics"} <= set(modules)
    gattn_docs.DOCUMENTED.clear()
    gattn_docs.DOCUMENTED_NAMES.clear()
    pages = {name: gattn_docs.api_page(name) for name in modules}
    for package in ("gattn.nn", "gattn.kernels", "gattn.transforms", "gattn.metrics", "gattn.losses"):
        module = importlib.import_module(package)
        for export in module.__all__:
            obj = getattr(module, export)
            if isinstance(obj, type) or callable(obj):
                documented = gattn_docs.DOCUMENTED.get(id(obj))
                assert documented is not None, f"{package}.{export} is on no API page"
                page = pages[".".join(documented.split(".")[:2])]
                assert f":: {documented.rsplit('.', 1)[1]}\n" in page


def test_an_all_naming_a_missing_object_fails_the_build(gattn_docs, monkeypatch) -> None:
    import gattn.losses

    monkeypatch.setattr(gattn.losses, "__all__", [*gattn.losses.__all__, "no_such_loss"])
    with pytest.raises(AttributeError, match="no_such_loss"):
        gattn_docs.api_page("gattn.losses")


def test_the_family_pages_include_their_readme_results(gattn_docs) -> None:
    from gattn.pipelines.registry import discover

    markers = gattn_docs.readme_markers()
    for name, cls in discover().items():
        page = gattn_docs.family_page(name, cls)
        assert f"configs/{name}_" in page or not list((ROOT / "configs").glob(f"{name}_*.yaml"))
        intro = DOCS / "families" / f"{name}.intro.md"
        if intro.is_file():
            for marker in ("results:" + name,):
                if f"docs:{marker}:begin" in intro.read_text():
                    assert marker in markers, f"{intro.name} includes README section {marker}, which is gone"


def test_the_committed_charts_show_the_readme_tables() -> None:
    pytest.importorskip("matplotlib")
    sys.path.insert(0, str(ROOT))
    from benchmarks import readme_charts

    assert readme_charts.stale() == [], "run: python benchmarks/readme_charts.py"
    text = (ROOT / "README.md").read_text()
    for name in readme_charts.CHART_SPECS:
        assert f"docs/charts/{name}.png" in text, f"the README does not show chart {name}"


# ------------------------------------------------------------------------ offline site
def test_external_scripts_finds_a_cdn_script(gattn_docs, tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text('<script src="_static/mathjax/tex-chtml.js"></script>'
                                         '<a href="https://github.com/x">a link is no script</a>')
    assert gattn_docs.external_scripts(tmp_path) == {}
    (tmp_path / "sub" / "page.html").write_text(
        '<script defer="defer" src="https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js"></script>'
        "<SCRIPT src='//unpkg.com/x.js'></SCRIPT>")
    assert gattn_docs.external_scripts(tmp_path) == {
        "sub/page.html": ["//unpkg.com/x.js", "https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js"]}


def _docs_conf() -> dict:
    namespace: dict = {"__file__": str(DOCS / "conf.py")}
    exec(compile((DOCS / "conf.py").read_text(), str(DOCS / "conf.py"), "exec"), namespace)
    return namespace


def test_a_page_with_math_builds_with_mathjax_from_the_site(gattn_docs, tmp_path) -> None:
    """The docs' math setup (conf.py's extensions and mathjax_path) on a one-page site: MathJax is
    a file of the built site and no page loads a script from another host."""
    pytest.importorskip("sphinx")
    from sphinx.application import Sphinx

    conf = _docs_conf()
    assert "sphinx-mathjax-offline" in conf["extensions"]
    assert not conf["mathjax_path"].startswith(("http:", "https:", "//"))
    src, out = tmp_path / "src", tmp_path / "html"
    src.mkdir()
    (src / "conf.py").write_text(
        f"extensions = {[e for e in conf['extensions'] if e != 'gattn_docs']!r}\n"
        f"mathjax_path = {conf['mathjax_path']!r}\n")
    (src / "index.rst").write_text("Title\n=====\n\n.. math::\n\n   \\alpha_{i,j} = \\mathrm{softmax}_j(e_{i,j})\n")
    app = Sphinx(str(src), str(src), str(out), str(tmp_path / "doctrees"), "html", status=None, warning=None,
                 freshenv=True)
    app.connect("build-finished", gattn_docs.check_no_external_scripts, priority=900)
    app.build()
    assert app.statuscode == 0
    page = (out / "index.html").read_text()
    assert f'src="_static/{conf["mathjax_path"]}"' in page
    assert (out / "_static" / conf["mathjax_path"]).stat().st_size > 100_000
    assert gattn_docs.external_scripts(out) == {}


def test_a_cdn_mathjax_fails_the_build(gattn_docs, tmp_path) -> None:
    pytest.importorskip("sphinx")
    from sphinx.application import Sphinx
    from sphinx.errors import ExtensionError

    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text("extensions = ['sphinx.ext.mathjax']\n")  # the CDN default
    (src / "index.rst").write_text("Title\n=====\n\n.. math::\n\n   x^2\n")
    app = Sphinx(str(src), str(src), str(tmp_path / "html"), str(tmp_path / "doctrees"), "html", status=None,
                 warning=None, freshenv=True)
    app.connect("build-finished", gattn_docs.check_no_external_scripts, priority=900)
    with pytest.raises(ExtensionError) as failure:  # Sphinx wraps the handler's error
        app.build()
    assert "load scripts from another host" in str(failure.value.orig_exc)


def test_the_dgl_example_runs_alone() -> None:
    """The DGL example is run by itself in the DGL environment (benchmarks/peers/.venv-dgl, whose
    older torch cannot run the page's other blocks), so it must import all it uses."""
    page = DOCS / "scaling.md"
    blocks = [b for b in _python_blocks(page) if "to_dgl(" in b]
    assert len(blocks) == 1, "scaling.md should hold one DGL example"
    exec(compile(blocks[0], f"{page}:dgl-example", "exec"), {})


# ------------------------------------------------------------------------- docstrings
def _parameters(obj) -> list[str]:
    """The named parameters of a callable (a class: of its constructor), without self/*args/**kwargs."""
    import inspect

    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # a builtin without a signature
        return []
    return [p.name for p in signature.parameters.values()
            if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _section(doc: str, titles: tuple[str, ...]) -> str | None:
    """The indented body of the first ``Title:`` section of ``doc`` (None when there is none)."""
    import re

    head = re.search(rf"^([ \t]*)({'|'.join(titles)}):[ \t]*$", doc, re.MULTILINE)
    if head is None:
        return None
    body = []
    for line in doc[head.end():].splitlines()[1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= len(head.group(1)):
            break
        body.append(line)
    return "\n".join(body)


def undocumented(gattn_docs) -> dict[str, str]:
    """Every public class and function of the API pages whose docstring is missing, or has no
    ``Args:`` section (``Attributes:`` for a record type) with a typed entry
    ``name (type, optional): ...`` for each of its parameters; a dataclass field with a ``help``
    text (the pipelines' options) counts as documented."""
    import dataclasses
    import inspect
    import re

    gattn_docs.DOCUMENTED.clear()
    gattn_docs.DOCUMENTED_NAMES.clear()
    for module in gattn_docs.public_modules():
        gattn_docs.api_page(module)
    problems = {}
    for name in sorted(gattn_docs.DOCUMENTED_NAMES):
        obj = gattn_docs._lookup(name)
        if obj is None or gattn_docs._shared_value(obj) or gattn_docs._kind(obj) not in ("class", "function"):
            continue
        doc = inspect.cleandoc(obj.__doc__ or "") if inspect.isclass(obj) else inspect.getdoc(obj) or ""
        if not doc.strip():
            problems[name] = "no docstring"
            continue
        parameters = _parameters(obj)
        if inspect.isclass(obj) and not dataclasses.is_dataclass(obj) and not hasattr(obj, "_fields"):
            # a constructor inherited from another gattn class is documented there
            owner = next((c for c in obj.__mro__ if "__init__" in vars(c)), obj)
            if owner is not obj and owner.__module__.startswith("gattn"):
                doc = inspect.cleandoc(owner.__doc__ or "")
        if dataclasses.is_dataclass(obj):
            helped = {f.name for f in dataclasses.fields(obj) if f.metadata.get("help")}
            parameters = [p for p in parameters if p not in helped]
        if not parameters:
            continue
        args = _section(doc, ("Args", "Arguments", "Attributes", "Parameters"))
        if args is None:
            problems[name] = f"no Args section for {', '.join(parameters)}"
            continue
        missing = [p for p in parameters if not re.search(rf"(^|[\s,`*(]){re.escape(p)}\b", args)]
        untyped = [p for p in parameters if p not in missing and not re.search(rf"^\s*{re.escape(p)} \(", args,
                                                                              re.MULTILINE)]
        if missing:
            problems[name] = f"Args do not name {', '.join(missing)}"
        elif untyped:
            problems[name] = f"Args give no type for {', '.join(untyped)} (PyG style: ``name (type, optional): ...``)"
    return problems


def test_every_public_callable_documents_its_arguments(gattn_docs) -> None:
    """What the API pages list has a docstring, with a typed ``Args:`` entry for every parameter:
    a new undocumented public class or function fails here, not only in a reader's browser."""
    problems = undocumented(gattn_docs)
    assert not problems, "public objects without documented arguments:\n" + "\n".join(
        f"  {name}: {why}" for name, why in sorted(problems.items()))


def test_the_docstring_check_catches_an_undocumented_object(gattn_docs, monkeypatch) -> None:
    import gattn.losses

    def no_args(weight, margin=0.5):
        """A loss whose docstring says nothing of its arguments."""

    def named(weight, margin=0.5):
        """A loss.

        Args:
            weight (Tensor): the weights.
        """

    def untyped(weight, margin=0.5):
        """A loss.

        Args:
            weight (Tensor): the weights.
            margin: the margin.
        """

    for function in (no_args, named, untyped):
        function.__module__ = "gattn.losses"
        monkeypatch.setattr(gattn.losses, function.__name__, function, raising=False)
    monkeypatch.setattr(gattn.losses, "__all__", [*gattn.losses.__all__, "no_args", "named", "untyped"])
    problems = undocumented(gattn_docs)
    assert problems["gattn.losses.no_args"] == "no Args section for weight, margin"
    assert problems["gattn.losses.named"] == "Args do not name margin"
    assert problems["gattn.losses.untyped"].startswith("Args give no type for margin")
