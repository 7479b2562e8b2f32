"""The backend protocol every backend implements, and the records that cross it.

Delivery is per (subscribing step, event): publishing an event with three subscribers makes three
deliveries, each with its own attempts, lease, retries and dead letter. Payloads are JSON text.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

_ID_PREFIX = uuid.uuid4().hex[:12]
_id_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def new_id() -> str:
    """A fresh id, 32 hex characters: a random per-process prefix and a counter (much cheaper than
    uuid4 on the hot path, and unique across processes with overwhelming probability)."""
    return f"{_ID_PREFIX}{next(_id_counter):020x}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event as published: its topic, JSON payload and where it came from."""

    id: str
    topic: str
    data_json: str
    trace_id: str
    emitted_at: float
    group_id: str | None = None
    source: str | None = None
    traceparent: str | None = None  # W3C trace context of the span that published it (OpenTelemetry)

    @property
    def data(self) -> Any:
        """The payload, decoded."""
        return json.loads(self.data_json)

    def to_json(self) -> str:
        """The envelope as one JSON document (for backends that store it as text)."""
        return json.dumps(
            {"id": self.id, "topic": self.topic, "data": self.data_json, "trace_id": self.trace_id,
             "emitted_at": self.emitted_at, "group_id": self.group_id, "source": self.source,
             "traceparent": self.traceparent},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Envelope:
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        return cls(id=d["id"], topic=d["topic"], data_json=d["data"], trace_id=d["trace_id"],
                   emitted_at=d["emitted_at"], group_id=d.get("group_id"), source=d.get("source"),
                   traceparent=d.get("traceparent"))


@dataclass(frozen=True, slots=True)
class Target:
    """One subscriber of a published event, with the delay before it may be delivered."""

    step: str
    delay_s: float = 0.0
    fifo: bool = False


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An event to publish and the steps it goes to (fan-out is decided by the publisher)."""

    envelope: Envelope
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event handed to one step for one attempt (``attempt`` is 1 on the first delivery)."""

    id: str
    step: str
    envelope: Envelope
    attempt: int
    first_delivered_at: float | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery that failed for good."""

    id: str
    step: str
    envelope: Envelope
    attempts: int
    error: str
    traceback: str
    failed_at: float
    first_attempt_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as ``motia-py dlq list --json`` prints it."""
        return {
            "id": self.id,
            "step": self.step,
            "topic": self.envelope.topic,
            "data": self.envelope.data,
            "trace_id": self.envelope.trace_id,
            "attempts": self.attempts,
            "error": self.error,
            "traceback": self.traceback,
            "failed_at": self.failed_at,
            "first_attempt_at": self.first_attempt_at,
            "emitted_at": self.envelope.emitted_at,
        }


class TraceRun(NamedTuple):
    """One run record to store: its trace, when it started, and the record as JSON text."""

    trace_id: str
    started_at: float
    json: str


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts across every step's queue (``next_due_at``: earliest time a delayed delivery is due)."""

    ready: int = 0
    delayed: int = 0
    leased: int = 0
    dead: int = 0
    next_due_at: float | None = None
    per_step: dict[str, int] = field(default_factory=dict)

    @property
    def idle(self) -> bool:
        """Nothing waiting, delayed or running."""
        return self.ready == 0 and self.delayed == 0 and self.leased == 0


@runtime_checkable
class Backend(Protocol):
    """Queue, dead letters, state and leases behind one interface.

    Every method may raise :class:`motia_py.errors.BackendError`; none lets a driver exception through.
    """

    url: str

    async def open(self) -> None:
        """Connect / create files and schema. Raises BackendUnavailableError."""

    async def close(self) -> None:
        """Release connections; queued deliveries stay queued."""

    # -- queue ----------------------------------------------------------------------------------
    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Enqueue one delivery per target of every item, atomically."""

    async def claim(self, step: str, limit: int, lease_s: float) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries of ``step`` for ``lease_s`` seconds, oldest first.

        A delivery whose lease expired is claimable again with ``attempt`` + 1. For FIFO targets only
        the oldest undelivered event of a message group is claimable, and only while no other event of
        the group is leased.
        """

    async def complete(self, delivery: Delivery, outgoing: Sequence[Outgoing] = ()) -> bool:
        """Acknowledge a delivery and publish the handler's emits in the same transaction (outbox).

        Returns False when the lease was lost (another worker owns the delivery now); nothing is
        published then.
        """

    async def retry(self, delivery: Delivery, delay_s: float, error: str = "") -> None:
        """Release a failed delivery so it is delivered again after ``delay_s``."""

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str) -> None:
        """Move a delivery to the dead-letter queue."""

    async def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> None:
        """Push the leases of running deliveries ``lease_s`` seconds into the future (heartbeat)."""

    async def wait(self, step: str, timeout_s: float) -> None:
        """Return when ``step`` may have a due delivery, or after ``timeout_s``."""

    async def stats(self) -> QueueStats:
        """Counts of ready, delayed, leased and dead deliveries."""

    # -- dead letters ---------------------------------------------------------------------------
    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, newest first."""

    async def dlq_get(self, dead_id: str) -> DeadLetter | None:
        """One dead letter by id."""

    async def dlq_replay(self, dead_id: str) -> bool:
        """Put a dead letter back on its step's queue with fresh attempts; False when unknown."""

    async def dlq_purge(self, dead_id: str) -> bool:
        """Delete a dead letter; False when unknown."""

    # -- state (values are JSON text) ----------------------------------------------------------
    async def state_get(self, namespace: str, group: str, key: str) -> str | None:
        """The JSON text stored at (namespace, group, key), or None."""

    async def state_set(self, namespace: str, group: str, key: str, value_json: str) -> None:
        """Store JSON text."""

    async def state_delete(self, namespace: str, group: str, key: str) -> bool:
        """Delete a key; False when absent."""

    async def state_items(self, namespace: str, group: str) -> dict[str, str]:
        """Every key of a group with its JSON text."""

    async def state_groups(self, namespace: str) -> list[str]:
        """The groups of a namespace that hold at least one key."""

    async def state_clear(self, namespace: str, group: str) -> None:
        """Delete every key of a group."""

    async def state_cas(
        self, namespace: str, group: str, key: str, expected_json: str | None, new_json: str | None
    ) -> bool:
        """Compare-and-set: store ``new_json`` (delete when None) only if the current value is
        ``expected_json`` (None = absent). True when it was stored."""

    # -- leases and metadata (cron ticks, overlap locks) ----------------------------------------
    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take (or refresh, for the same owner) a lease on ``key``; False when another owner holds it."""

    async def release(self, key: str, owner: str) -> None:
        """Give up a lease held by ``owner``."""

    async def meta_get(self, key: str) -> str | None:
        """Small framework metadata (e.g. a cron step's last run), as text."""

    async def meta_set(self, key: str, value: str) -> None:
        """Store framework metadata."""

    # -- traces (run records as JSON text) --------------------------------------------------------
    async def traces_add(self, runs: Sequence[TraceRun]) -> None:
        """Store run records."""

    async def traces_get(self, trace_id: str) -> list[str]:
        """Every run record of one trace, in the order they were added."""

    async def traces_recent(self, limit: int) -> list[str]:
        """Trace ids, the most recently active first."""

    async def traces_prune(self, before: float, keep: int) -> int:
        """Drop traces last active before ``before`` and all but the ``keep`` most recent; return how many."""
