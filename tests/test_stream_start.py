"""A stream client that connects the moment a ``start`` or ``dev`` process's port accepts is served.

The port used to be bound before the streams' route was installed: on Redis and PostgreSQL (whose stream
hub subscribes before it serves) a client that came in between got HTTP 403 from the HTTP app's "no
WebSocket here" answer."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from motia_py.streams_client import StreamClient

from .backends.postgres_support import check_reachable as check_postgres
from .backends.postgres_support import drop_schema, new_schema, postgres_url
from .backends.redis_support import check_reachable as check_redis
from .backends.redis_support import new_prefix, redis_url
from .conftest import ProjectFactory

pytestmark = pytest.mark.slow

FILES = {
    "steps/ticks_stream.py": 'config = {"name": "ticks", "baseConfig": {"storageType": "default"}}\n',
    "steps/tick.step.py": """
        config = {"type": "api", "name": "Tick", "path": "/tick", "method": "POST", "emits": [], "flows": ["t"]}

        async def handler(req, ctx):
            await ctx.streams.ticks.set("all", "1", {"n": 1})
            return {"status": 200, "body": {}}
    """,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def _sqlite() -> AsyncIterator[dict[str, str]]:
    yield {"MOTIA_PY_BACKEND_URL": "sqlite:///.motia/motia.db"}


@contextlib.asynccontextmanager
async def _redis() -> AsyncIterator[dict[str, str]]:
    url = redis_url()
    check_redis(url)
    yield {"MOTIA_PY_BACKEND_URL": url, "MOTIA_PY_BACKEND_PREFIX": new_prefix()}


@contextlib.asynccontextmanager
async def _postgres() -> AsyncIterator[dict[str, str]]:
    url = postgres_url()
    check_postgres(url)
    schema = new_schema()
    try:
        yield {"MOTIA_PY_BACKEND_URL": f"{url}?schema={schema}"}
    finally:
        await drop_schema(url, schema)


BACKENDS: dict[str, Callable[[], contextlib.AbstractAsyncContextManager[dict[str, str]]]] = {
    "sqlite": _sqlite, "redis": _redis, "postgres": _postgres}


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Return the moment the port accepts a TCP connection (checked every millisecond)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.001)


@pytest.mark.parametrize("command", ["start", "dev"])
@pytest.mark.parametrize("backend", [
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
])
async def test_a_client_connecting_as_soon_as_the_port_accepts_is_served(
        make_project: ProjectFactory, command: str, backend: str) -> None:
    root = make_project(FILES)
    async with BACKENDS[backend]() as env:
        port = _free_port()
        log = root / f"{command}.log"
        args = ["--port", str(port)] if command == "dev" else []
        with log.open("w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "motia_py", command, *args, "--project", str(root)],
                                    env={**os.environ, **env, "MOTIA_PY_SERVER_PORT": str(port)},
                                    stdout=subprocess.DEVNULL, stderr=err, cwd=root)
        try:
            _wait_for_port(proc, port, log)
            async with StreamClient(f"ws://127.0.0.1:{port}") as client:
                group = await client.subscribe_group("ticks", "all")
                sync = await group.next()
                assert sync.get("event", {}).get("type") == "sync", sync
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
