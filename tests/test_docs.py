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
