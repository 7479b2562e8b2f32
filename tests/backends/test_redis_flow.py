"""Redis-only behaviour of the flow path (priorities and flow control): when a step takes it and leaves it,
a backlog larger than one claim's sweep, and tagged envelopes that never reach the handlers."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from motia_py.backends.base import Envelope, FlowControl, Outgoing, Target, new_id
from motia_py.backends.redis_keys import flow_keys
from motia_py.backends.redis_scripts_flow import SWEEP_MAX

from . import test_redis
from .test_redis import LEASE_S, OpenBackend, out

pytestmark = test_redis.pytestmark
url, prefix, open_backend = test_redis.url, test_redis.prefix, test_redis.open_backend  # the fixtures


def urgent(step: str, data: object, priority: int = 9, key: str | None = None) -> Outgoing:
    env = Envelope(id=new_id(), topic="t", data_json=json.dumps(data), trace_id=new_id(), emitted_at=1.0)
    return Outgoing(env, (Target(step, priority=priority, concurrency_key=key),))


async def test_a_plain_step_never_takes_the_flow_path(open_backend: OpenBackend, url: str, prefix: str) -> None:
    b = await open_backend()
    await b.publish([out("a", i) for i in range(3)])
    assert len(await b.claim("a", 10, LEASE_S)) == 3
    async with Redis.from_url(url) as r:
        assert [k async for k in r.scan_iter(match=f"{prefix}:f*")] == []  # no flow flag, no flow queue


async def test_the_flow_flag_goes_once_the_step_is_empty(open_backend: OpenBackend, url: str, prefix: str) -> None:
    b = await open_backend()
    await b.publish([out("a", "plain"), urgent("a", "urgent")])
    flag = flow_keys(prefix, "a").flag
    async with Redis.from_url(url) as r:
        assert await r.exists(flag)
        got = await b.claim("a", 10, LEASE_S)
        assert [d.envelope.data for d in got] == ["urgent", "plain"]
        for d in got:
            assert await b.complete(d)
        assert await b.claim("a", 10, LEASE_S) == []
        assert not await r.exists(flag)  # plain claims again from here
    await b.publish([out("a", "later")])
    assert [d.envelope.data for d in await b.claim("a", 10, LEASE_S)] == ["later"]


async def test_a_priority_event_behind_a_backlog_larger_than_a_sweep(open_backend: OpenBackend) -> None:
    b = await open_backend()
    backlog = SWEEP_MAX * 2 + 10
    await b.publish([out("a", i) for i in range(backlog)])
    await b.publish([urgent("a", "urgent")])
    claims = []
    for _ in range(5):  # a claim sweeps SWEEP_MAX entries into the flow queue at most, then hands out none
        claims.append(await b.claim("a", 5, LEASE_S))
        if claims[-1]:
            break
        await b.wait("a", 5.0)  # returns at once: there is more to sweep
    assert [d.envelope.data for d in claims[-1]] == ["urgent", 0, 1, 2, 3]
    assert len(claims) == 3
    assert (await b.stats()).ready == backlog - 4


async def test_a_delivery_never_sees_its_tag(open_backend: OpenBackend) -> None:
    b = await open_backend()
    item = urgent("a", {"x": 1}, priority=-3, key="k|:{}%")
    await b.publish([item])
    [d] = await b.claim("a", 10, LEASE_S, control=FlowControl(key_concurrency=1))
    assert d.envelope == item.envelope and d.envelope.data == {"x": 1}
    assert (d.priority, d.concurrency_key, d.limited) == (-3, "k|:{}%", True)
    await b.dead_letter(d, "boom", "")
    [dead] = await b.dlq_list()
    assert dead.envelope == item.envelope and (dead.priority, dead.concurrency_key) == (-3, "k|:{}%")
