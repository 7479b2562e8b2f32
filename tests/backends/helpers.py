"""Helpers shared by the backend contract suites: events to publish and deliveries to claim."""

from __future__ import annotations

import json
from typing import Any, cast

from motia_py.backends.base import Delivery, Envelope, Outgoing, QueueStore, Target, new_id

LEASE_S = 30.0


def envelope(topic: str = "t", data: object = None, group_id: str | None = None) -> Envelope:
    """A fresh event."""
    return Envelope(id=new_id(), topic=topic, data_json=json.dumps(data), trace_id=new_id(),
                    emitted_at=1.5, group_id=group_id, source="test")


def to(env: Envelope, *steps: str, delay_s: float = 0.0, fifo: bool = False) -> Outgoing:
    """``env`` addressed to ``steps``."""
    return Outgoing(env, tuple(Target(step=s, delay_s=delay_s, fifo=fifo) for s in steps))


async def publish(queue: QueueStore, step: str, n: int = 1, *, delay_s: float = 0.0, fifo: bool = False,
                  group_id: str | None = None) -> list[Envelope]:
    """Publish ``n`` events (data 0..n-1) to ``step``, one call each, in order."""
    envs = [envelope(data=i, group_id=group_id) for i in range(n)]
    for env in envs:
        await queue.publish([to(env, step, delay_s=delay_s, fifo=fifo)])
    return envs


async def claim_one(queue: QueueStore, step: str, lease_s: float = LEASE_S) -> Delivery:
    """Claim exactly one delivery of ``step``."""
    got = await queue.claim(step, 1, lease_s)
    assert len(got) == 1, got
    return got[0]


def data(deliveries: list[Delivery]) -> list[object]:
    """The payloads of ``deliveries``, in order."""
    return [d.envelope.data for d in deliveries]


def set_identity(queue: QueueStore, identity: str) -> None:
    """Make ``queue`` record ``identity`` as the owner of its next claims, as if another worker claimed
    (every built-in backend has an ``identity`` attribute, ``host:pid`` by default)."""
    assert hasattr(queue, "identity")
    cast(Any, queue).identity = identity


def seen(deliveries: list[Delivery]) -> list[tuple[object, int, bool, str | None]]:
    """(payload, attempt, expired, last owner) of each delivery."""
    return [(d.envelope.data, d.attempt, d.expired, d.last_owner) for d in deliveries]
