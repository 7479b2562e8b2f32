"""The state-change store's contract (see ``StateChangeStore``): every backend passes it unchanged."""

from __future__ import annotations

import asyncio
import json

from motia_py.backends.base import Backend, Outgoing, Target
from motia_py.backends.realtime import CasStateChanges, state_changes_of
from motia_py.backends.state_change import ANY

from .helpers import claim_one, envelope


def notify(*steps: str) -> Outgoing:
    return Outgoing(envelope(topic="state:ns"), tuple(Target(step=s) for s in steps))


async def change_events(backend: Backend, step: str) -> list[dict[str, object]]:
    out = []
    while got := await backend.claim(step, 100, 30.0):
        out += [d.envelope.data for d in got]
        for d in got:
            await backend.complete(d)
    return out


async def test_a_change_returns_the_old_value_and_queues_one_event_per_target(backend: Backend) -> None:
    changes = state_changes_of(backend)
    first = await changes.state_change("ns", "g", "k", '{"v":1}', notify=notify("a", "b"))
    second = await changes.state_change("ns", "g", "k", '{"v":2}', notify=notify("a", "b"))
    assert (first.applied, first.old_json) == (True, None)
    assert (second.applied, second.old_json) == (True, '{"v":1}')
    assert await backend.state_get("ns", "g", "k") == '{"v":2}'
    expected = [{"group_id": "g", "item_id": "k", "old_value": None, "new_value": {"v": 1}},
                {"group_id": "g", "item_id": "k", "old_value": {"v": 1}, "new_value": {"v": 2}}]
    assert await change_events(backend, "a") == expected
    assert await change_events(backend, "b") == expected


async def test_writing_the_same_value_or_deleting_an_absent_key_queues_nothing(backend: Backend) -> None:
    changes = state_changes_of(backend)
    await changes.state_change("ns", "g", "k", "1", notify=notify("a"))
    same = await changes.state_change("ns", "g", "k", "1", notify=notify("a"))
    absent = await changes.state_change("ns", "g", "nothing", None, notify=notify("a"))
    assert same.applied and same.old_json == "1" and not same.changed("1")
    assert absent.applied and absent.old_json is None
    assert len(await change_events(backend, "a")) == 1


async def test_a_delete_reports_the_old_value_and_removes_an_emptied_group(backend: Backend) -> None:
    changes = state_changes_of(backend)
    await changes.state_change("ns", "g", "k", '"x"')
    gone = await changes.state_change("ns", "g", "k", None, notify=notify("a"))
    assert gone.old_json == '"x"'
    assert await backend.state_get("ns", "g", "k") is None
    assert await backend.state_groups("ns") == []
    assert await change_events(backend, "a") == [{"group_id": "g", "item_id": "k", "old_value": "x",
                                                  "new_value": None}]


async def test_expected_values_make_it_a_compare_and_set(backend: Backend) -> None:
    changes = state_changes_of(backend)
    assert (await changes.state_change("ns", "g", "k", "1", expected=None)).applied
    refused = await changes.state_change("ns", "g", "k", "2", expected=None, notify=notify("a"))
    assert (refused.applied, refused.old_json) == (False, "1")
    assert not (await changes.state_change("ns", "g", "k", "2", expected="7", notify=notify("a"))).applied
    assert (await changes.state_change("ns", "g", "k", "2", expected="1", notify=notify("a"))).applied
    assert (await changes.state_change("ns", "g", "k", "3", expected=ANY)).applied
    assert await backend.state_get("ns", "g", "k") == "3"
    assert [e["new_value"] for e in await change_events(backend, "a")] == [2]


async def test_of_many_concurrent_increments_none_is_lost_and_each_is_one_event(backend: Backend) -> None:
    changes = state_changes_of(backend)

    async def increment() -> None:
        while True:
            raw = await backend.state_get("ns", "g", "n")
            new = str(int(raw or "0") + 1)
            if (await changes.state_change("ns", "g", "n", new, expected=raw, notify=notify("a"))).applied:
                return

    await asyncio.gather(*(increment() for _ in range(20)))
    events = await change_events(backend, "a")
    assert await backend.state_get("ns", "g", "n") == "20"
    assert sorted(int(str(e["new_value"])) for e in events) == list(range(1, 21))
    assert all(e["old_value"] == (None if e["new_value"] == 1 else int(str(e["new_value"])) - 1) for e in events)


async def test_change_events_keep_the_envelope_and_text_of_odd_names(backend: Backend) -> None:
    changes = state_changes_of(backend)
    group, key = 'g:"1"/é', "k\n\\"
    await changes.state_change("ns", group, key, json.dumps({"s": "a\"b/ü"}), notify=notify("a"))
    d = await claim_one(backend, "a")
    assert d.envelope.topic == "state:ns" and d.envelope.source == "test"
    assert d.envelope.data == {"group_id": group, "item_id": key, "old_value": None, "new_value": {"s": "a\"b/ü"}}


async def test_the_default_built_on_compare_and_set_keeps_the_same_contract(backend: Backend) -> None:
    changes = CasStateChanges(backend)
    assert (await changes.state_change("ns", "g", "k", "1", notify=notify("a"))).old_json is None
    assert not (await changes.state_change("ns", "g", "k", "2", expected=None)).applied
    assert (await changes.state_change("ns", "g", "k", "1", notify=notify("a"))).applied
    assert [e["new_value"] for e in await change_events(backend, "a")] == [1]
