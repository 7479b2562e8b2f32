"""Many events from outside in one call (``Client.emit_many``): the shapes an item may take, and their
fan-out into one backend ``publish`` (one transaction on SQLite, one script on Redis: all or none).

An item is ``(topic, data)`` or a mapping in the shape ``ctx.emit`` takes: ``{"topic": t, "data": d,
"messageGroupId"?: g, "delay"?: seconds}`` (``message_group_id`` is accepted too). Items keep their
order: the events of one message group are delivered in the order given (FIFO steps), and a standard
step receives them in that order too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from .backends.base import Outgoing, new_id
from .context import encode_payload
from .errors import InvalidEmitError
from .publisher import Publisher

EmitItem: TypeAlias = tuple[str, Any] | Mapping[str, Any]
"""``(topic, data)`` or ``{"topic", "data", "messageGroupId"?, "delay"?}``."""

_KEYS = frozenset({"topic", "data", "messageGroupId", "message_group_id", "delay"})


def parse_item(item: EmitItem) -> tuple[str, Any, str | None, float]:
    """(topic, data, message group id, delay in seconds) of one item.

    Raises:
        InvalidEmitError: an unknown key, no topic, or a delay that is not a number of seconds >= 0.
    """
    if type(item) is tuple and len(item) == 2 and type(item[0]) is str and item[0]:
        return item[0], item[1], None, 0.0  # the common shape, checked first
    if isinstance(item, Mapping):
        unknown = set(item) - _KEYS
        if unknown:
            raise InvalidEmitError(f"unknown emit key(s) {sorted(unknown)}; use topic, data, messageGroupId, delay")
        topic, data = item.get("topic"), item.get("data")
        group = item.get("messageGroupId", item.get("message_group_id"))
        delay = item.get("delay")
    elif isinstance(item, tuple) and len(item) == 2:
        (topic, data), group, delay = item, None, None
    else:
        raise InvalidEmitError(f"an item to emit is (topic, data) or a dict with a topic, not {type(item).__name__}")
    if not isinstance(topic, str) or not topic:
        raise InvalidEmitError("an item to emit needs a topic")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0):
        raise InvalidEmitError(f"emit delay must be a number of seconds >= 0, got {delay!r}")
    return topic, data, None if group is None else str(group), float(delay or 0.0)


async def emit_items(publisher: Publisher, items: Iterable[EmitItem]) -> list[str]:
    """Publish every item in one backend call; return their event ids (each also its trace's id), in order.

    Every item is checked before anything is published: nothing is published when one fails.

    Raises:
        InvalidEmitError: an item has a bad shape.
        UnknownTopicError: nothing would ever handle an item's topic.
        EmitSchemaError, PayloadTooLargeError: an item's data is not JSON or too large.
        BackendError: the backend failed (nothing was published).
    """
    checked: set[str] = set()
    limit = publisher.max_payload_bytes
    spans = publisher.spans if publisher.spans.enabled else None  # without OpenTelemetry: no span per item
    outgoing = publisher.outgoing
    batch: list[Outgoing] = []
    ids: list[str] = []
    for item in items:
        topic, data, group, delay_s = parse_item(item)
        if topic not in checked:
            publisher.check_external_topic(topic)
            checked.add(topic)
        text = encode_payload(data, limit)
        if spans is None:  # the event starts a trace, and its id is the trace's id
            tid = new_id()
            out = outgoing(topic, text, tid, group, delay_s, None, None, event_id=tid)
        else:
            fresh = not spans.in_span()
            with spans.span(f"publish {topic}", "producer",
                            attributes={"messaging.destination.name": topic}) as (tid, tp, _):
                out = outgoing(topic, text, tid, group, delay_s, None, tp, event_id=tid if fresh else None)
        batch.append(out)
        ids.append(out.envelope.id)
    if batch:
        await publisher.backend.publish(batch)
    return ids
