"""The trace store's contract: every backend passes it, and so does the trace store derived from a state
store (see ``conftest.trace_store``)."""

from __future__ import annotations

import json

from motia_py.backends.base import TraceRun, TraceStore


def run(trace: str, started_at: float, n: int) -> TraceRun:
    return TraceRun(trace, started_at, json.dumps({"trace_id": trace, "started_at": started_at, "n": n}))


async def test_traces_are_stored_listed_and_pruned(trace_store: TraceStore) -> None:
    runs = [TraceRun("t1", 10.0, '{"n":1}'), TraceRun("t2", 20.0, '{"n":2}'), TraceRun("t1", 30.0, '{"n":3}'),
            TraceRun("t3", 25.0, '{"n":4}')]
    await trace_store.traces_add(runs)
    assert await trace_store.traces_get("t1") == ['{"n":1}', '{"n":3}']  # in the order they were added
    assert await trace_store.traces_get("nope") == []
    assert await trace_store.traces_recent(10) == ["t1", "t3", "t2"]  # by latest activity
    assert await trace_store.traces_recent(1) == ["t1"]
    assert await trace_store.traces_recent(0) == []
    assert await trace_store.traces_prune(before=21.0, keep=10) == 1  # t2 is too old
    assert await trace_store.traces_recent(10) == ["t1", "t3"]
    assert await trace_store.traces_get("t2") == []
    assert await trace_store.traces_prune(before=0.0, keep=1) == 1  # only the most recent stays
    assert await trace_store.traces_recent(10) == ["t1"] and await trace_store.traces_get("t3") == []


async def test_runs_added_in_several_calls_keep_their_order(trace_store: TraceStore) -> None:
    await trace_store.traces_add([run("t", 5, 1), run("u", 1, 1)])
    await trace_store.traces_add([run("t", 3, 2)])  # an older start, added later: order is by adding
    await trace_store.traces_add([run("t", 4, 3), run("u", 9, 2)])

    assert [json.loads(r)["n"] for r in await trace_store.traces_get("t")] == [1, 2, 3]
    assert await trace_store.traces_recent(10) == ["u", "t"]  # u's latest run (9) is newer than t's (5)


async def test_pruning_nothing_keeps_everything(trace_store: TraceStore) -> None:
    await trace_store.traces_add([run("t1", 10, 1), run("t2", 20, 1)])
    assert await trace_store.traces_prune(before=5.0, keep=10) == 0
    assert await trace_store.traces_recent(10) == ["t2", "t1"]
    assert len(await trace_store.traces_get("t1")) == 1


async def test_a_large_batch_keeps_every_run_in_order(trace_store: TraceStore) -> None:
    # one trace with more runs than one command takes at once in Redis's script, and many small ones
    big = [run("big:{1}", 100.0 + i, i) for i in range(2_500)]
    small = [run(f"s{i}", float(i), 0) for i in range(300)]
    await trace_store.traces_add([*big[:1_000], *small, *big[1_000:]])

    assert [json.loads(r)["n"] for r in await trace_store.traces_get("big:{1}")] == list(range(2_500))
    assert await trace_store.traces_get("s7") == [small[7].json]
    recent = await trace_store.traces_recent(400)
    assert recent[:3] == ["big:{1}", "s299", "s298"] and len(recent) == 301
