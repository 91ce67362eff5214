"""A throw-away PostgreSQL server on loopback for the tests of many tuning workers.

The server binaries come from, in order: ``$GATTN_PG_BINDIR``, ``pg_config --bindir``, Debian's
``/usr/lib/postgresql/<version>/bin`` (the newest), or ``initdb`` on the PATH. When none is
there and this is root on a machine with apt-get, Debian's ``postgresql`` package is installed
first (as CI does on a clean machine). PostgreSQL refuses to run as root: as root the server
runs as the ``postgres`` user (created with ``useradd`` if absent); otherwise as the current user.
Its data folder is a fresh temporary folder, removed when the server stops; fsync is off (the
data is thrown away).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SERVER_USER = "postgres"


class Unavailable(RuntimeError):
    """No PostgreSQL server can be had here (the message says why)."""


def _bindir_ok(folder: str | None) -> bool:
    return bool(folder) and all(Path(folder, tool).is_file() for tool in ("initdb", "pg_ctl", "postgres"))


def find_bindir() -> str | None:
    candidates = [os.environ.get("GATTN_PG_BINDIR")]
    if shutil.which("pg_config"):
        done = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(done.stdout.strip() if done.returncode == 0 else None)
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                         if Path(p).parent.name.isdigit() else 0, reverse=True)
    initdb = shutil.which("initdb")
    candidates.append(str(Path(initdb).parent) if initdb else None)
    return next((c for c in candidates if _bindir_ok(c)), None)


def install() -> None:
    """Debian's server package, when this is root with apt-get; else :class:`Unavailable`."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl, postgres) were found and this is not "
                          "root on a Debian machine: install the 'postgresql' package or set GATTN_PG_BINDIR")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            raise Unavailable(f"{' '.join(command)} failed: {done.stderr.strip()[-300:]}")


def _server_user() -> str | None:
    """The user the server runs as (None: this one), created if needed."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        done = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                               SERVER_USER], capture_output=True, text=True)
        if done.returncode != 0:
            raise Unavailable(
                f"cannot create the user {SERVER_USER!r} to run PostgreSQL: {done.stderr.strip()}") from None
    return SERVER_USER


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def postgres_server(timeout: float = 120) -> Iterator[str]:
    """Start a server on 127.0.0.1; yields the URL of its ``postgres`` database (user ``gattn``,
    trust authentication on loopback only)."""
    bindir = find_bindir()
    if bindir is None:
        install()
        bindir = find_bindir()
        if bindir is None:
            raise Unavailable("the postgresql package was installed but its server binaries were not found")
    user = _server_user()
    folder = Path(tempfile.mkdtemp(prefix="gattn-pg-"))
    data, sockets, log = folder / "data", folder / "sockets", folder / "server.log"
    sockets.mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (folder, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    prefix = ["runuser", "-u", user, "--"] if user is not None else []
    port = _free_port()

    def call(*command: str) -> None:
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=timeout, cwd=folder)
        if done.returncode != 0:
            tail = log.read_text()[-500:] if log.is_file() else ""
            raise Unavailable(f"{Path(command[0]).name} failed: {(done.stderr or done.stdout).strip()[-500:]} {tail}")

    try:
        call(f"{bindir}/initdb", "-D", str(data), "-U", "gattn", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=200")
        call(f"{bindir}/pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", str(int(timeout)),
             "start")
        try:
            yield f"postgresql://gattn@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*prefix, f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=timeout, cwd=folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """A new database on the server; its URL."""
    import psycopg2

    connection = psycopg2.connect(server_url)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def wait_for(predicate, timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()
