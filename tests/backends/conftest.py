"""Fixtures of the backend contract suites: every store's contract runs once per implementation.

- ``backend``: an opened backend, once per entry of ``BACKENDS`` (memory, sqlite, redis, postgres); the
  queue and state contracts use it.
- ``lease_store`` and ``trace_store``: the same backends, plus the stores derived from a state store
  (:mod:`motia_py.backends.derived`) on top of the memory and SQLite backends.

To add a backend, write a factory ``(tmp_path, clock) -> Backend`` and list it in ``BACKENDS``, with the
marks it needs in ``MARKS``. Memory and SQLite are built from their URLs, so the entry-point lookup is
exercised too; Redis comes from ``redis_support.contract_backend`` (a fresh key prefix per test) and
PostgreSQL from ``postgres_support.contract_backend`` (a fresh schema per test); like the other tests of
those servers, they are skipped locally and fail in CI when no server is reachable.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from motia_py.backends.base import Backend, LeaseStore, TraceStore
from motia_py.backends.derived import StateLeaseStore, StateTraceStore
from motia_py.backends.registry import BackendOptions, create_backend
from motia_py.errors import BackendUnavailableError
from motia_py.testing import VirtualClock

from .redis_support import private_redis

START = 1_700_000_000.0

BackendFactory = Callable[[Path, VirtualClock], Backend]


def _memory(tmp_path: Path, clock: VirtualClock) -> Backend:
    return create_backend("memory://", BackendOptions(root=tmp_path, clock=clock))


def _sqlite(tmp_path: Path, clock: VirtualClock) -> Backend:
    return create_backend(f"sqlite:///{tmp_path}/m.db", BackendOptions(root=tmp_path, clock=clock))


def _redis(tmp_path: Path, clock: VirtualClock) -> Backend:
    from .redis_support import contract_backend

    return contract_backend(clock)


def _postgres(tmp_path: Path, clock: VirtualClock) -> Backend:
    from .postgres_support import contract_backend

    return contract_backend(clock)


BACKENDS: dict[str, BackendFactory] = {"memory": _memory, "sqlite": _sqlite, "redis": _redis, "postgres": _postgres}
MARKS: dict[str, list[pytest.MarkDecorator]] = {"redis": [pytest.mark.redis], "postgres": [pytest.mark.postgres]}
DERIVED_ON = ("memory", "sqlite")  # backends whose state store also carries the derived stores' contract


def _params(names: list[str]) -> list[object]:
    return [pytest.param(name, marks=MARKS.get(name.removeprefix("state-on-"), [])) for name in names]


@pytest.fixture
def clock() -> VirtualClock:
    """The clock the fixtures' backends and stores read."""
    return VirtualClock(START)


@contextlib.asynccontextmanager
async def opened(name: str, tmp_path: Path, clock: VirtualClock) -> AsyncIterator[Backend]:
    """The backend ``name`` of ``BACKENDS``, opened on ``clock`` and closed afterwards."""
    b = BACKENDS[name](tmp_path, clock)
    try:
        await b.open()
    except BackendUnavailableError as exc:
        if name == "redis":
            from .redis_support import unreachable
        elif name == "postgres":
            from .postgres_support import unreachable
        else:
            raise
        unreachable(exc)  # skips locally, fails in CI
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture(params=_params(list(BACKENDS)))
async def backend(request: pytest.FixtureRequest, tmp_path: Path, clock: VirtualClock) -> AsyncIterator[Backend]:
    """An opened backend on ``clock``, closed after the test."""
    async with opened(request.param, tmp_path, clock) as b:
        yield b


_STORES = [*BACKENDS, *(f"state-on-{name}" for name in DERIVED_ON)]


@pytest.fixture(params=_params(_STORES))
async def lease_store(request: pytest.FixtureRequest, tmp_path: Path, clock: VirtualClock) -> AsyncIterator[LeaseStore]:
    """A backend's own lease store, or the one derived from a backend's state store (``state-on-*``)."""
    name: str = request.param
    async with opened(name.removeprefix("state-on-"), tmp_path, clock) as b:
        yield StateLeaseStore(b, clock) if name.startswith("state-on-") else b


@pytest.fixture(params=_params(_STORES))
async def trace_store(request: pytest.FixtureRequest, tmp_path: Path, clock: VirtualClock) -> AsyncIterator[TraceStore]:
    """A backend's own trace store, or the one derived from a backend's state store (``state-on-*``)."""
    name: str = request.param
    async with opened(name.removeprefix("state-on-"), tmp_path, clock) as b:
        yield StateTraceStore(b) if name.startswith("state-on-") else b


@pytest.fixture
def private_redis_url(tmp_path: Path) -> Iterator[str]:
    """The URL of a redis-server of the test's own (for tests that flush, kill or pause its clients)."""
    with private_redis(tmp_path) as start:
        start()
        yield f"redis://127.0.0.1:{start.port}/0"  # type: ignore[attr-defined]
