"""The Redis servers of the tests: the shared one (``MOTIA_PY_TEST_REDIS_URL``) with a key prefix per test,
and private ``redis-server`` processes for outage tests.

Tests use ``MOTIA_PY_TEST_REDIS_URL``; without it they fall back to ``redis://127.0.0.1:6379/0`` unless
``CI`` is set. An unreachable server skips them locally and fails them in CI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from motia_py.backends.base import Backend
from motia_py.backends.redis import RedisBackend
from motia_py.types import Clock


def redis_url() -> str:
    """The test server's URL; fails in CI when none is configured."""
    url = os.environ.get("MOTIA_PY_TEST_REDIS_URL")
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail("CI is set but MOTIA_PY_TEST_REDIS_URL is not: the Redis tests need a server")
    return "redis://127.0.0.1:6379/0"


def unreachable(reason: object) -> None:
    """Skip locally, fail in CI."""
    message = f"Redis not reachable for the redis backend tests: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


_PROBLEMS: dict[str, str | None] = {}


def check_reachable(url: str) -> None:
    """Skip (locally) or fail (CI) when the server at ``url`` does not answer PING; asked once per URL."""
    if url not in _PROBLEMS:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
        try:
            client.ping()
            _PROBLEMS[url] = None
        except redis.RedisError as exc:
            _PROBLEMS[url] = str(exc)
        finally:
            client.close()
    problem = _PROBLEMS[url]
    if problem is not None:
        unreachable(problem)


def new_prefix() -> str:
    return f"motia-test-{uuid.uuid4().hex}"


async def delete_prefix(url: str, prefix: str) -> None:
    """SCAN + UNLINK every key of ``prefix``."""
    client = Redis.from_url(url)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


class _TestRedisBackend(RedisBackend):
    """A RedisBackend that deletes its prefix's keys when closed."""

    async def close(self) -> None:
        opened = self._client is not None
        await super().close()
        if opened:
            await delete_prefix(self._url, self.keys.prefix)


def contract_backend(clock: Clock) -> Backend:
    """The redis backend of the contract suite: a fresh prefix, the suite's fake clock."""
    url = redis_url()
    check_reachable(url)
    return _TestRedisBackend(url, prefix=new_prefix(), clock=clock)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_redis(tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """``start()`` runs a redis-server on a fixed free port with an fsync-always AOF in ``tmp_path``."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                                 "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                return proc
            time.sleep(0.02)
        raise AssertionError("private redis-server did not start")

    start.port = port  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
