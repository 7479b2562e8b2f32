"""The state store's contract: every backend passes it unchanged (see ``conftest.BACKENDS``)."""

from __future__ import annotations

import asyncio

from motia_py.backends.base import Backend


async def test_state_get_set_delete(backend: Backend) -> None:
    assert await backend.state_get("ns", "g", "k") is None
    await backend.state_set("ns", "g", "k", '{"v": 1}')
    await backend.state_set("ns", "g", "k", '{"v": 2}')
    assert await backend.state_get("ns", "g", "k") == '{"v": 2}'
    assert await backend.state_get("other", "g", "k") is None
    assert await backend.state_delete("ns", "g", "k") is True
    assert await backend.state_delete("ns", "g", "k") is False
    assert await backend.state_get("ns", "g", "k") is None


async def test_state_items_groups_and_clear(backend: Backend) -> None:
    await backend.state_set("ns", "g2", "a", "1")
    await backend.state_set("ns", "g1", "a", "2")
    await backend.state_set("ns", "g1", "b", '"x"')
    await backend.state_set("other", "g9", "a", "3")

    assert await backend.state_items("ns", "g1") == {"a": "2", "b": '"x"'}
    assert await backend.state_items("ns", "nope") == {}
    assert await backend.state_groups("ns") == ["g1", "g2"]

    await backend.state_clear("ns", "g1")
    await backend.state_delete("ns", "g2", "a")

    assert await backend.state_items("ns", "g1") == {}
    assert await backend.state_groups("ns") == []
    assert await backend.state_groups("other") == ["g9"]


async def test_state_cas(backend: Backend) -> None:
    assert await backend.state_cas("ns", "g", "k", None, "1") is True  # absent, as expected
    assert await backend.state_cas("ns", "g", "k", None, "2") is False  # not absent any more
    assert await backend.state_cas("ns", "g", "k", "5", "2") is False  # mismatch
    assert await backend.state_get("ns", "g", "k") == "1"
    assert await backend.state_cas("ns", "g", "k", "1", "2") is True
    assert await backend.state_get("ns", "g", "k") == "2"
    assert await backend.state_cas("ns", "g", "k", "2", None) is True  # None deletes
    assert await backend.state_get("ns", "g", "k") is None
    assert await backend.state_cas("ns", "g", "k", "2", None) is False


async def test_state_cas_lets_one_of_many_concurrent_writers_win(backend: Backend) -> None:
    results = await asyncio.gather(*(backend.state_cas("ns", "g", "k", None, str(i)) for i in range(20)))
    assert results.count(True) == 1
    assert await backend.state_get("ns", "g", "k") == str(results.index(True))
