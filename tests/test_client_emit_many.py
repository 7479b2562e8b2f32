"""``Client.emit_many``: many events in one call, in both item shapes; all or none; in order, per message
group on FIFO steps too; and its blocking twin."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from motia_py import Client
from motia_py.errors import InvalidEmitError, PayloadTooLargeError, UnknownTopicError
from motia_py.runtime import Runtime, backend_for

from .backends.redis_support import check_reachable, delete_prefix, new_prefix, redis_url
from .conftest import ProjectFactory
from .probes import inject, load, wait

SQLITE = '[backend]\nurl = "sqlite:///.motia/motia.db"\nmax_payload_bytes = 1000\n'
STEPS = {
    "flows/f.toml": 'entry_topics = ["a", "b", "fifo"]\n',
    "steps/a.step.py": """
        config = {"type": "event", "name": "A", "subscribes": ["a"], "emits": [], "flows": ["f"]}
        async def handler(input, ctx):
            pass
    """,
    "steps/b.step.py": """
        config = {"type": "event", "name": "B", "subscribes": ["b"], "emits": [], "flows": ["f"]}
        async def handler(input, ctx):
            pass
    """,
    "steps/fifo.step.py": """
        config = {"type": "event", "name": "Fifo", "subscribes": ["fifo"], "emits": [], "flows": ["f"],
                  "infrastructure": {"queue": {"type": "fifo", "concurrency": 4}}}
        async def handler(input, ctx):
            seen.append((input["g"], input["i"]))
            if len(seen) == expected:
                done.set()
    """,
}


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def root(request: pytest.FixtureRequest, make_project: ProjectFactory) -> Iterator[Path]:
    if request.param == "sqlite":
        yield make_project({**STEPS, "motia_py.toml": SQLITE})
        return
    url = redis_url()
    check_reachable(url)
    prefix = new_prefix()
    yield make_project({**STEPS, "motia_py.toml": f'[backend]\nurl = "{url}"\nprefix = "{prefix}"\n'
                                                   "max_payload_bytes = 1000\n"})
    asyncio.run(delete_prefix(url, prefix))


async def ready_counts(root: Path) -> dict[str, int]:
    """Deliveries waiting per step, read through a backend object of its own."""
    backend = backend_for(load(root).settings)
    await backend.open()
    try:
        return dict((await backend.stats()).per_step)
    finally:
        await backend.close()


async def test_emit_many_takes_pairs_and_dicts_and_returns_one_id_each_in_order(root: Path) -> None:
    async with Client.from_project(root) as client:
        ids = await client.emit_many([("a", {"i": 0}), {"topic": "b", "data": {"i": 1}},
                                      {"topic": "a", "data": None, "delay": 0}])
        [single] = await client.emit_many([("b", 2)])
    assert len(set(ids)) == 3 and single not in ids
    assert await ready_counts(root) == {"A": 2, "B": 2}


@pytest.mark.parametrize(("bad", "error"), [
    (("nowhere", {}), UnknownTopicError),
    (("a", "x" * 2000), PayloadTooLargeError),
    ({"topic": "a", "data": {}, "priority": 3}, InvalidEmitError),
    ({"topic": "a", "delay": -1}, InvalidEmitError),
    (("a",), InvalidEmitError),
])
async def test_one_bad_item_publishes_nothing_of_the_call(root: Path, bad: object, error: type[Exception]) -> None:
    async with Client.from_project(root) as client:
        with pytest.raises(error):
            await client.emit_many([("a", {"i": 0}), ("b", {"i": 1}), bad, ("a", {"i": 3})])  # type: ignore[list-item]
    assert await ready_counts(root) == {}


async def test_another_connection_sees_all_of_a_call_or_none_of_it(root: Path) -> None:
    n = 3000
    observed: list[int] = []
    watcher = backend_for(load(root).settings)
    await watcher.open()
    try:
        async with Client.from_project(root) as client:
            await client.emit("b", {})  # connected: what follows is the batch alone
            publishing = asyncio.ensure_future(client.emit_many([("a", {"i": i}) for i in range(n)]))
            while not publishing.done():
                observed.append((await watcher.stats()).per_step.get("A", 0))
            await publishing
            observed.append((await watcher.stats()).per_step.get("A", 0))
    finally:
        await watcher.close()
    assert set(observed) <= {0, n}
    assert observed[-1] == n


async def test_events_of_a_message_group_are_handled_in_the_order_given(root: Path) -> None:
    items = [{"topic": "fifo", "data": {"g": g, "i": i}, "messageGroupId": g} for i in range(30) for g in ("x", "y")]
    async with Client.from_project(root) as client:
        await client.emit_many(items)
    project = load(root)
    seen: list[tuple[str, int]] = []
    done = asyncio.Event()
    inject(project, "Fifo", seen=seen, done=done, expected=len(items))
    async with Runtime(project, backend_for(project.settings), cron=False, poll_s=0.05):
        await wait(done, "every event to be handled")
    for g in ("x", "y"):
        assert [i for group, i in seen if group == g] == list(range(30))


def test_emit_many_sync_works_from_blocking_code(make_project: ProjectFactory) -> None:
    root = make_project({**STEPS, "motia_py.toml": SQLITE})
    client = Client.from_project(root)
    try:
        ids = client.emit_many_sync([("a", {"i": i}) for i in range(5)])
    finally:
        client.close()
    assert len(ids) == 5
    assert asyncio.run(ready_counts(root)) == {"A": 5}
