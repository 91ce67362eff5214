"""Watching a study in the browser with `optuna-dashboard <https://optuna-dashboard.readthedocs.io>`_.

Two ways in, both serving on this machine only (``127.0.0.1`` by default):

* ``gattn tune PIPELINE ... --dashboard [PORT]`` serves the running study while the command
  runs, from a background thread of the command (stopped with it). ``PORT`` defaults to
  :data:`DEFAULT_PORT`; ``0`` takes any free port. The URL is printed before the first trial.
* ``gattn dashboard TARGET [--port PORT]`` serves a finished (or running) study until Ctrl-C.
  ``TARGET`` is a run folder (``runs/<pipeline>``, a study's report folder
  ``runs/<pipeline>/<study>``, one of its trial folders), a study file (``study.db``, a
  ``.log`` journal) or a storage URL (``sqlite:///...``, ``postgresql://...``,
  ``journal:PATH``): :func:`resolve_target`.

The server is the dashboard's WSGI application (:func:`optuna_dashboard.wsgi`) on the
standard library's WSGI server, one thread per request, request logs off. It reads the same
storage as the study, through its own connection.
"""

from __future__ import annotations

import socketserver
import threading
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

__all__ = ["DEFAULT_PORT", "Dashboard", "DashboardError", "resolve_target", "serve", "start_dashboard"]

#: the port of ``--dashboard`` without a value (optuna-dashboard's own default)
DEFAULT_PORT = 8080
_STUDY_FILE = "study.db"


class DashboardError(RuntimeError):
    """The dashboard cannot start (the package is missing, the port is taken, no study found)."""


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser keeping a connection open never blocks the command's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the page polls: no line per request
        pass


def _app(storage: Any) -> Any:
    try:
        import optuna_dashboard
    except ImportError:
        raise DashboardError("the dashboard needs optuna-dashboard: pip install optuna-dashboard "
                             "(it comes with gattn[pipelines])") from None
    return optuna_dashboard.wsgi(storage)


class Dashboard:
    """optuna-dashboard for ``storage`` served from a background thread.

    Args:
        storage (optuna.storages.BaseStorage or str): an Optuna storage object, or a URL as
            ``gattn tune --storage`` takes it (``sqlite:///...``, ``postgresql://...``,
            ``journal:PATH``).
        host (str, optional): the address to listen on; the default serves this machine only.
            (default: ``"127.0.0.1"``)
        port (int, optional): the port; ``0``: any free port (see :attr:`url`).
            (default: :data:`DEFAULT_PORT`, 8080)
        study_name (str, optional): a study to link to directly (:attr:`url` then opens its
            page). (default: :obj:`None`)

    Use it as a context manager, or call :meth:`start` and :meth:`stop`:

    >>> import optuna
    >>> storage = optuna.storages.InMemoryStorage()
    >>> with Dashboard(storage, port=0) as dashboard:  # port 0: any free port
    ...     dashboard.url  # doctest: +ELLIPSIS
    'http://127.0.0.1:.../dashboard'

    Raises:
        DashboardError: optuna-dashboard is not installed, or the port is taken.
    """

    def __init__(self, storage: Any, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 study_name: str | None = None) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"`port` must be an int in [0, 65535], got {port!r}")
        self.storage, self.host, self.port, self.study_name = storage, host, port, study_name
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The dashboard's address (the study's page when ``study_name`` is given and the study exists)."""
        base = f"http://{self.host}:{self.port}/dashboard"
        study_id = self._study_id()
        return f"{base}/studies/{study_id}" if study_id is not None else base

    def _study_id(self) -> int | None:
        if self.study_name is None or isinstance(self.storage, str):
            return None
        try:
            return self.storage.get_study_id_from_name(self.study_name)
        except KeyError:
            return None

    def start(self) -> Dashboard:
        """Bind the port and serve from a daemon thread; returns ``self``."""
        if self._server is not None:
            return self
        if isinstance(self.storage, str):
            from gattn.tune.study import make_storage

            self.storage = make_storage(self.storage, "dashboard")
        app = _app(self.storage)
        try:
            server = make_server(self.host, self.port, app, server_class=_ThreadingServer,
                                 handler_class=_QuietHandler)
        except OSError as exc:
            raise DashboardError(
                f"cannot serve the dashboard on {self.host}:{self.port}: {exc.strerror or exc} "
                "(give another port, or 0 for any free port)"
            ) from None
        self._server, self.port = server, server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="optuna-dashboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port (waits for the server thread)."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_dashboard(port: int | None, storage: str, study_name: str | None = None,
                    host: str = "127.0.0.1") -> Dashboard | None:
    """The dashboard of ``gattn tune --dashboard [PORT]``: started and announced on stdout, or
    None when ``port`` is None (no ``--dashboard``).

    Args:
        port (int, optional): the port (``0``: a free one; ``None``: no dashboard).
        storage (str): the study's storage URL.
        study_name (str, optional): the study the page opens on. (default: ``None``)
        host (str, optional): the address to serve on. (default: ``"127.0.0.1"``)
    """
    if port is None:
        return None
    dashboard = Dashboard(storage, host=host, port=port, study_name=study_name).start()
    print(f"optuna-dashboard: {dashboard.url} (served while the study runs)", flush=True)
    return dashboard


def resolve_target(target: str | Path) -> tuple[str, str | None]:
    """The storage URL of a study, and its name where the target names one.

    ``target`` may be a storage URL, a study file (``*.db``, ``*.sqlite``, ``*.log``), a folder
    holding ``study.db`` (``runs/<pipeline>``), a folder below one (a study's report folder
    ``runs/<pipeline>/<study>``: its name is the study's; a trial folder), or a runs folder with
    exactly one ``<pipeline>/study.db``.

    Args:
        target (str or Path): a runs folder, a pipeline's folder, a study's report folder, a trial
            folder, a ``study.db`` or journal file, or a storage URL.

    Raises:
        FileNotFoundError: nothing there; the message names the path and what was looked for.
        DashboardError: a runs folder with several studies files (the message lists them).
    """
    text = str(target)
    if "://" in text or text.startswith("journal:"):
        return text, None
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix == ".log":
            return f"journal:{path.resolve()}", None
        return f"sqlite:///{path.resolve()}", None
    if not path.is_dir():
        raise FileNotFoundError(f"dashboard: {path} is neither a folder, a study file nor a storage URL")
    folder = path.resolve()
    for depth, candidate in enumerate([folder, *folder.parents][:3]):
        if (candidate / _STUDY_FILE).is_file():
            study = folder.name if depth == 1 else folder.parent.name if depth == 2 else None
            return f"sqlite:///{candidate / _STUDY_FILE}", study
    below = sorted(folder.glob(f"*/{_STUDY_FILE}"))
    if len(below) == 1:
        return f"sqlite:///{below[0]}", None
    if below:
        raise DashboardError(f"dashboard: {folder} holds several studies files ("
                             + ", ".join(str(p.relative_to(folder)) for p in below) + "): give one of them")
    raise FileNotFoundError(f"dashboard: no {_STUDY_FILE} in {folder}, the two folders above it, or its "
                            "sub-folders (give a run folder, a study file or a storage URL)")


def _wait_for_ctrl_c() -> None:
    threading.Event().wait()


def serve(target: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> int:
    """``gattn dashboard TARGET``: serve the study until Ctrl-C; returns the exit status.

    Args:
        target (str or Path): what :func:`resolve_target` takes.
        host (str, optional): the address to serve on. (default: ``"127.0.0.1"``)
        port (int, optional): the port (``0``: a free one). (default: ``8080``)
    """
    storage, study_name = resolve_target(target)
    dashboard = Dashboard(storage, host=host, port=port, study_name=study_name).start()
    names = [s.study_name for s in dashboard.storage.get_all_studies()]
    if study_name is not None and study_name not in names:
        dashboard.study_name = None
    shown = f"{len(names)} stud{'y' if len(names) == 1 else 'ies'}" + (f" ({', '.join(names)})" if names else "")
    print(f"optuna-dashboard: {dashboard.url}  [{shown}]  Ctrl-C stops it", flush=True)
    try:
        _wait_for_ctrl_c()
    except KeyboardInterrupt:
        pass
    finally:
        dashboard.stop()
    return 0
