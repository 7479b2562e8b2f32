"""The transactional store's contract (``complete_tx``): state writes, emits and the acknowledgement commit
together, fenced by the lease and checked against what was read; every backend passes it unchanged (see
``conftest.BACKENDS``)."""

from __future__ import annotations

import asyncio

from motia_py.backends.base import Backend, Outgoing, StateRead, StateWrite, Target
from motia_py.backends.records import FlowControl
from motia_py.testing import VirtualClock

from .helpers import LEASE_S, claim_one, data, envelope, publish, to

NS = "flow"


def put(group: str, key: str, value: str | None) -> StateWrite:
    return StateWrite(NS, group, key, value)


def read(group: str, key: str, value: str | None) -> StateRead:
    return StateRead(NS, group, key, value)


def read_group(group: str, items: dict[str, str]) -> StateRead:
    return StateRead(NS, group, None, items=items)


async def test_commit_applies_the_writes_acknowledges_and_publishes_together(backend: Backend) -> None:
    await backend.state_set(NS, "g", "old", '"gone"')
    await publish(backend, "a")
    d = await claim_one(backend, "a")
    nxt = envelope(data="next")

    result = await backend.complete_tx(d, [to(nxt, "b")], [put("g", "n", "1"), put("g", "old", None),
                                                             put("h", "x", '{"y":2}')], [read("g", "n", None)])

    assert result == "ok"
    assert await backend.state_items(NS, "g") == {"n": "1"}
    assert await backend.state_get(NS, "h", "x") == '{"y":2}'
    assert await backend.state_groups(NS) == ["g", "h"]
    assert await backend.claim("a", 10, LEASE_S) == []  # acknowledged
    assert data(await backend.claim("b", 10, LEASE_S)) == ["next"]  # the outbox was published


async def test_a_lost_lease_commits_nothing_and_the_new_attempt_still_can(backend: Backend, clock: VirtualClock
                                                                          ) -> None:
    await publish(backend, "a")
    old = await claim_one(backend, "a", lease_s=1.0)
    clock.advance(2.0)
    new = await claim_one(backend, "a")  # the lease expired: another worker has the delivery now
    assert new.attempt == old.attempt + 1

    assert await backend.complete_tx(old, [to(envelope(), "b")], [put("g", "k", "1")], []) == "lost"
    assert await backend.state_get(NS, "g", "k") is None
    assert await backend.claim("b", 10, LEASE_S) == []

    assert await backend.complete_tx(new, [to(envelope(), "b")], [put("g", "k", "2")], []) == "ok"
    assert await backend.state_get(NS, "g", "k") == "2"
    assert len(await backend.claim("b", 10, LEASE_S)) == 1


async def test_a_second_commit_of_one_attempt_is_lost_and_writes_nothing(backend: Backend) -> None:
    await publish(backend, "a")
    d = await claim_one(backend, "a")
    assert await backend.complete_tx(d, [], [put("g", "n", "1")], [read("g", "n", None)]) == "ok"

    assert await backend.complete_tx(d, [to(envelope(), "b")], [put("g", "n", "2")], []) == "lost"
    assert await backend.state_get(NS, "g", "n") == "1"
    assert await backend.claim("b", 10, LEASE_S) == []


async def test_a_lost_lease_wins_over_a_conflict(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a")
    old = await claim_one(backend, "a", lease_s=1.0)
    clock.advance(2.0)
    await claim_one(backend, "a")
    await backend.state_set(NS, "g", "n", "5")

    assert await backend.complete_tx(old, [], [], [read("g", "n", None)]) == "lost"


async def test_a_changed_read_is_a_conflict_that_changes_nothing(backend: Backend) -> None:
    await backend.state_set(NS, "g", "n", "1")
    await publish(backend, "a")
    d = await claim_one(backend, "a")
    await backend.state_set(NS, "g", "n", "7")  # another writer, after the attempt read "1"

    result = await backend.complete_tx(d, [to(envelope(), "b")], [put("g", "n", "2"), put("g", "m", "x")],
                                       [read("g", "n", "1")])

    assert result == "conflict"
    assert await backend.state_items(NS, "g") == {"n": "7"}
    assert await backend.claim("b", 10, LEASE_S) == []
    # the delivery is still leased by the same attempt: running it again commits
    assert await backend.claim("a", 10, LEASE_S) == []
    assert await backend.complete_tx(d, [to(envelope(), "b")], [put("g", "n", "8")], [read("g", "n", "7")]) == "ok"
    assert await backend.state_get(NS, "g", "n") == "8"
    assert len(await backend.claim("b", 10, LEASE_S)) == 1


async def test_reads_of_absent_keys_and_of_deleted_keys_are_checked(backend: Backend) -> None:
    await backend.state_set(NS, "g", "there", "1")
    await backend.state_set(NS, "g", "absent", "now here")  # was absent when read
    assert await backend.complete_tx(None, [], [put("g", "z", "1")], [read("g", "absent", None)]) == "conflict"
    await backend.state_delete(NS, "g", "there")  # was "1" when read
    assert await backend.complete_tx(None, [], [put("g", "z", "1")], [read("g", "there", "1")]) == "conflict"
    assert await backend.state_get(NS, "g", "z") is None
    assert await backend.complete_tx(None, [], [put("g", "z", "1")], [read("g", "there", None)]) == "ok"
    assert await backend.state_get(NS, "g", "z") == "1"


async def test_a_group_read_conflicts_when_a_key_is_added_changed_or_removed(backend: Backend) -> None:
    await backend.state_set(NS, "g", "a", "1")
    await backend.state_set(NS, "g", "b", "2")
    seen = {"a": "1", "b": "2"}
    assert await backend.complete_tx(None, [], [put("out", "sum", "3")], [read_group("g", seen)]) == "ok"

    for change in (backend.state_set(NS, "g", "c", "3"), backend.state_set(NS, "g", "a", "9"),
                   backend.state_delete(NS, "g", "b")):
        await change
        assert await backend.complete_tx(None, [], [put("out", "sum", "0")], [read_group("g", seen)]) == "conflict"
        assert await backend.state_get(NS, "out", "sum") == "3"
        seen = await backend.state_items(NS, "g")
    assert await backend.complete_tx(None, [], [], [read_group("empty", {})]) == "ok"


async def test_writes_apply_in_order_a_clear_first_then_the_keys(backend: Backend) -> None:
    for k in ("a", "b", "c"):
        await backend.state_set(NS, "g", k, '"old"')

    writes = [put("g", "a", '"early"'), StateWrite(NS, "g", None, None), put("g", "b", '"new"'),
              put("g", "gone", None)]
    assert await backend.complete_tx(None, [], writes, []) == "ok"
    assert await backend.state_items(NS, "g") == {"b": '"new"'}

    assert await backend.complete_tx(None, [], [StateWrite(NS, "g", None, None)], []) == "ok"
    assert await backend.state_items(NS, "g") == {}
    assert "g" not in await backend.state_groups(NS)


async def test_without_a_delivery_the_writes_and_emits_commit_together(backend: Backend) -> None:
    nxt = envelope(data="from an API")
    assert await backend.complete_tx(None, [to(nxt, "b")], [put("g", "k", "1")], [read("g", "k", None)]) == "ok"
    assert await backend.state_get(NS, "g", "k") == "1"
    assert data(await backend.claim("b", 10, LEASE_S)) == ["from an API"]

    assert await backend.complete_tx(None, [to(envelope(), "b")], [put("g", "k", "2")],
                                     [read("g", "k", None)]) == "conflict"
    assert await backend.state_get(NS, "g", "k") == "1"
    assert await backend.claim("b", 10, LEASE_S) == []


async def test_a_commit_without_effects_is_a_complete_and_moves_a_fifo_group_on(backend: Backend) -> None:
    await publish(backend, "f", 2, fifo=True, group_id="g1")
    head = await claim_one(backend, "f")
    assert await backend.claim("f", 10, LEASE_S) == []  # the group waits for its head

    assert await backend.complete_tx(head, [], [], []) == "ok"

    assert data(await backend.claim("f", 10, LEASE_S)) == [1]


async def test_of_concurrent_commits_that_read_one_counter_exactly_one_wins(backend: Backend) -> None:
    await backend.state_set(NS, "g", "n", "0")
    await publish(backend, "a", 8)
    ds = await backend.claim("a", 8, LEASE_S)
    assert len(ds) == 8

    results = await asyncio.gather(*(backend.complete_tx(d, [to(envelope(data=i), "b")], [put("g", "n", "1")],
                                                         [read("g", "n", "0")]) for i, d in enumerate(ds)))

    assert sorted(results) == ["conflict"] * 7 + ["ok"]
    assert await backend.state_get(NS, "g", "n") == "1"
    assert len(await backend.claim("b", 10, LEASE_S)) == 1
    assert len(await backend.claim("a", 10, LEASE_S)) == 0  # the losers are still leased, by their attempts
    assert (await backend.stats()).per_step["a"] == 7


async def test_of_concurrent_commits_that_read_a_key_as_absent_and_create_it_exactly_one_wins(
        backend: Backend) -> None:
    results = await asyncio.gather(*(backend.complete_tx(None, [], [put("g", "n", str(i))], [read("g", "n", None)])
                                     for i in range(8)))

    assert sorted(results) == ["conflict"] * 7 + ["ok"]
    assert [str(i) for i, r in enumerate(results) if r == "ok"] == [await backend.state_get(NS, "g", "n")]


async def test_of_concurrent_commits_that_read_an_empty_group_and_add_to_it_exactly_one_wins(
        backend: Backend) -> None:
    results = await asyncio.gather(*(backend.complete_tx(None, [], [put("g", f"k{i}", "1")], [read_group("g", {})])
                                     for i in range(8)))

    assert sorted(results) == ["conflict"] * 7 + ["ok"]
    assert len(await backend.state_items(NS, "g")) == 1


# -- change events of watched keys (state-triggered steps) ---------------------------------------
def watched(group: str, key: str, value: str | None, *steps: str) -> StateWrite:
    return StateWrite(NS, group, key, value, Outgoing(envelope(topic=f"state:{NS}"), tuple(Target(s) for s in steps)))


async def change_events(backend: Backend, step: str) -> list[object]:
    return [d.envelope.data for d in await backend.claim(step, 100, LEASE_S)]


async def test_a_commit_queues_the_change_events_of_the_watched_keys_it_changed(backend: Backend) -> None:
    await backend.state_set(NS, "g", "same", '"x"')
    await backend.state_set(NS, "g", "old", '{"v":1}')
    await publish(backend, "a")
    d = await claim_one(backend, "a")
    writes = [watched("g", "new", '{"v":2}', "w"), watched("g", "old", None, "w"), watched("g", "same", '"x"', "w"),
              watched("g", "never", None, "w"), put("g", "plain", "1")]

    assert await backend.complete_tx(d, [], writes, []) == "ok"

    assert await change_events(backend, "w") == [  # in the order written; none for what did not change
        {"group_id": "g", "item_id": "new", "old_value": None, "new_value": {"v": 2}},
        {"group_id": "g", "item_id": "old", "old_value": {"v": 1}, "new_value": None}]
    assert await backend.state_items(NS, "g") == {"new": '{"v":2}', "same": '"x"', "plain": "1"}


async def test_a_change_event_sees_the_value_an_earlier_write_of_the_same_commit_left(backend: Backend) -> None:
    writes = [watched("g", "k", '"a"', "w"), watched("g", "k", '"b"', "w")]
    assert await backend.complete_tx(None, [], writes, []) == "ok"
    assert [e["old_value"] for e in await change_events(backend, "w")] == [None, "a"]  # type: ignore[index]


async def test_a_conflict_or_a_lost_lease_queues_no_change_event(backend: Backend, clock: VirtualClock) -> None:
    await backend.state_set(NS, "g", "k", "1")
    assert await backend.complete_tx(None, [], [watched("g", "k", "2", "w")], [read("g", "k", "0")]) == "conflict"
    await publish(backend, "a")
    old = await claim_one(backend, "a", lease_s=1.0)
    clock.advance(2.0)
    await claim_one(backend, "a")
    assert await backend.complete_tx(old, [], [watched("g", "k", "2", "w")], []) == "lost"
    assert await change_events(backend, "w") == []
    assert await backend.state_get(NS, "g", "k") == "1"


async def test_a_commit_frees_the_slot_of_a_flow_controlled_step(backend: Backend) -> None:
    backend = backend
    control = FlowControl(global_concurrency=1)
    await publish(backend, "a", 2)
    [first] = await backend.claim("a", 10, LEASE_S, control=control)
    assert await backend.claim("a", 10, LEASE_S, control=control) == []  # its one slot is taken

    assert await backend.complete_tx(first, [], [put("g", "k", "1")], []) == "ok"

    [second] = await backend.claim("a", 10, LEASE_S, control=control)
    assert data([first, second]) == [0, 1]
