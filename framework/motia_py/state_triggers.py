"""State-triggered steps at runtime: which steps a write to (namespace, group) starts, and their conditions.

A write through ``ctx.state`` (or any :class:`~motia_py.state.State` built with a notifier) to a watched
group goes through the backend's :meth:`~motia_py.backends.stores.StateChangeStore.state_change`, which
queues the change event for every watching step **in the same atomic operation as the write** (one
SQLite transaction, one Redis script, one step of the memory backend's loop) and only when the value
really changed. The event travels on the internal topic ``state:<namespace>`` with the writer's trace id;
each watching step gets its own delivery, with the usual retries and dead letters. Its input is
``{"group_id", "item_id", "old_value", "new_value"}``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Final

from .backends.base import Envelope, Outgoing, Target, new_id
from .config import StepSpec, StepType
from .discovery import Project
from .types import Clock

STATE_TOPIC_PREFIX: Final = "state:"

Notify = Callable[[str, str], "Outgoing | None"]
"""(group, key) -> the change event to queue with a write, or None when no step watches the group."""


def state_topic(namespace: str) -> str:
    """The internal topic of a namespace's change events."""
    return STATE_TOPIC_PREFIX + namespace


def watched_namespace(project: Project, spec: StepSpec) -> str | None:
    """The namespace a state step watches (its ``watch.namespace``, else its own flow namespace)."""
    if spec.type is not StepType.STATE or spec.watch is None:
        return None
    return spec.watch.namespace or project.namespace_of(spec)


class StateTriggers:
    """The state steps of one project, by the namespace and group they watch.

    Args:
        project: the discovered project.
        clock: epoch seconds for the change events' ``emitted_at``.
    """

    def __init__(self, project: Project, clock: Clock) -> None:
        self.clock = clock
        self._table: dict[str, list[tuple[str | None, Target]]] = {}
        for s in project.steps:
            ns = watched_namespace(project, s)
            if ns is not None and s.watch is not None:
                target = Target(step=s.name, delay_s=s.queue.delay_s, fifo=s.queue.fifo)
                self._table.setdefault(ns, []).append((s.watch.group, target))

    def targets(self, namespace: str, group: str) -> tuple[Target, ...]:
        """The steps a change in (namespace, group) starts."""
        return tuple(t for g, t in self._table.get(namespace, ()) if g is None or g == group)

    def notifier(self, namespace: str, trace_id: str | None, source: str | None, traceparent: str | None = None
                 ) -> Notify | None:
        """What a :class:`~motia_py.state.State` of ``namespace`` hands the backend with each write; None
        when no step watches the namespace (writes then take the plain, fastest path).

        The events carry ``trace_id`` (a fresh one per write when None), ``source`` (the writing step) and
        ``traceparent``. A FIFO state step gets the changes of one item in order (message group
        ``<group>/<key>``).
        """
        if namespace not in self._table:
            return None
        topic = state_topic(namespace)

        def notify(group: str, key: str) -> Outgoing | None:
            targets = self.targets(namespace, group)
            if not targets:
                return None
            env = Envelope(id=new_id(), topic=topic, data_json="null", trace_id=trace_id or new_id(),
                           emitted_at=self.clock(), group_id=f"{group}/{key}", source=source, traceparent=traceparent)
            return Outgoing(envelope=env, targets=targets)

        return notify


async def admits(spec: StepSpec, data: Any, ctx: Any) -> bool:
    """Whether a state step's ``condition`` lets this change through (True without a condition).

    The condition runs on the event loop before the handler: keep it quick and about its input.
    """
    condition = spec.watch.condition if spec.watch is not None else None
    if condition is None:
        return True
    result = condition(data, ctx)
    if inspect.isawaitable(result):
        result = await result
    return bool(result)
