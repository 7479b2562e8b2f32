"""The raw Redis Streams floor on the users' path, as in ``../shared/bench-peers`` (``streams_app``):
a producer process XADDs; a worker process (``python -m bench.raw_streams URL PREFIX``) reads every
stream with one ``XREADGROUP`` (COUNT 100) and acknowledges a batch, forwarding the chain's hops, in
one non-transactional pipeline (no XDEL, as in the peer harness). No retries, no leases, no fan-out:
the floor motia-py is measured against.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import redis.asyncio as aioredis

from . import marks

GROUP = "g"


def streams(prefix: str) -> tuple[str, str, str, str]:
    """The no-op stream and the chain's three streams."""
    return f"{prefix}:s", f"{prefix}:a", f"{prefix}:b", f"{prefix}:c"


async def setup(r: aioredis.Redis, prefix: str) -> None:
    """Create the streams and their consumer group."""
    for s in streams(prefix):
        await r.xgroup_create(s, GROUP, id="0", mkstream=True)


async def produce(r: aioredis.Redis, prefix: str, n: int) -> None:
    """One awaited XADD per job (the shape of every peer's per-job enqueue)."""
    s = streams(prefix)[0]
    for _ in range(n):
        await r.xadd(s, {"d": b""})


async def produce_pipelined(r: aioredis.Redis, prefix: str, n: int, batch: int = 500) -> None:
    """XADDs in pipelines of ``batch``."""
    s = streams(prefix)[0]
    for i in range(0, n, batch):
        async with r.pipeline(transaction=False) as p:
            for _ in range(min(batch, n - i)):
                p.xadd(s, {"d": b""})
            await p.execute()


async def send_chain(r: aioredis.Redis, prefix: str, t0: float) -> None:
    """Start one chain."""
    await r.xadd(streams(prefix)[1], {"t0": repr(t0)})


async def worker(url: str, prefix: str) -> None:
    """Consume every stream until killed."""
    r = aioredis.Redis.from_url(url)
    s, a, b, c = streams(prefix)
    names = {s.encode(): "s", a.encode(): "a", b.encode(): "b", c.encode(): "c"}
    forward = {"a": b, "b": c}
    while True:
        resp = await r.xreadgroup(GROUP, "c1", {s: ">", a: ">", b: ">", c: ">"}, count=100, block=1000)
        if not resp:
            continue
        p = r.pipeline(transaction=False)
        for stream, msgs in resp:
            kind = names[stream]
            ids = []
            for mid, fields in msgs:
                ids.append(mid)
                if kind == "s":
                    marks.hit()
                elif kind in forward:
                    p.xadd(forward[kind], fields)
                else:
                    marks.chain_done(float(fields[b"t0"]))
            p.xack(stream, GROUP, *ids)
        await p.execute()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(worker(sys.argv[1], sys.argv[2]))
