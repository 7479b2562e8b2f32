"""Make a full :class:`~.stores.Backend` from its parts.

A backend that implements only the queue and state stores (a :class:`~.stores.CoreBackend`) gets its
leases, metadata and traces from :mod:`.derived`, kept in its own state store (and, without a
``wait_any`` of its own, the one of :func:`.derived.wait_any_by_step`)::

    backend = compose(MyQueueAndState(url))            # leases and traces derived from its state
    backend = compose(core, traces=MyTraceStore(...))  # or bring your own store for a part

The registry does this on its own for a factory result that lacks the lease or the trace methods
(:func:`complete_backend`). A backend without transactional commits (:class:`~.stores.TxStore`) gets the
stand-in of :mod:`.derived_tx`, which is not atomic: :func:`atomic_transactions` tells them apart. The
built-in backends implement every store themselves and are used as they are, so the hot path pays
nothing for the seam.
"""

from __future__ import annotations

from collections.abc import Collection, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import UnknownBackendError
from ..types import Clock
from .derived import StateLeaseStore, StateTraceStore, wait_any_by_step
from .derived_tx import StateTxStore
from .records import (
    CancelResult,
    DeadLetter,
    Delivery,
    EventHandle,
    FlowControl,
    Outgoing,
    QueueStats,
    ScheduledDelivery,
    StateRead,
    StateWrite,
    StepQueueStats,
    TraceRun,
    TxResult,
)
from .stores import (
    Backend,
    CoreBackend,
    HandleStore,
    LeaseStore,
    QueueStore,
    StateStore,
    TraceStore,
    TxStore,
    WaitStore,
)

if TYPE_CHECKING:
    from .derived_handles import StateHandles

_C = Coroutine[Any, Any, Any]


def members(protocol: type) -> list[str]:
    """The public methods and attributes a store protocol asks for, in definition order."""
    names: dict[str, None] = {}
    for cls in reversed(protocol.__mro__):
        if cls in (object,) or cls.__module__ == "typing":
            continue
        names.update(dict.fromkeys(getattr(cls, "__annotations__", {})))
        names.update(dict.fromkeys(n for n, v in vars(cls).items() if callable(v)))
    return [n for n in names if not n.startswith("_")]


def missing(obj: object, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj`` lacks."""
    return [n for n in members(protocol) if not hasattr(obj, n)]


class ComposedBackend:
    """A :class:`~.stores.Backend` whose queue and state come from ``core`` and whose leases, traces and
    job handles and transactional commits come from the given stores. ``open`` and ``close`` open and
    close ``core`` only: stores passed in must share its connection or manage their own.

    Job handles derived from the state store (:class:`.derived_handles.StateHandles`) follow every queue
    call and commit, so then those go through them (``queue``); a core with its own handle store is used
    as it is.
    """

    def __init__(self, core: CoreBackend, leases: LeaseStore, traces: TraceStore, tx: TxStore | None = None,
                 handles: HandleStore | None = None, clock: Clock | None = None) -> None:
        self.core = core
        self.leases = leases
        self.traces = traces
        self.tx: TxStore = tx if tx is not None else StateTxStore(core)
        derived: StateHandles | None = None
        if handles is None:  # imported only for a core without a handle store of its own
            from .derived_handles import StateHandles

            derived = StateHandles(core, clock, tx=self.tx)
        self._derived = derived
        self.handles: HandleStore = derived if derived is not None else handles  # type: ignore[assignment]
        self.queue: QueueStore = derived if derived is not None else core
        self.commits: TxStore = derived if derived is not None else self.tx
        self.url = core.url

    def __repr__(self) -> str:
        return (f"ComposedBackend({self.core!r}, leases={self.leases!r}, traces={self.traces!r}, "
                f"tx={self.tx!r})")

    # The methods return the part's coroutine instead of awaiting it: no extra frame per call.
    def open(self) -> Coroutine[Any, Any, None]:
        """Open the core backend."""
        return self.core.open()

    def close(self) -> Coroutine[Any, Any, None]:
        """Close the core backend."""
        return self.core.close()

    # -- queue ----------------------------------------------------------------------------------
    def publish(self, items: Sequence[Outgoing]) -> Coroutine[Any, Any, None]:
        """See :meth:`.QueueStore.publish`."""
        return self.queue.publish(items)

    def claim(self, step: str, limit: int, lease_s: float, *, control: FlowControl | None = None
              ) -> Coroutine[Any, Any, list[Delivery]]:
        """See :meth:`.QueueStore.claim` (a core without flow control works for steps without limits)."""
        if control is None:
            return self.queue.claim(step, limit, lease_s)
        return self.queue.claim(step, limit, lease_s, control=control)

    def hand_back(self, deliveries: Sequence[Delivery]) -> Coroutine[Any, Any, None]:
        """See :meth:`.QueueStore.hand_back`."""
        return self.queue.hand_back(deliveries)

    def complete(self, delivery: Delivery, outgoing: Sequence[Outgoing] = ()) -> Coroutine[Any, Any, bool]:
        """See :meth:`.QueueStore.complete`."""
        return self.queue.complete(delivery, outgoing)

    def retry(self, delivery: Delivery, delay_s: float) -> Coroutine[Any, Any, None]:
        """See :meth:`.QueueStore.retry`."""
        return self.queue.retry(delivery, delay_s)

    def dead_letter(self, delivery: Delivery, error: str, traceback: str, attempts: int | None = None
                    ) -> Coroutine[Any, Any, None]:
        """See :meth:`.QueueStore.dead_letter`."""
        return self.queue.dead_letter(delivery, error, traceback, attempts)

    def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> Coroutine[Any, Any, None]:
        """See :meth:`.QueueStore.extend`."""
        return self.queue.extend(deliveries, lease_s)

    def wait(self, step: str, timeout_s: float, *, control: FlowControl | None = None
             ) -> Coroutine[Any, Any, None]:
        """See :meth:`.QueueStore.wait`."""
        if control is None:
            return self.queue.wait(step, timeout_s)
        return self.queue.wait(step, timeout_s, control=control)

    def wait_any(self, steps: Collection[str], timeout_s: float) -> Coroutine[Any, Any, set[str]]:
        """See :meth:`.WaitStore.wait_any` (the core's own, or one ``wait`` per step)."""
        if isinstance(self.core, WaitStore):
            return self.core.wait_any(steps, timeout_s)
        return wait_any_by_step(self.core, steps, timeout_s)

    def stats(self) -> Coroutine[Any, Any, QueueStats]:
        """See :meth:`.QueueStore.stats`."""
        return self.queue.stats()

    def step_stats(self, controls: Mapping[str, FlowControl] | None = None
                   ) -> Coroutine[Any, Any, dict[str, StepQueueStats]]:
        """See :meth:`.QueueStore.step_stats`."""
        if controls is None:
            return self.queue.step_stats()
        return self.queue.step_stats(controls)

    def dlq_list(self, limit: int = 100) -> Coroutine[Any, Any, list[DeadLetter]]:
        """See :meth:`.QueueStore.dlq_list`."""
        return self.queue.dlq_list(limit)

    def dlq_get(self, dead_id: str) -> Coroutine[Any, Any, DeadLetter | None]:
        """See :meth:`.QueueStore.dlq_get`."""
        return self.queue.dlq_get(dead_id)

    def dlq_replay(self, dead_id: str) -> Coroutine[Any, Any, bool]:
        """See :meth:`.QueueStore.dlq_replay`."""
        return self.queue.dlq_replay(dead_id)

    def dlq_purge(self, dead_id: str) -> Coroutine[Any, Any, bool]:
        """See :meth:`.QueueStore.dlq_purge`."""
        return self.queue.dlq_purge(dead_id)

    # -- state ----------------------------------------------------------------------------------
    def state_get(self, namespace: str, group: str, key: str) -> Coroutine[Any, Any, str | None]:
        """See :meth:`.StateStore.state_get`."""
        return self.core.state_get(namespace, group, key)

    def state_set(self, namespace: str, group: str, key: str, value_json: str) -> Coroutine[Any, Any, None]:
        """See :meth:`.StateStore.state_set`."""
        return self.core.state_set(namespace, group, key, value_json)

    def state_delete(self, namespace: str, group: str, key: str) -> Coroutine[Any, Any, bool]:
        """See :meth:`.StateStore.state_delete`."""
        return self.core.state_delete(namespace, group, key)

    def state_items(self, namespace: str, group: str) -> Coroutine[Any, Any, dict[str, str]]:
        """See :meth:`.StateStore.state_items`."""
        return self.core.state_items(namespace, group)

    def state_groups(self, namespace: str) -> Coroutine[Any, Any, list[str]]:
        """See :meth:`.StateStore.state_groups`."""
        return self.core.state_groups(namespace)

    def state_clear(self, namespace: str, group: str) -> Coroutine[Any, Any, None]:
        """See :meth:`.StateStore.state_clear`."""
        return self.core.state_clear(namespace, group)

    def state_cas(self, namespace: str, group: str, key: str, expected_json: str | None,
                  new_json: str | None) -> Coroutine[Any, Any, bool]:
        """See :meth:`.StateStore.state_cas`."""
        return self.core.state_cas(namespace, group, key, expected_json, new_json)

    # -- leases and metadata --------------------------------------------------------------------
    def acquire(self, key: str, owner: str, ttl_s: float) -> Coroutine[Any, Any, bool]:
        """See :meth:`.LeaseStore.acquire`."""
        return self.leases.acquire(key, owner, ttl_s)

    def release(self, key: str, owner: str) -> Coroutine[Any, Any, None]:
        """See :meth:`.LeaseStore.release`."""
        return self.leases.release(key, owner)

    def meta_get(self, key: str) -> Coroutine[Any, Any, str | None]:
        """See :meth:`.LeaseStore.meta_get`."""
        return self.leases.meta_get(key)

    def meta_set(self, key: str, value: str) -> Coroutine[Any, Any, None]:
        """See :meth:`.LeaseStore.meta_set`."""
        return self.leases.meta_set(key, value)

    def meta_cas(self, key: str, expected: str | None, new: str) -> Coroutine[Any, Any, bool]:
        """See :meth:`.LeaseStore.meta_cas`."""
        return self.leases.meta_cas(key, expected, new)

    # -- job handles ----------------------------------------------------------------------------
    def publish_deduped(self, items: Sequence[Outgoing]) -> Coroutine[Any, Any, list[str]]:
        """See :meth:`.HandleStore.publish_deduped`."""
        return self.handles.publish_deduped(items)

    def complete_with_result(self, delivery: Delivery, outgoing: Sequence[Outgoing], result_json: str | None
                             ) -> Coroutine[Any, Any, bool]:
        """See :meth:`.HandleStore.complete_with_result`."""
        return self.handles.complete_with_result(delivery, outgoing, result_json)

    def retry_with_error(self, delivery: Delivery, delay_s: float, error: str) -> Coroutine[Any, Any, None]:
        """See :meth:`.HandleStore.retry_with_error`."""
        return self.handles.retry_with_error(delivery, delay_s, error)

    def cancel_settle(self, delivery: Delivery) -> Coroutine[Any, Any, bool]:
        """See :meth:`.HandleStore.cancel_settle`."""
        return self.handles.cancel_settle(delivery)

    def handle_get(self, event_id: str) -> Coroutine[Any, Any, EventHandle | None]:
        """See :meth:`.HandleStore.handle_get`."""
        return self.handles.handle_get(event_id)

    def handle_find(self, prefix: str, limit: int) -> Coroutine[Any, Any, list[str]]:
        """See :meth:`.HandleStore.handle_find`."""
        return self.handles.handle_find(prefix, limit)

    def handle_progress(self, delivery: Delivery, progress_json: str) -> Coroutine[Any, Any, None]:
        """See :meth:`.HandleStore.handle_progress`."""
        return self.handles.handle_progress(delivery, progress_json)

    def handle_cancel(self, event_id: str) -> Coroutine[Any, Any, CancelResult | None]:
        """See :meth:`.HandleStore.handle_cancel`."""
        return self.handles.handle_cancel(event_id)

    def cancel_requests(self, deliveries: Sequence[Delivery]) -> Coroutine[Any, Any, set[str]]:
        """See :meth:`.HandleStore.cancel_requests`."""
        return self.handles.cancel_requests(deliveries)

    def scheduled_list(self, topic: str | None, limit: int) -> Coroutine[Any, Any, list[ScheduledDelivery]]:
        """See :meth:`.HandleStore.scheduled_list`."""
        return self.handles.scheduled_list(topic, limit)

    def handles_prune(self, before: float, keep: int) -> Coroutine[Any, Any, int]:
        """See :meth:`.HandleStore.handles_prune`."""
        return self.handles.handles_prune(before, keep)

    # -- traces ---------------------------------------------------------------------------------
    def traces_add(self, runs: Sequence[TraceRun]) -> Coroutine[Any, Any, None]:
        """See :meth:`.TraceStore.traces_add`."""
        return self.traces.traces_add(runs)

    def traces_get(self, trace_id: str) -> Coroutine[Any, Any, list[str]]:
        """See :meth:`.TraceStore.traces_get`."""
        return self.traces.traces_get(trace_id)

    def traces_recent(self, limit: int) -> Coroutine[Any, Any, list[str]]:
        """See :meth:`.TraceStore.traces_recent`."""
        return self.traces.traces_recent(limit)

    def traces_prune(self, before: float, keep: int) -> Coroutine[Any, Any, int]:
        """See :meth:`.TraceStore.traces_prune`."""
        return self.traces.traces_prune(before, keep)

    # -- transactional commits ------------------------------------------------------------------
    def complete_tx(self, delivery: Delivery | None, outgoing: Sequence[Outgoing], writes: Sequence[StateWrite],
                    reads: Sequence[StateRead]) -> Coroutine[Any, Any, TxResult]:
        """See :meth:`.TxStore.complete_tx`."""
        return self.commits.complete_tx(delivery, outgoing, writes, reads)

    def complete_tx_with_result(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                                writes: Sequence[StateWrite], reads: Sequence[StateRead], result_json: str | None
                                ) -> Coroutine[Any, Any, TxResult]:
        """See :meth:`.HandleStore.complete_tx_with_result` (a core with its own handle store but no
        transactional store commits through the stand-in, which keeps no result)."""
        if self._derived is not None:
            return self._derived.complete_tx_with_result(delivery, outgoing, writes, reads, result_json)
        return self.commits.complete_tx(delivery, outgoing, writes, reads)


def compose(core: CoreBackend, *, leases: LeaseStore | None = None, traces: TraceStore | None = None,
            clock: Clock | None = None, tx: TxStore | None = None, handles: HandleStore | None = None
            ) -> Backend:
    """A full backend from a queue-and-state backend and, optionally, its own lease, trace, transactional
    and handle stores.

    Args:
        core: the queue and state stores, with ``url``, ``open`` and ``close``.
        leases: the lease/metadata store; by default :class:`.derived.StateLeaseStore` on ``core``.
        traces: the trace store; by default :class:`.derived.StateTraceStore` on ``core``.
        clock: epoch seconds for the default lease and handle stores (``time.time`` when None).
        tx: the transactional store; by default the non-atomic :class:`.derived_tx.StateTxStore` on ``core``
            (``motia-py validate`` then reports transactional steps as unsupported).
        handles: the job-handle store (``core`` itself when it implements one); by default
            :class:`.derived_handles.StateHandles` around ``core``.
    """
    return ComposedBackend(core, leases if leases is not None else StateLeaseStore(core, clock),
                           traces if traces is not None else StateTraceStore(core), tx, handles, clock)


def atomic_transactions(backend: object) -> bool:
    """True when ``backend`` commits transactional attempts atomically and fenced (a
    :class:`~.stores.TxStore` of its own), False when it has only the stand-in of :mod:`.derived_tx`."""
    tx = backend.tx if isinstance(backend, ComposedBackend) else backend
    return isinstance(tx, TxStore) and not isinstance(tx, StateTxStore)


def complete_backend(obj: object, clock: Clock | None = None) -> Backend:
    """``obj`` itself when it implements every store; else ``obj`` completed with the derived lease
    store (when it lacks any lease or metadata method), trace store (when it lacks any trace method), the
    multi-step wait (when it lacks ``wait_any``), the non-atomic transactional stand-in (when it lacks
    ``complete_tx``) and job-handle store (when it lacks any handle method).

    A store is replaced whole, never method by method, so that e.g. ``meta_cas`` and ``meta_get`` always
    read the same records.

    Raises:
        UnknownBackendError: ``obj`` lacks a method of the queue or state store, or ``url``/``open``/``close``.
    """
    if isinstance(obj, Backend):
        return obj
    if not isinstance(obj, CoreBackend):
        lacking = missing(obj, CoreBackend)
        raise UnknownBackendError(
            f"{type(obj).__name__} is not a backend: it lacks {', '.join(lacking)} (a backend implements at "
            f"least the queue and state stores, {', '.join(members(QueueStore) + members(StateStore))}, "
            "with url, open and close)")
    leases = obj if isinstance(obj, LeaseStore) else None
    traces = obj if isinstance(obj, TraceStore) else None
    return compose(obj, leases=leases, traces=traces, clock=clock, tx=obj if isinstance(obj, TxStore) else None,
                   handles=obj if isinstance(obj, HandleStore) else None)
