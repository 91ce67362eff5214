"""The data root, and the registry of data sources listed by ``gattn datasets``.

One resolver serves the command line, the loaders and the pipelines alike
(:func:`resolve_root`): an explicit ``root`` argument (``--root``), else the environment
variable ``GATTN_DATA``, else ``$XDG_DATA_HOME/gattn`` (``~/.local/share/gattn`` when
``XDG_DATA_HOME`` is unset). The default never depends on the current directory.

A loader module makes its data sets known to ``gattn datasets`` by registering a source::

    @register_source("mil", folder="")
    def available(root: Path) -> list[tuple[str, bool, str]]:
        ...   # (name, present, where it is or what is missing), one per data set

Sources are found by importing every module of :mod:`gattn.datasets` and the modules named
by the ``gattn.datasets`` entry-point group of installed packages (:func:`sources`).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DataSource", "default_root", "register_source", "resolve_root", "sources"]

ENV_VAR = "GATTN_DATA"


def default_root() -> Path:
    """``$XDG_DATA_HOME/gattn``, or ``~/.local/share/gattn``: independent of the current directory."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "gattn"


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root``, else ``$GATTN_DATA``, else :func:`default_root` (absolute).

    Args:
        root (str or PathLike, optional): a folder given by the user (``--root``; ``""`` counts
            as none). (default: :obj:`None`)
    """
    if root is not None and str(root) != "":
        return Path(root).expanduser().resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return default_root()


@dataclass(frozen=True)
class DataSource:
    """A family of data sets: ``available(root / folder)`` lists them.

    Attributes:
        name (str): the family's name (``gattn data`` lists it).
        available (Callable[[Path], list[tuple[str, bool, str]]]): lists ``(name, present, detail)``
            of its data sets under a folder.
        folder (str, optional): its folder under the data root (``""``: the root). (default: ``""``)
        module (str, optional): the module that loads it. (default: ``""``)
    """

    name: str
    available: Callable[[Path], list[tuple[str, bool, str]]]
    folder: str = ""
    module: str = ""


_SOURCES: dict[str, DataSource] = {}


def register_source(name: str, folder: str = "") -> Callable:
    """Decorator registering ``available(root) -> [(name, present, detail), ...]`` as a data
    source (``gattn datasets`` lists every source).

    Args:
        name (str): the source's name (a heading of ``gattn datasets``).
        folder (str, optional): the sub-folder of the data root the function is given.
            (default: ``""``, the root)

    Raises:
        ValueError: another module registered ``name``.
    """

    def decorate(fn: Callable[[Path], list[tuple[str, bool, str]]]) -> Callable:
        existing = _SOURCES.get(name)
        if existing is not None and existing.module != fn.__module__:
            raise ValueError(f"data source {name!r} is registered twice ({existing.module} and {fn.__module__})")
        _SOURCES[name] = DataSource(name, fn, folder, fn.__module__)
        return fn

    return decorate


def _import_all() -> list[str]:
    """Import the loader modules (and entry points); return a line per module that failed."""
    import gattn.datasets as package

    problems = []
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError as exc:  # a loader whose optional dependency is missing
            problems.append(f"{info.name}: {exc}")
    from importlib.metadata import entry_points

    for entry in entry_points(group="gattn.datasets"):
        try:
            entry.load()
        except Exception as exc:  # a broken plug-in must not hide the others
            problems.append(f"entry point {entry.name} ({entry.value}): {exc}")
    return problems


def sources() -> tuple[list[DataSource], list[str]]:
    """Every registered data source (sorted by name) and the import problems met finding them."""
    problems = _import_all()
    return [_SOURCES[name] for name in sorted(_SOURCES)], problems
