"""The ``backend`` fixture: every contract test runs once per backend.

To add a backend, write a factory ``(tmp_path, clock) -> Backend`` and list it in ``BACKENDS``, with the
marks it needs in ``MARKS``. Memory and SQLite are built from their URLs, so the entry-point lookup is
exercised too; Redis comes from ``test_redis.contract_backend`` (a fresh key prefix per test) and, like
the other Redis tests, is skipped locally and fails in CI when no server is reachable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from motia_py.backends.base import Backend
from motia_py.backends.registry import BackendOptions, create_backend
from motia_py.errors import BackendUnavailableError

START = 1_700_000_000.0


class FakeClock:
    """Epoch seconds that only move when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        self.now += seconds


BackendFactory = Callable[[Path, FakeClock], Backend]


def _memory(tmp_path: Path, clock: FakeClock) -> Backend:
    return create_backend("memory://", BackendOptions(root=tmp_path, clock=clock))


def _sqlite(tmp_path: Path, clock: FakeClock) -> Backend:
    return create_backend(f"sqlite:///{tmp_path}/m.db", BackendOptions(root=tmp_path, clock=clock))


def _redis(tmp_path: Path, clock: FakeClock) -> Backend:
    from .test_redis import contract_backend

    return contract_backend(clock)


BACKENDS: dict[str, BackendFactory] = {"memory": _memory, "sqlite": _sqlite, "redis": _redis}
MARKS: dict[str, list[pytest.MarkDecorator]] = {"redis": [pytest.mark.redis]}


@pytest.fixture
def clock() -> FakeClock:
    """The clock the ``backend`` fixture's backend reads."""
    return FakeClock()


@pytest.fixture(params=[pytest.param(name, marks=MARKS.get(name, [])) for name in BACKENDS])
async def backend(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Backend]:
    """An opened backend on ``clock``, closed after the test."""
    b = BACKENDS[request.param](tmp_path, clock)
    try:
        await b.open()
    except BackendUnavailableError as exc:
        if request.param != "redis":
            raise
        from .test_redis import unreachable

        unreachable(exc)  # skips locally, fails in CI
    try:
        yield b
    finally:
        await b.close()
