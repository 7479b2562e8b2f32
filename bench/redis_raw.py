"""Raw redis-py baselines measured in the same run as the Redis backend: pipelined XADD, XREADGROUP and
XACK throughput, and the round trips of a three-hop chain done by hand."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import redis.asyncio as aioredis

from .common import percentile

BATCH = 500


async def raw_redis_rates(url: str, events: int, chain_runs: int = 300) -> dict[str, Any]:
    """Events per second for publish + consume + ack with plain pipelines, and chain latency."""
    r = aioredis.from_url(url)
    prefix = f"motia-bench-raw-{uuid.uuid4().hex[:8]}"
    stream = f"{prefix}:s"
    try:
        await r.xgroup_create(stream, "g", id="0", mkstream=True)
        payload = {"env": '{"id":"x","topic":"noop","data":"{}","trace_id":"t","emitted_at":0}'}
        t0 = time.perf_counter()
        for i in range(0, events, BATCH):
            async with r.pipeline(transaction=False) as p:
                for _ in range(min(BATCH, events - i)):
                    p.xadd(stream, payload)
                await p.execute()
        t1 = time.perf_counter()
        done = 0
        while done < events:
            got = await r.xreadgroup("g", "c", {stream: ">"}, count=BATCH)
            ids = [eid for _, entries in got for eid, _ in entries]
            async with r.pipeline(transaction=False) as p:
                p.xack(stream, "g", *ids)
                p.xdel(stream, *ids)
                await p.execute()
            done += len(ids)
        t2 = time.perf_counter()
        hops = [f"{prefix}:h{i}" for i in range(3)]
        for h in hops:
            await r.xgroup_create(h, "g", id="0", mkstream=True)
        lat = []
        for _ in range(chain_runs):
            await asyncio.sleep(0.005)  # measured like the backend's chain: one event at a time
            start = time.perf_counter()
            await r.xadd(hops[0], payload)
            for i, h in enumerate(hops):
                got = await r.xreadgroup("g", "c", {h: ">"}, count=1)
                eid = got[0][1][0][0]
                async with r.pipeline(transaction=False) as p:
                    p.xack(h, "g", eid)
                    p.xdel(h, eid)
                    if i + 1 < len(hops):
                        p.xadd(hops[i + 1], payload)
                    await p.execute()
            lat.append(time.perf_counter() - start)
        return {"backend": "raw redis-py (pipelined)", "events": events, "enqueue_per_s": events / (t1 - t0),
                "events_per_s": events / (t2 - t0), "chain_p50_ms": percentile(lat, 50) * 1000,
                "chain_p99_ms": percentile(lat, 99) * 1000}
    finally:
        keys = [k async for k in r.scan_iter(match=f"{prefix}:*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()
