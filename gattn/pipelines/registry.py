"""The pipeline registry: a pipeline names itself with :func:`register_pipeline`; nothing else
lists the families.

Where pipelines are found (:func:`discover`):

* every public module of the :mod:`gattn.pipelines` package (one file per family);
* the ``gattn.pipelines`` entry-point group of installed packages (a third-party package
  declares ``[project.entry-points."gattn.pipelines"] mine = "mypkg.pipeline"``);
* the modules named in the ``GATTN_PLUGINS`` environment variable (comma separated), or by
  ``gattn --plugin MODULE``: a pipeline in a file of your own, with no package to install.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Pipeline

__all__ = ["PLUGINS_ENV", "discover", "get_pipeline", "pipeline_names", "register_pipeline"]

PLUGINS_ENV = "GATTN_PLUGINS"

#: name -> pipeline class
_REGISTRY: dict[str, type[Pipeline]] = {}
#: module -> why it could not be imported (shown by ``gattn train --help``)
_PROBLEMS: dict[str, str] = {}
_DISCOVERED: set[str] = set()

# infrastructure modules of the package, which register no family
_INFRASTRUCTURE = {"base", "config", "registry", "results", "runner", "task"}


def register_pipeline(name: str) -> Callable[[type[Pipeline]], type[Pipeline]]:
    """Class decorator: make the :class:`~gattn.pipelines.base.Pipeline` subclass available as ``name``.

    Args:
        name (str): the registry name (``gattn train NAME``): letters, digits, ``_`` or ``-``.

    Raises:
        ValueError: another class already registered ``name``.
    """
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"pipeline name must be letters, digits, '_' or '-', got {name!r}")

    def decorate(cls: type[Pipeline]) -> type[Pipeline]:
        from .base import Pipeline

        if not (isinstance(cls, type) and issubclass(cls, Pipeline)):
            raise TypeError(f"@register_pipeline({name!r}) decorates a Pipeline subclass, got {cls!r}")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"pipeline {name!r} is registered twice ({existing.__module__} and {cls.__module__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _import(module: str, label: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # a broken family must not hide the others; the reason is shown
        _PROBLEMS[label] = f"{type(exc).__name__}: {exc}"


def discover(plugins: Iterable[str] = ()) -> dict[str, type[Pipeline]]:
    """Import the built-in families, installed entry points and plug-in modules; the registry.

    Args:
        plugins (Iterable[str], optional): more modules to import (``gattn --plugin``; the
            ``GATTN_PLUGINS`` variable and the ``gattn.pipelines`` entry points are always
            read). (default: ``()``)

    Returns:
        dict: ``name -> Pipeline subclass``.
    """
    import gattn.pipelines as package

    wanted = [info.name for info in pkgutil.iter_modules(package.__path__, package.__name__ + ".")
              if not info.name.rsplit(".", 1)[-1].startswith("_")
              and info.name.rsplit(".", 1)[-1] not in _INFRASTRUCTURE]
    for module in wanted:
        if module not in _DISCOVERED:
            _DISCOVERED.add(module)
            _import(module, module)
    from importlib.metadata import entry_points

    for entry in entry_points(group="gattn.pipelines"):
        key = f"entry point {entry.name}"
        if key not in _DISCOVERED:
            _DISCOVERED.add(key)
            try:
                entry.load()
            except Exception as exc:
                _PROBLEMS[key] = f"{type(exc).__name__}: {exc}"
    names = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    for module in [*names, *plugins]:
        if module not in _DISCOVERED:
            _DISCOVERED.add(module)
            _import(module, module)
    return dict(_REGISTRY)


def problems() -> dict[str, str]:
    """Modules that failed to import during discovery, with the reason."""
    return dict(_PROBLEMS)


def pipeline_names() -> list[str]:
    """The registered names, sorted (after :func:`discover`)."""
    return sorted(discover())


def get_pipeline(name: str, **kwargs: Any) -> Pipeline:
    """An instance of the pipeline registered as ``name``.

    Args:
        name (str): a registered name (:func:`pipeline_names`).
        **kwargs: the pipeline class's constructor arguments.

    Raises:
        ValueError: no pipeline has that name (the message lists the registered ones, and the
            modules that failed to import, if any).
    """
    registry = discover()
    if name not in registry:
        message = f"no pipeline named {name!r}; registered: {', '.join(sorted(registry)) or 'none'}"
        if _PROBLEMS:
            message += "; could not import: " + "; ".join(f"{m} ({why})" for m, why in _PROBLEMS.items())
        raise ValueError(message)
    return registry[name](**kwargs)
