"""The PostgreSQL servers of the tests: the shared one (``MOTIA_PY_TEST_POSTGRES_URL``, started by
``scripts/with-postgres.sh``) with a fresh schema per test, and private clusters for restart tests.

Without ``MOTIA_PY_TEST_POSTGRES_URL`` the tests skip locally and fail in CI, as the Redis tests do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest

from motia_py.backends.base import Backend
from motia_py.backends.postgres import PostgresBackend
from motia_py.backends.postgres_schema import quote
from motia_py.types import Clock


def unreachable(reason: object) -> None:
    """Skip locally, fail in CI."""
    message = f"PostgreSQL not reachable for the postgres backend tests: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def postgres_url() -> str:
    """The test server's URL (no schema); skips locally and fails in CI when none is configured."""
    url = os.environ.get("MOTIA_PY_TEST_POSTGRES_URL")
    if not url:
        unreachable("MOTIA_PY_TEST_POSTGRES_URL is not set (run the tests through scripts/with-postgres.sh)")
    return str(url)


_PROBLEMS: dict[str, str | None] = {}


def check_reachable(url: str) -> None:
    """Skip (locally) or fail (CI) when the server at ``url`` does not answer; asked once per URL."""
    if url not in _PROBLEMS:
        try:
            psycopg.connect(url, connect_timeout=5).close()
            _PROBLEMS[url] = None
        except psycopg.Error as exc:
            _PROBLEMS[url] = str(exc)
    problem = _PROBLEMS[url]
    if problem is not None:
        unreachable(problem)


def new_schema() -> str:
    """A schema name no other test uses."""
    return f"motia_test_{uuid.uuid4().hex[:16]}"


async def drop_schema(url: str, schema: str) -> None:
    """Remove a test's schema and everything in it."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")
    finally:
        await conn.close()


class _TestPostgresBackend(PostgresBackend):
    """A PostgresBackend that drops its schema when closed."""

    def __init__(self, url: str, schema: str, clock: Clock | None) -> None:
        super().__init__(url, schema=schema, clock=clock)
        self._test_url = url

    async def close(self) -> None:
        opened = self._pool is not None
        await super().close()
        if opened:
            await drop_schema(self._test_url, self.schema)


def contract_backend(clock: Clock) -> Backend:
    """The postgres backend of the contract suite: a fresh schema, the suite's fake clock."""
    url = postgres_url()
    check_reachable(url)
    return _TestPostgresBackend(url, new_schema(), clock)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binaries() -> Path | None:
    given = os.environ.get("MOTIA_PY_TEST_POSTGRES_BIN")
    if given:
        return Path(given)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else None


class PrivateServer:
    """A throwaway PostgreSQL cluster on a fixed free port (see :func:`private_postgres`)."""

    def __init__(self, bindir: Path, data: Path, sockets: Path, user: str | None) -> None:
        self.bindir, self.data, self.sockets, self.user = bindir, data, sockets, user
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Run the server (again, after a kill) and return once it accepts connections."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:  # a restart may find the old memory in use
                self.proc = subprocess.Popen(
                    [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-c",
                     "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.sockets}"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=self.user, group=self.user,
                    start_new_session=True)
            if _accepts(self.port):
                return
            time.sleep(0.1)
        raise AssertionError("private PostgreSQL did not start")

    def kill(self) -> None:
        """SIGKILL the server and every process of it, as a crash would, and return once all are gone.

        PostgreSQL's children each call ``setsid()``: killing the postmaster's process group leaves the
        backends running until they notice, and one may still answer a query. So the postmaster is stopped
        (it forks no more), its children are listed, and all of them are killed.
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGSTOP)
        children = _children(self.proc.pid)
        for pid in [self.proc.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # each is the leader of its own group (and its children's)
        self.proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in children):
            if time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL processes {children} outlived SIGKILL")
            time.sleep(0.01)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivateServer]:
    """A new cluster in a temporary directory of its own (not started), removed afterwards. As root, it
    belongs to ``MOTIA_PY_TEST_POSTGRES_USER`` (``postgres`` by default): PostgreSQL refuses to run as root,
    and pytest's own temporary directories are root's alone."""
    bindir = _binaries()
    if bindir is None or not (bindir / "initdb").exists():
        unreachable("no PostgreSQL binaries (set MOTIA_PY_TEST_POSTGRES_BIN)")
        raise AssertionError("unreachable")
    user = os.environ.get("MOTIA_PY_TEST_POSTGRES_USER", "postgres") if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="motia-pg-"))
    data = root / "data"
    data.mkdir()
    if user is not None:
        shutil.chown(root, user)
        shutil.chown(data, user)
    server = PrivateServer(bindir, data, root, user)
    try:
        subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--locale=C.UTF-8"], check=True, capture_output=True, user=user, group=user)
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGINT)  # a fast shutdown (clients are cut), then the kill
            try:
                server.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(root, ignore_errors=True)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _accepts(port: int) -> bool:
    try:
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True
