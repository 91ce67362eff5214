"""The processed-data cache: parquet files keyed by the options and the source files.

An entry's key is a hash of the stage's name, :data:`FORMAT_VERSION`, every option that
changes the result and the identity (absolute path, size, modification time) of every source
file, so a changed option or a changed file recomputes. Each entry is ``<stage>-<key>.*`` plus a
``<stage>-<key>.json`` sidecar holding the options and the read report; entries are written to
a temporary name and renamed, so an interrupted run never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .. import _paths

__all__ = ["FORMAT_VERSION", "CacheEntry", "default_cache_dir", "file_identity"]

#: bumped whenever a stage's output format or processing changes
FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``mimic3`` under the loaders' cache (``$GATTN_CACHE``, else ``~/.cache/gattn``)."""
    return _paths.default_cache_dir() / "mimic3"


def file_identity(path: str | os.PathLike) -> dict:
    """What identifies an input file in a cache key: its resolved path, size and modification
    time (a changed file gets a new key).

    Args:
        path (str or os.PathLike): the file.
    """
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class CacheEntry:
    """One cached result: ``directory/<stage>-<key><suffix>`` files and a JSON sidecar.

    Args:
        cache_dir (str or os.PathLike, optional): the cache folder (``None``: the default one).
        stage (str): the processing stage (the files' prefix).
        options (dict): everything the result depends on (hashed into the key).
    """

    def __init__(self, cache_dir: str | os.PathLike | None, stage: str, options: dict):
        self.directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        payload = json.dumps({"stage": stage, "version": FORMAT_VERSION, "options": options},
                             sort_keys=True, default=str)
        self.key = hashlib.sha256(payload.encode()).hexdigest()[:20]
        self.stage = stage
        self.options = options

    def file(self, suffix: str) -> Path:
        return self.directory / f"{self.stage}-{self.key}{suffix}"

    @property
    def meta_path(self) -> Path:
        return self.file(".json")

    def exists(self, *suffixes: str) -> bool:
        return self.meta_path.is_file() and all(self.file(s).is_file() for s in suffixes)

    def read_meta(self) -> dict:
        with open(self.meta_path) as handle:
            return json.load(handle)

    def temporary(self, suffix: str) -> Path:
        """Where to write ``suffix`` before :meth:`commit` renames it into place."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory / f".{self.stage}-{self.key}{suffix}.{os.getpid()}.tmp"

    def commit(self, suffixes: list[str], meta: dict) -> None:
        """Rename the temporaries of ``suffixes`` into place, then write the sidecar (last, so an
        entry whose sidecar exists is complete)."""
        for suffix in suffixes:
            os.replace(self.temporary(suffix), self.file(suffix))
        tmp = self.temporary(".json")
        with open(tmp, "w") as handle:
            json.dump({"stage": self.stage, "options": self.options, **meta}, handle, indent=1, default=str)
        os.replace(tmp, self.meta_path)
