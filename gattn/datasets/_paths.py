"""Where data files are looked for and cached (standard library only: every loader uses it)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .root import resolve_root  # the one data-root resolver

__all__ = ["default_cache_dir", "find_first", "require_file", "resolve_root"]


def require_file(path: str | os.PathLike, what: str) -> Path:
    """`path` as a Path, or a FileNotFoundError naming the file and the folder searched."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path.name!r} not found (looked in {path.parent.resolve()})")
    return path


def find_first(folder: Path, candidates: Sequence[str], what: str) -> Path:
    """The first of `candidates` (names relative to `folder`) that exists, else a
    FileNotFoundError naming them all and the folder."""
    for name in candidates:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{what}: none of {', '.join(candidates)} found in {folder.resolve()}")


def default_cache_dir() -> Path:
    """Where processed data is cached: ``$GATTN_CACHE``, else ``~/.cache/gattn``."""
    env = os.environ.get("GATTN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gattn"
