"""The redis backend's dead-letter queue: a hash of records and a sorted set of their failure times (see
:mod:`.redis_keys`); a replay puts the event back on its step's stream with fresh attempts."""

from __future__ import annotations

import json
from typing import cast

from .records import DeadLetter, Envelope, new_id
from .redis_flow import RedisFlow
from .redis_tags import untag


class RedisDeadLetters(RedisFlow):
    """The dead letters of :class:`.redis_queue.RedisQueue`."""

    # -- dead letters ---------------------------------------------------------------------------
    @staticmethod
    def _dead(dead_id: str, record: str, failed_at: float) -> DeadLetter:
        r = json.loads(record)
        env, priority, rate_key, conc_key = untag(r["env"])
        return DeadLetter(id=dead_id, step=r["step"], envelope=Envelope.from_json(env), attempts=r["attempts"],
                          error=r["error"], traceback=r["traceback"], failed_at=failed_at,
                          first_attempt_at=r["first"], priority=priority, rate_key=rate_key,
                          concurrency_key=conc_key)

    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, newest first."""
        if limit <= 0:
            return []
        c = self._c
        with self._translate():
            index = cast(list[tuple[str, float]],
                         await c.zrevrange(self.keys.dlq_index, 0, limit - 1, withscores=True))
            if not index:
                return []
            records = cast(list[str | None], await c.hmget(self.keys.dlq, [i for i, _ in index]))
        return [self._dead(i, r, at) for (i, at), r in zip(index, records, strict=True) if r is not None]

    async def dlq_get(self, dead_id: str) -> DeadLetter | None:
        """One dead letter by id."""
        c = self._c
        with self._translate():
            record = cast(str | None, await c.hget(self.keys.dlq, dead_id))
            failed_at = await c.zscore(self.keys.dlq_index, dead_id)
        if record is None or failed_at is None:
            return None
        return self._dead(dead_id, record, float(failed_at))

    async def dlq_replay(self, dead_id: str) -> bool:
        """Put a dead letter back on its step's stream with fresh attempts; False when unknown."""
        with self._translate():
            record = await self._c.hget(self.keys.dlq, dead_id)
        if record is None:
            return False
        r = json.loads(record)
        await self._ensure_steps([r["step"]])
        if r["env"].startswith("#"):  # prioritised or keyed: its step's claims must sort it in
            await self._mark_flow(r["step"])
        event_id = Envelope.from_json(untag(r["env"])[0]).id
        with self._translate():
            return bool(await self._s.queue.replay(
                keys=[self.keys.dlq, self.keys.dlq_index, self.keys.step(r["step"]).stream, self.keys.handle(event_id)],
                args=[self._now(), dead_id, new_id(), r["env"], r["step"]]))

    async def dlq_purge(self, dead_id: str) -> bool:
        """Delete a dead letter; False when unknown."""
        with self._translate():
            async with self._c.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.dlq, dead_id)
                pipe.zrem(self.keys.dlq_index, dead_id)
                removed, _ = await pipe.execute()
        return bool(removed)
