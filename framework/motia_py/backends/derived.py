"""Lease and trace stores built on any :class:`~.stores.StateStore`, and a multi-step wait built on any
:class:`~.stores.QueueStore`'s per-step ``wait``, for backends that implement only the queue and state
stores.

Everything is kept in one reserved state namespace, :data:`RESERVED_NAMESPACE`, in four groups:

- ``leases``: one key per lease, ``{"owner": ..., "expires_at": ...}`` (expiry by the injected clock).
  A lease is taken and refreshed with ``state_cas`` on the value read, so of two racing owners one wins;
  an expired lease stays stored until it is taken again or released (one record per lease key).
- ``meta``: the metadata records, one key each; ``meta_cas`` is ``state_cas``.
- ``traces``: one key per trace id, its activity (the latest run start) as JSON.
- ``trace-runs``: one key per trace id, the JSON list of its run records' texts, in the order added.

Every read-modify-write is a ``state_cas`` loop, so the stores are as safe across processes as the
state store's compare-and-set. Traces write their activity before their runs and prune runs before
activity, so a crash between the two writes leaves at worst a listed trace without runs, which the
next prune removes, never runs that no prune can find.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final

from ..errors import BackendError
from ..types import Clock
from .records import TraceRun
from .stores import QueueStore, StateStore

RESERVED_NAMESPACE: Final = "__motia_py__"
"""The state namespace of the records of the derived stores (no flow may use it)."""

_LEASES: Final = "leases"
_META: Final = "meta"
_TRACES: Final = "traces"
_TRACE_RUNS: Final = "trace-runs"
_MAX_RACES: Final = 1000  # compare-and-set rounds lost in a row before giving up


async def wait_any_by_step(queue: QueueStore, steps: Collection[str], timeout_s: float) -> set[str]:
    """:meth:`~.stores.WaitStore.wait_any` for a queue store that has only the per-step ``wait``: one
    ``wait`` per step, raced; the steps whose wait returned first (on a timeout too, so each of them
    is looked at again, as before ``wait_any`` existed). It costs what ``wait`` costs, once per step.
    """
    if not steps:
        await asyncio.sleep(max(0.0, timeout_s))
        return set()
    waits = {asyncio.ensure_future(queue.wait(s, timeout_s)): s for s in steps}
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            if not w.done():
                w.cancel()
    for w in done:
        w.result()  # a BackendError reaches the caller
    return {waits[w] for w in done}


def _loads(raw: str, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BackendError(f"{what} in state namespace {RESERVED_NAMESPACE!r} is not JSON: {raw[:80]!r}") from exc


async def _update(state: StateStore, namespace: str, group: str, key: str,
                  change: Callable[[str | None], str | None]) -> None:
    """Store ``change(current)`` with ``state_cas``, reading again after each lost race."""
    for _ in range(_MAX_RACES):
        raw = await state.state_get(namespace, group, key)
        new = change(raw)
        if new == raw or await state.state_cas(namespace, group, key, raw, new):
            return
    raise BackendError(f"{namespace}/{group}/{key}: lost {_MAX_RACES} compare-and-set races in a row")


class StateLeaseStore:
    """A :class:`~.stores.LeaseStore` kept in a state store's reserved namespace.

    Args:
        state: where the records live (its ``state_cas`` must be atomic across processes).
        clock: epoch seconds for lease expiry; ``time.time`` when None.
        namespace: the reserved state namespace.
    """

    def __init__(self, state: StateStore, clock: Clock | None = None, namespace: str = RESERVED_NAMESPACE) -> None:
        self.state = state
        self.clock: Clock = clock or time.time
        self.namespace = namespace

    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take (or refresh, for the same owner) a lease; False while another owner holds it."""
        for _ in range(_MAX_RACES):
            raw = await self.state.state_get(self.namespace, _LEASES, key)
            now = self.clock()
            if raw is not None:
                held = _loads(raw, f"lease {key!r}")
                if held.get("owner") != owner and float(held.get("expires_at", 0.0)) > now:
                    return False
            new = json.dumps({"owner": owner, "expires_at": now + ttl_s}, separators=(",", ":"))
            if await self.state.state_cas(self.namespace, _LEASES, key, raw, new):
                return True
        raise BackendError(f"lease {key!r}: lost {_MAX_RACES} compare-and-set races in a row")

    async def release(self, key: str, owner: str) -> None:
        """Give up a lease held by ``owner`` (nothing happens when someone else holds it)."""
        def drop(raw: str | None) -> str | None:
            if raw is None or _loads(raw, f"lease {key!r}").get("owner") != owner:
                return raw
            return None

        await _update(self.state, self.namespace, _LEASES, key, drop)

    async def meta_get(self, key: str) -> str | None:
        """Metadata text, or None."""
        return await self.state.state_get(self.namespace, _META, key)

    async def meta_set(self, key: str, value: str) -> None:
        """Store metadata text."""
        await self.state.state_set(self.namespace, _META, key, value)

    async def meta_cas(self, key: str, expected: str | None, new: str) -> bool:
        """Store ``new`` only if the value is ``expected`` (None: absent)."""
        return await self.state.state_cas(self.namespace, _META, key, expected, new)


class StateTraceStore:
    """A :class:`~.stores.TraceStore` kept in a state store's reserved namespace.

    Listing the recent traces reads every trace's activity record (at most the retention count), which
    is fine for the workbench and the CLI, not for thousands of calls a second.

    Args:
        state: where the records live.
        namespace: the reserved state namespace.
    """

    def __init__(self, state: StateStore, namespace: str = RESERVED_NAMESPACE) -> None:
        self.state = state
        self.namespace = namespace

    async def traces_add(self, runs: Sequence[TraceRun]) -> None:
        """Append run records to their traces (their activity first, then the runs)."""
        by_trace: dict[str, tuple[float, list[str]]] = {}
        for trace_id, started_at, raw in runs:
            last, texts = by_trace.get(trace_id, (started_at, []))
            texts.append(raw)
            by_trace[trace_id] = (max(last, started_at), texts)
        for trace_id, (last, texts) in by_trace.items():
            await _update(self.state, self.namespace, _TRACES, trace_id, _later(last))
            await _update(self.state, self.namespace, _TRACE_RUNS, trace_id, _appended(texts))

    async def traces_get(self, trace_id: str) -> list[str]:
        """Every run record of one trace, in the order they were added."""
        raw = await self.state.state_get(self.namespace, _TRACE_RUNS, trace_id)
        return [] if raw is None else [str(r) for r in _loads(raw, f"trace {trace_id!r}")]

    async def _ranked(self) -> list[tuple[str, str]]:
        """(trace id, activity text), the most recently active first."""
        items = await self.state.state_items(self.namespace, _TRACES)
        return sorted(items.items(), key=lambda kv: float(_loads(kv[1], f"trace {kv[0]!r}")), reverse=True)

    async def traces_recent(self, limit: int) -> list[str]:
        """Trace ids, the most recently active first."""
        return [trace_id for trace_id, _ in (await self._ranked())[:max(0, limit)]]

    async def traces_prune(self, before: float, keep: int) -> int:
        """Drop traces last active before ``before`` and all but the ``keep`` most recent; return how many.

        A trace that becomes active again while it is pruned keeps its listing (its activity no longer
        matches the one read), with the runs added since.
        """
        dropped = 0
        for i, (trace_id, last) in enumerate(await self._ranked()):
            if i < keep and float(last) >= before:
                continue
            await self.state.state_delete(self.namespace, _TRACE_RUNS, trace_id)
            if await self.state.state_cas(self.namespace, _TRACES, trace_id, last, None):
                dropped += 1
        return dropped


def _later(started_at: float) -> Callable[[str | None], str | None]:
    def change(raw: str | None) -> str | None:
        if raw is not None and float(_loads(raw, "trace activity")) >= started_at:
            return raw
        return json.dumps(started_at)

    return change


def _appended(texts: list[str]) -> Callable[[str | None], str | None]:
    def change(raw: str | None) -> str | None:
        current = [] if raw is None else list(_loads(raw, "trace runs"))
        return json.dumps(current + texts, separators=(",", ":"))

    return change
