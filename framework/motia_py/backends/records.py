"""The records that cross the backend protocols: events, deliveries, dead letters, run records, counts.

Delivery is per (subscribing step, event): publishing an event with three subscribers makes three
deliveries, each with its own attempts, lease, retries and dead letter. Payloads are JSON text.
"""

from __future__ import annotations

import enum
import itertools
import json
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii
from typing import Any, Final, Literal, NamedTuple

from msgspec import Struct, field
from msgspec import json as msgspec_json

_encode = json.JSONEncoder(separators=(",", ":")).encode  # built once: json.dumps with options builds one per call
_string: Final[Callable[[str], str]] = encode_basestring_ascii  # a str as _encode writes it
_FINITE: Final = float("inf")


def _maybe(text: str | None) -> str:
    return "null" if text is None else _string(text)
_ID_PROCESS = uuid.uuid4().hex[:12]
_id_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def new_id() -> str:
    """A fresh id, 32 hex characters: the low 32 bits of a per-process counter (started at a random
    value), a random per-process part, then the counter's higher bits.

    The first 8 characters (the short form in log lines) differ from one id to the next, so the short
    ids of two traces tell them apart; within a process ids still grow in order, which keeps the
    database indexes on them cheap to insert into. Much cheaper than uuid4 on the hot path, and unique
    across processes with overwhelming probability.
    """
    n = next(_id_counter)
    return f"{n & 0xFFFFFFFF:08x}{_ID_PROCESS}{n >> 32:012x}"


class Envelope(Struct, frozen=True, rename={"data_json": "data"}):
    """One event as published: its topic, JSON payload and where it came from (as JSON text, see
    :meth:`to_json`, the payload text is the string ``data``)."""

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
        at = self.emitted_at
        if type(at) is float and -_FINITE < at < _FINITE:  # the text json.dumps writes, without a dict
            return (f'{{"id":{_string(self.id)},"topic":{_string(self.topic)},"data":{_string(self.data_json)},'
                    f'"trace_id":{_string(self.trace_id)},"emitted_at":{at!r},"group_id":{_maybe(self.group_id)},'
                    f'"source":{_maybe(self.source)},"traceparent":{_maybe(self.traceparent)}}}')
        return _encode(
            {"id": self.id, "topic": self.topic, "data": self.data_json, "trace_id": self.trace_id,
             "emitted_at": at, "group_id": self.group_id, "source": self.source,
             "traceparent": self.traceparent})

    @classmethod
    def from_json(cls, text: str | bytes) -> Envelope:
        """Inverse of :meth:`to_json` (keys it does not know are ignored)."""
        try:
            return _decode_envelope(text)
        except ValueError:  # msgspec refuses what json takes (a lone surrogate's escape in a payload)
            d = json.loads(text)
            return cls(id=d["id"], topic=d["topic"], data_json=d["data"], trace_id=d["trace_id"],
                       emitted_at=d["emitted_at"], group_id=d.get("group_id"), source=d.get("source"),
                       traceparent=d.get("traceparent"))


_decode_envelope: Final = msgspec_json.Decoder(Envelope).decode  # a tenth of json.loads and a call


class Target(Struct, frozen=True):
    """One subscriber of a published event, with the delay before it may be delivered.

    ``priority`` (higher is claimed first), ``rate_key`` and ``concurrency_key`` (the key values of the
    step's keyed limits, see :class:`FlowControl`) are computed by the publisher from the subscribing
    step's config and stored with the delivery; ``None`` when the step has no such keyed limit.
    """

    step: str
    delay_s: float = 0.0
    fifo: bool = False
    priority: int = 0
    rate_key: str | None = None
    concurrency_key: str | None = None


class Outgoing(Struct, frozen=True):
    """An event to publish and the steps it goes to (fan-out is decided by the publisher).

    With a ``key`` (an idempotency key), the event is published only if no event of the same topic
    took that key within the last ``key_ttl_s`` seconds (see :class:`~.stores.HandleStore`).
    """

    envelope: Envelope
    targets: tuple[Target, ...]
    key: str | None = None
    key_ttl_s: float = 0.0


class Delivery(Struct, frozen=True):
    """One event handed to one step for one attempt (``attempt`` is 1 on the first delivery)."""

    id: str
    step: str
    envelope: Envelope
    attempt: int
    first_delivered_at: float | None = None
    expired: bool = False  # the previous attempt's lease ran out: its worker probably died mid-run
    last_owner: str | None = None  # with ``expired``: the worker (``host:pid``) that held that lease
    priority: int = 0  # as published (see Target)
    rate_key: str | None = None
    concurrency_key: str | None = None
    limited: bool = False  # claimed under a concurrency limit: ending it frees a slot (waiters are woken)
    cancelled: bool = False  # its event was cancelled: settle it with ``cancel_settle``, never run it


class DeadLetter(Struct, frozen=True):
    """A delivery that failed for good."""

    id: str
    step: str
    envelope: Envelope
    attempts: int
    error: str
    traceback: str
    failed_at: float
    first_attempt_at: float | None = None
    priority: int = 0  # the delivery's, kept so that a replay keeps its place and its limits
    rate_key: str | None = None
    concurrency_key: str | None = None

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


def worker_identity() -> str:
    """This process as the owner of the leases it takes: ``host:pid`` (shown when a worker died)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class StepQueueStats(Struct, frozen=True):
    """One step's queue, as ``motia-py queue`` shows it."""

    ready: int = 0  # due, not leased
    delayed: int = 0  # not due yet (retry backoff, delay, scheduled)
    leased: int = 0  # running (or claimed) somewhere
    dead: int = 0  # in the dead-letter queue
    oldest_ready_at: float | None = None  # when the longest-waiting ready delivery became due
    throttled: dict[str, int] = field(default_factory=dict)  # of the ready ones: waiting for a limit, by limit


class QueueStats(Struct, frozen=True):
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


TxResult = Literal["ok", "lost", "conflict"]
"""How a transactional commit (:meth:`~.stores.TxStore.complete_tx`) ended: committed, the lease of the
attempt was lost, or a value the attempt read had changed. Only ``"ok"`` changed anything."""


class StateWrite(Struct, frozen=True):
    """One buffered state change of a transactional attempt, applied at commit.

    ``value_json`` None deletes the key; ``key`` None clears the whole group (``value_json`` is None then).
    ``notify`` (key writes only): the change event to queue with the write when it changes the value,
    its payload replaced by the change document, as :meth:`~.stores.StateChangeStore.state_change` does
    (state-triggered steps).
    """

    namespace: str
    group: str
    key: str | None
    value_json: str | None
    notify: Outgoing | None = None


class StateRead(Struct, frozen=True):
    """What a transactional attempt read, checked at commit (optimistic concurrency).

    With a ``key``: that key held ``value_json`` (None: absent). Without one (``key`` None): the whole
    group was read and held exactly ``items`` (key -> JSON text; empty: no key).
    """

    namespace: str
    group: str
    key: str | None
    value_json: str | None = None
    items: Mapping[str, str] | None = None


THROTTLE_REASONS: Final = ("globalConcurrency", "concurrencyKey", "rateLimit")
"""Why a ready delivery waits (the config key of the limit it waits for), in the order claims check them."""


class FlowControl(Struct, frozen=True):
    """A step's fleet-wide limits, enforced by the backend in the claim (see :meth:`QueueStore.claim`).

    Zero means no limit. ``rate_limit`` handler starts per ``rate_period_s`` seconds, per
    :attr:`Delivery.rate_key` value when ``rate_keyed`` (else for the whole step); ``global_concurrency``
    leased deliveries of the step; ``key_concurrency`` leased deliveries per
    :attr:`Delivery.concurrency_key` value (a delivery without one counts under the key ``""``).
    """

    rate_limit: int = 0
    rate_period_s: float = 1.0
    rate_keyed: bool = False
    global_concurrency: int = 0
    key_concurrency: int = 0

    @property
    def limits_concurrency(self) -> bool:
        """Whether a claim may hold back deliveries until a running one ends."""
        return self.global_concurrency > 0 or self.key_concurrency > 0


class HandleState(str, enum.Enum):
    """Where one delivery (an event at one subscribing step) stands, as ``motia-py status`` shows it."""

    QUEUED = "queued"  # due, waiting for a worker
    SCHEDULED = "scheduled"  # not due yet (``delay``, ``at``, ``delaySeconds``), no attempt made
    RUNNING = "running"  # leased by a worker (or its worker died and the lease has not run out yet)
    RETRYING = "retrying"  # an attempt failed; waiting for the next one
    SUCCEEDED = "succeeded"  # acknowledged: the handler returned
    DEAD = "dead"  # failed for good (in the dead-letter queue)
    CANCELLED = "cancelled"  # cancelled before it ran, or stopped while it ran

    @property
    def finished(self) -> bool:
        """Nothing will run this delivery again (unless a dead letter is replayed)."""
        return self in _FINISHED


_FINISHED = frozenset({HandleState.SUCCEEDED, HandleState.DEAD, HandleState.CANCELLED})


class StepHandle(Struct, frozen=True):
    """One subscriber's delivery of an event: its state and what is known about its attempts.

    ``result_json`` (the handler's return value) and ``progress_json`` (the latest ``ctx.progress``)
    are JSON text. Times are epoch seconds: ``due_at`` when it is or was due (live deliveries),
    ``started_at`` its first attempt, ``finished_at`` when it ended.
    """

    step: str
    state: HandleState
    delivery_id: str | None = None
    attempts: int = 0
    due_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result_json: str | None = None
    progress_json: str | None = None
    cancel_requested: bool = False


class EventHandle(Struct, frozen=True):
    """An event and the delivery to each subscribing step (sorted by step name)."""

    event_id: str
    topic: str
    trace_id: str
    emitted_at: float
    steps: tuple[StepHandle, ...]

    @property
    def finished(self) -> bool:
        """Every subscriber is done with it (succeeded, dead or cancelled)."""
        return all(s.state.finished for s in self.steps)


class CancelResult(Struct, frozen=True):
    """What ``handle_cancel`` did: the steps whose delivery was cancelled before it ran, the steps whose
    running handler was asked to stop, and the event afterwards. Neither: it had finished already."""

    handle: EventHandle
    cancelled: tuple[str, ...] = ()
    requested: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Something was cancelled or asked to stop."""
        return bool(self.cancelled or self.requested)


class ScheduledDelivery(Struct, frozen=True):
    """A delivery not due yet and never attempted (``motia-py scheduled list``)."""

    event_id: str
    step: str
    topic: str
    trace_id: str
    due_at: float
    emitted_at: float
    delivery_id: str
