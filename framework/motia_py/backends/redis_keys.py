"""Every Redis key the redis backend touches, built in this one place under the configured prefix.

Names taken from users (step names, state namespaces and groups, FIFO message groups, lease keys) are
escaped so that two different names never map to one key (``ns="a:b", group="c"`` versus
``ns="a", group="b:c"``) and so that a brace in a step name cannot become a Redis Cluster hash tag.
Only the prefix is used verbatim: a prefix such as ``{motia}`` puts every key in one hash slot.

Layout (``p`` is the prefix, ``<x>`` an escaped name)::

    p:steps                  SET    every step that was ever published to or claimed from
    p:seq                    STRING counter that orders FIFO events across groups
    p:q:<step>               STREAM the step's standard deliveries; consumer group named after the step;
                                    fields id, env, attempts, first (delivered at), due (when it fell due)
    p:inflight:<step>        HASH   delivery id -> "stream entry id|attempt|first delivered at"
    p:lease:<step>           ZSET   delivery id, scored by lease expiry
    p:owner:<step>           HASH   delivery id -> the worker (host:pid) holding its lease (standard or FIFO)
    p:delayed:<step>         ZSET   "id|attempts|first|envelope", scored by due time
    p:fifo:<step>:<group>    LIST   "seq|due|attempts|first|id|envelope", oldest first; the head is the
                                    only one that may be out
    p:fifo-ready:<step>      ZSET   groups whose head is due and free, scored by the head's seq
    p:fifo-wait:<step>       ZSET   groups whose head is free but not due yet, scored by its due time
    p:fifo-lease:<step>      ZSET   groups whose head is leased, scored by lease expiry
    p:wake:<step>            STREAM (length 1) bumped when a FIFO or delayed change may wake a waiter
    p:flow:<step>            STRING set while the step's ready deliveries go through the flow path: it has
                                    prioritised or keyed deliveries, or deliveries in the flow queue
    p:fq:<step>              ZSET   flow queue: ready partitions ("rate key|concurrency key" of a tag), scored
                                    by their best delivery
    p:fw:<step>              ZSET   partitions held back by a keyed rate limit, scored by when it opens
    p:fp:<step>:<partition>  ZSET   a partition's ready deliveries (ids), scored by -priority * 1e12 + seq
    p:fd:<step>              HASH   flow queue: delivery id -> "attempts|first|due|envelope"
    p:rate:<step>:<bucket>   ZSET   starts in a rate window ("id/attempt" by time; '' = the step's one window)
    p:held:<step>            HASH   delivery id -> "concurrency key|FIFO group" of deliveries leased under a
                                    concurrency key limit (entries of ended leases are dropped by claims)
    p:dlq                    HASH   dead letter id -> JSON record
    p:dlq:index              ZSET   dead letter id, scored by failure time
    p:state:<ns>:<group>     HASH   state key -> JSON text
    p:state-groups:<ns>      SET    the non-empty groups of a namespace
    p:lock:<key>             STRING "owner|expiry", with a real TTL as well
    p:meta                   HASH   framework metadata
    p:traces                 ZSET   trace id, scored by its latest run's start
    p:trace:<trace id>       LIST   the trace's run records (JSON), oldest first
    p:h:<event id>           HASH   an event's handle (see :mod:`.redis_handles`): ``@`` published at, ``i``
                                    [topic, trace id, emitted at], ``s:<step>`` "q|uid|delay|kind" while the
                                    delivery lives, else its finished record (JSON); ``e:<step>`` the last
                                    error, ``p:<step>`` the latest progress, ``c`` cancel requested at, ``x``
                                    cancelled deliveries still in a queue
    p:handles                ZSET   event ids with a finished delivery, scored by the latest finish
    p:cancels                ZSET   cancelled event ids (claims flag their deliveries), scored by cancel time
    p:key:<topic>:<key>      STRING "event id|expires at" of an idempotency key (with a real TTL as well)
    p:pubsub:<channel>       (pub/sub channel, not a key) messages of one PubSubStore channel
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote

from msgspec import Struct

CONSUMER: Final = "workers"
"""The one consumer name every process uses inside a step's consumer group.

Leases are tracked in ``p:lease:<step>`` (by the injected clock or Redis's own time), not by consumer
ownership, so per-process consumer names would only pile up in the group after each crash. The worker
that holds a lease is recorded in ``p:owner:<step>`` instead (and reported when its lease expired).
"""

_ESCAPES: Final = str.maketrans({"%": "%25", ":": "%3A", "{": "%7B", "}": "%7D"})


def escape(name: str) -> str:
    """``name`` with ``%``, ``:`` and braces percent-encoded, so it is one unambiguous key segment."""
    return name.translate(_ESCAPES)


class StepKeys(Struct, frozen=True):
    """The keys of one step's queue (see the module docstring for what each holds)."""

    step: str
    stream: str
    inflight: str
    lease: str
    delayed: str
    fifo_prefix: str
    fifo_ready: str
    fifo_wait: str
    fifo_lease: str
    wake: str
    owner: str

    def fifo_list(self, group: str) -> str:
        """The list of one FIFO message group (``""`` for events without a group id)."""
        return self.fifo_prefix + escape(group)


class Keys:
    """Key builder for one prefix; :meth:`step` results are cached."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.steps: Final = f"{prefix}:steps"
        self.seq: Final = f"{prefix}:seq"
        self.dlq: Final = f"{prefix}:dlq"
        self.dlq_index: Final = f"{prefix}:dlq:index"
        self.meta: Final = f"{prefix}:meta"
        self.traces: Final = f"{prefix}:traces"
        self.handles: Final = f"{prefix}:handles"
        self.cancels: Final = f"{prefix}:cancels"
        self._steps: dict[str, StepKeys] = {}

    def step(self, step: str) -> StepKeys:
        """The queue keys of ``step``."""
        keys = self._steps.get(step)
        if keys is None:
            p, s = self.prefix, escape(step)
            keys = self._steps[step] = StepKeys(
                step=step, stream=f"{p}:q:{s}", inflight=f"{p}:inflight:{s}", lease=f"{p}:lease:{s}",
                delayed=f"{p}:delayed:{s}", fifo_prefix=f"{p}:fifo:{s}:", fifo_ready=f"{p}:fifo-ready:{s}",
                fifo_wait=f"{p}:fifo-wait:{s}", fifo_lease=f"{p}:fifo-lease:{s}", wake=f"{p}:wake:{s}",
                owner=f"{p}:owner:{s}")
        return keys

    def state(self, namespace: str, group: str) -> str:
        """The hash of one state group."""
        return f"{self.prefix}:state:{escape(namespace)}:{escape(group)}"

    def state_groups(self, namespace: str) -> str:
        """The set of non-empty groups of a namespace."""
        return f"{self.prefix}:state-groups:{escape(namespace)}"

    def lock(self, key: str) -> str:
        """The lease (cron tick, overlap lock) named ``key``."""
        return f"{self.prefix}:lock:{escape(key)}"

    def pubsub(self, channel: str) -> str:
        """The Redis pub/sub channel of a :class:`~.stores.PubSubStore` channel."""
        return f"{self.prefix}:pubsub:{escape(channel)}"

    def pubsub_channel(self, name: str) -> str | None:
        """The store channel of a Redis pub/sub channel built by :meth:`pubsub` (None for others)."""
        head = f"{self.prefix}:pubsub:"
        return unquote(name[len(head):]) if name.startswith(head) else None

    def pubsub_pattern(self) -> str:
        """The PSUBSCRIBE pattern that matches every channel of :meth:`pubsub` (glob characters of the
        prefix escaped)."""
        return "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix) + ":pubsub:*"

    def trace(self, trace_id: str) -> str:
        """The run records of one trace."""
        return f"{self.prefix}:trace:{escape(trace_id)}"

    def handle(self, event_id: str) -> str:
        """The handle of one event."""
        return f"{self.prefix}:h:{escape(event_id)}"

    def idempotency(self, topic: str, key: str) -> str:
        """The idempotency key ``key`` of ``topic``."""
        return f"{self.prefix}:key:{escape(topic)}:{escape(key)}"

class FlowKeys(Struct, frozen=True):
    """The keys of one step's flow path (priorities and flow control; see the module docstring)."""

    flag: str
    ready: str
    waiting: str
    part_prefix: str
    data: str
    rate_prefix: str
    held: str


def flow_keys(prefix: str, step: str) -> FlowKeys:
    """The flow-path keys of ``step`` under ``prefix``."""
    p, s = prefix, escape(step)
    return FlowKeys(flag=f"{p}:flow:{s}", ready=f"{p}:fq:{s}", waiting=f"{p}:fw:{s}", part_prefix=f"{p}:fp:{s}:",
                    data=f"{p}:fd:{s}", rate_prefix=f"{p}:rate:{s}:", held=f"{p}:held:{s}")
