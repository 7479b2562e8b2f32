"""A job-handle store built on a backend's queue and state stores, for backends that lack their own.

:class:`StateHandles` wraps the queue store: each queue call goes to the backend, and the handle records
follow it in the reserved state namespace (:data:`.derived.RESERVED_NAMESPACE`), in three groups:

- ``handles``: one key per event, ``{"i": [topic, trace id, emitted at], "s": {step: record}, "p":
  {step: progress}, "c": cancel requested at, "x": cancelled deliveries still queued, "last": latest
  finish}``; a step's record is ``{"live": 1, "due", "a", "run", "st", "d", "e"}`` while its delivery
  lives, else its finished record.
- ``cancels``: one key per cancelled event; claims flag the deliveries of those events.
- ``keys``: one key per (topic, key), ``{"e": event id, "x": expires at}``, taken by compare-and-set.

What it cannot give: atomicity with the queue. A key is taken just before its event is published (a
crash between the two leaves the key taken and no event), a record follows its queue call (a crash
between the two leaves the status behind the queue until the delivery's next change), and a claim,
an acknowledgement and a failure each cost a state write. A backend that wants exact, cheap handles
implements :class:`~.stores.HandleStore` itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from msgspec.structs import replace

from ..types import Clock
from .derived import RESERVED_NAMESPACE, _update
from .derived_tx import StateTxStore
from .handle_records import event_handle, live_state
from .records import (
    CancelResult,
    DeadLetter,
    Delivery,
    EventHandle,
    FlowControl,
    HandleState,
    Outgoing,
    QueueStats,
    ScheduledDelivery,
    StateRead,
    StateWrite,
    StepHandle,
    StepQueueStats,
    TxResult,
)
from .stores import CoreBackend, TxStore

_HANDLES: Final = "handles"
_CANCELS: Final = "cancels"
_KEYS: Final = "keys"
Record = dict[str, Any]


def _finished(state: HandleState, d: Delivery | None, now: float, *, attempts: int | None = None,
              error: str | None = None, result: str | None = None) -> Record:
    return {"s": state.value, "a": attempts if attempts is not None else (d.attempt if d else 0),
            "d": d.id if d else None, "st": d.first_delivered_at if d else None, "f": now, "e": error, "r": result}


def _running(d: Delivery) -> Callable[[Record], Record | None]:
    """A step's record once ``d`` was claimed (a finished record stays)."""
    def change(r: Record) -> Record | None:
        if "s" in r:
            return None
        return {**r, "live": 1, "run": True, "a": d.attempt, "d": d.id, "st": d.first_delivered_at}
    return change


def _waiting(**changes: Any) -> Callable[[Record], Record | None]:
    """A live step's record once its delivery waits again (with ``changes``)."""
    def change(r: Record) -> Record | None:
        return {**r, "run": False, **changes} if r.get("live") else None
    return change


def _unless_held_by(event_id: str) -> Callable[[str | None], str | None]:
    """A key's record dropped when ``event_id`` holds it."""
    def change(raw: str | None) -> str | None:
        return None if raw and json.loads(raw)["e"] == event_id else raw
    return change


class StateHandles:
    """The queue store of ``core`` with job handles kept in its state store (see the module docstring).

    Args:
        core: the backend's queue and state stores.
        clock: epoch seconds (``time.time`` when None).
        namespace: the reserved state namespace.
        tx: the transactional store whose commits it follows (by default the stand-in of
            :mod:`.derived_tx` on ``core``).
    """

    def __init__(self, core: CoreBackend, clock: Clock | None = None, namespace: str = RESERVED_NAMESPACE,
                 tx: TxStore | None = None) -> None:
        self.core = core
        self.clock: Clock = clock or time.time
        self.namespace = namespace
        self.tx: TxStore = tx if tx is not None else StateTxStore(core)

    # -- records ------------------------------------------------------------------------------------
    async def _change(self, event_id: str, fn: Callable[[Record], None], new: bool = False) -> None:
        def change(raw: str | None) -> str | None:
            rec: Record = json.loads(raw) if raw else {"s": {}, "p": {}}
            fn(rec)
            return json.dumps(rec, separators=(",", ":"))

        # a new event has no record yet: one compare-and-set, no read first (unless that guess loses)
        if new and await self.core.state_cas(self.namespace, _HANDLES, event_id, None, change(None)):
            return
        await _update(self.core, self.namespace, _HANDLES, event_id, change)

    async def _record(self, event_id: str) -> Record | None:
        raw = await self.core.state_get(self.namespace, _HANDLES, event_id)
        return None if raw is None else dict(json.loads(raw))

    async def _published(self, out: Outgoing) -> None:
        env, now = out.envelope, self.clock()

        def fn(rec: Record) -> None:
            rec["i"] = [env.topic, env.trace_id, env.emitted_at]
            for t in out.targets:
                rec["s"].setdefault(t.step, {"live": 1, "due": now + t.delay_s, "a": 0, "run": False})

        await self._change(env.id, fn, new=True)

    async def _ended(self, d: Delivery, rec_of: Callable[[Record], Record | None]) -> None:
        def fn(rec: Record) -> None:
            env = d.envelope
            rec.setdefault("i", [env.topic, env.trace_id, env.emitted_at])
            new = rec_of(rec["s"].get(d.step, {}))
            if new is not None:
                rec["s"][d.step] = new
                rec["last"] = max(rec.get("last") or 0.0, new.get("f") or 0.0)

        await self._change(d.envelope.id, fn)

    async def _take_key(self, out: Outgoing) -> str | None:
        """Take ``out``'s key (None) or return the id of the event that holds it."""
        assert out.key is not None
        name = json.dumps([out.envelope.topic, out.key])
        held: list[str] = []

        def change(raw: str | None) -> str | None:
            now = self.clock()
            cur = json.loads(raw) if raw else None
            if cur is not None and cur["x"] > now and cur["e"] != out.envelope.id:
                held[:] = [cur["e"]]
                return raw
            held.clear()
            return json.dumps({"e": out.envelope.id, "x": now + out.key_ttl_s})

        await _update(self.core, self.namespace, _KEYS, name, change)
        return held[0] if held else None

    async def _release(self, items: Sequence[Outgoing]) -> None:
        """Give back the keys taken for ``items`` when they were not published after all."""
        for out in items:
            if out.key is not None:
                await _update(self.core, self.namespace, _KEYS, json.dumps([out.envelope.topic, out.key]),
                              _unless_held_by(out.envelope.id))

    async def _unkeyed(self, items: Sequence[Outgoing]) -> tuple[list[Outgoing], list[str]]:
        go, ids = [], []
        for out in items:
            holder = await self._take_key(out) if out.key is not None else None
            ids.append(holder or out.envelope.id)
            if holder is None:
                go.append(out)
        return go, ids

    # -- the queue store, with its handles ----------------------------------------------------------
    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Publish (keys taken first), then record each event's handle."""
        await self.publish_deduped(items)

    async def publish_deduped(self, items: Sequence[Outgoing]) -> list[str]:
        """:meth:`publish`; per item the id of the event that holds its key."""
        go, ids = await self._unkeyed(items)
        await self.core.publish(go)
        await _all(self._published(out) for out in go if out.targets)
        return ids

    async def claim(self, step: str, limit: int, lease_s: float, *, control: FlowControl | None = None
                    ) -> list[Delivery]:
        """Claim; record each delivery as running, and flag those of cancelled events."""
        got: list[Delivery] = (await self.core.claim(step, limit, lease_s) if control is None
                               else await self.core.claim(step, limit, lease_s, control=control))
        if not got:
            return got
        cancels = await self.core.state_items(self.namespace, _CANCELS)
        await _all(self._ended(d, _running(d)) for d in got)
        return [replace(d, cancelled=True) if d.envelope.id in cancels else d for d in got]

    async def hand_back(self, deliveries: Sequence[Delivery]) -> None:
        """Hand back; the deliveries wait again."""
        await self.core.hand_back(deliveries)
        await _all(self._ended(d, _waiting(attempts=d.attempt - 1)) for d in deliveries)

    async def complete(self, delivery: Delivery, outgoing: Sequence[Outgoing] = ()) -> bool:
        """Acknowledge, then record ``succeeded``."""
        return await self.complete_with_result(delivery, outgoing, None)

    async def complete_with_result(self, delivery: Delivery, outgoing: Sequence[Outgoing],
                                   result_json: str | None) -> bool:
        """Acknowledge with the outbox (keys taken first), then record ``succeeded`` with the result."""
        go, _ = await self._unkeyed(outgoing)
        if not await self.core.complete(delivery, go):
            await self._release(go)
            return False
        await self._succeeded(delivery, go, result_json)
        return True

    async def _succeeded(self, delivery: Delivery | None, published: Sequence[Outgoing], result_json: str | None
                         ) -> None:
        updates = [self._published(out) for out in published if out.targets]
        if delivery is not None:
            now = self.clock()
            updates.append(self._ended(
                delivery, lambda r: _finished(HandleState.SUCCEEDED, delivery, now, result=result_json)))
        await _all(updates)

    async def complete_tx(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                          writes: Sequence[StateWrite], reads: Sequence[StateRead]) -> TxResult:
        """See :meth:`complete_tx_with_result`."""
        return await self.complete_tx_with_result(delivery, outgoing, writes, reads, None)

    async def complete_tx_with_result(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                                      writes: Sequence[StateWrite], reads: Sequence[StateRead],
                                      result_json: str | None) -> TxResult:
        """Commit through the transactional store (keys taken first, given back when it did not commit),
        then record ``succeeded`` with the result. The change events of the writes get no handle records
        until they are claimed."""
        go, _ = await self._unkeyed(outgoing)
        result = await self.tx.complete_tx(delivery, go, writes, reads)
        if result != "ok":
            await self._release(go)
            return result
        await self._succeeded(delivery, go, result_json)
        return result

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        """Retry; the delivery waits again."""
        await self.core.retry(delivery, delay_s)
        await self._ended(delivery, _waiting(due=self.clock() + delay_s))

    async def retry_with_error(self, delivery: Delivery, delay_s: float, error: str) -> None:
        """Retry keeping ``error``; a cancelled event's delivery ends as cancelled instead."""
        if await self.core.state_get(self.namespace, _CANCELS, delivery.envelope.id) is not None:
            await self.cancel_settle(delivery)
            return
        await self.core.retry(delivery, delay_s)
        await self._ended(delivery, _waiting(due=self.clock() + delay_s, e=error))

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str, attempts: int | None = None) -> None:
        """Dead-letter, then record ``dead`` (when the dead letter is there: the lease may have been lost)."""
        await self.core.dead_letter(delivery, error, traceback, attempts)
        if await self.core.dlq_get(delivery.id) is not None:
            now = self.clock()
            await self._ended(delivery, lambda r: _finished(HandleState.DEAD, delivery, now, attempts=attempts,
                                                            error=error))

    async def cancel_settle(self, delivery: Delivery) -> bool:
        """Acknowledge without an outbox, then record ``cancelled`` (a delivery cancelled while queued
        keeps the record written then)."""
        if not await self.core.complete(delivery, ()):
            return False
        now = self.clock()

        def fn(rec: Record) -> None:
            if "live" in rec["s"].get(delivery.step, {"live": 1}):
                rec["s"][delivery.step] = _finished(HandleState.CANCELLED, delivery, now)
                rec["last"] = now
            else:
                rec["x"] = max(0, int(rec.get("x", 0)) - 1)

        await self._change(delivery.envelope.id, fn)
        return True

    async def dlq_replay(self, dead_id: str) -> bool:
        """Replay; the step's delivery is live again."""
        dead: DeadLetter | None = await self.core.dlq_get(dead_id)
        if not await self.core.dlq_replay(dead_id):
            return False
        if dead is not None:
            now = self.clock()
            await self._change(dead.envelope.id, lambda rec: rec["s"].__setitem__(
                dead.step, {"live": 1, "due": now, "a": 0, "run": False}))
        return True

    async def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> None:
        """See :meth:`.QueueStore.extend`."""
        await self.core.extend(deliveries, lease_s)

    async def wait(self, step: str, timeout_s: float, *, control: FlowControl | None = None) -> None:
        """See :meth:`.QueueStore.wait`."""
        if control is None:
            await self.core.wait(step, timeout_s)
        else:
            await self.core.wait(step, timeout_s, control=control)

    async def stats(self) -> QueueStats:
        """See :meth:`.QueueStore.stats`."""
        return await self.core.stats()

    async def step_stats(self, controls: Mapping[str, FlowControl] | None = None) -> dict[str, StepQueueStats]:
        """See :meth:`.QueueStore.step_stats`."""
        return await (self.core.step_stats() if controls is None else self.core.step_stats(controls))

    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        """See :meth:`.QueueStore.dlq_list`."""
        return await self.core.dlq_list(limit)

    async def dlq_get(self, dead_id: str) -> DeadLetter | None:
        """See :meth:`.QueueStore.dlq_get`."""
        return await self.core.dlq_get(dead_id)

    async def dlq_purge(self, dead_id: str) -> bool:
        """See :meth:`.QueueStore.dlq_purge`."""
        return bool(await self.core.dlq_purge(dead_id))

    # -- the handle store -------------------------------------------------------------------------------
    def _steps(self, rec: Record, now: float) -> list[StepHandle]:
        out = []
        for step, r in rec["s"].items():
            progress = rec["p"].get(step)
            if r.get("live"):
                state = live_state(bool(r.get("run")), int(r.get("a", 0)), float(r.get("due", 0.0)), now)
                out.append(StepHandle(step=step, state=state, delivery_id=r.get("d"), attempts=int(r.get("a", 0)),
                                      due_at=None if r.get("run") else r.get("due"), started_at=r.get("st"),
                                      error=r.get("e"), progress_json=progress,
                                      cancel_requested=bool(r.get("run")) and "c" in rec))
            else:
                out.append(StepHandle(step=step, state=HandleState(r["s"]), delivery_id=r.get("d"),
                                      attempts=int(r.get("a", 0)), started_at=r.get("st"), finished_at=r.get("f"),
                                      error=r.get("e"), result_json=r.get("r"), progress_json=progress))
        return out

    async def handle_get(self, event_id: str) -> EventHandle | None:
        """The event's record, its live states derived at the backend's clock."""
        rec = await self._record(event_id)
        if rec is None or "i" not in rec or not rec["s"]:
            return None
        topic, trace_id, emitted_at = rec["i"]
        return event_handle(event_id, (topic, trace_id, emitted_at), self._steps(rec, self.clock()))

    async def handle_find(self, prefix: str, limit: int) -> list[str]:
        """Known event ids starting with ``prefix`` (reads every record's key)."""
        items = await self.core.state_items(self.namespace, _HANDLES)
        return sorted(e for e in items if e.startswith(prefix))[:max(0, limit)]

    async def handle_progress(self, delivery: Delivery, progress_json: str) -> None:
        """Store the latest progress."""
        await self._change(delivery.envelope.id, lambda rec: rec["p"].__setitem__(delivery.step, progress_json))

    async def handle_cancel(self, event_id: str) -> CancelResult | None:
        """Record the event cancelled: waiting deliveries as ``cancelled`` (claims flag them), running
        ones as asked to stop."""
        if await self._record(event_id) is None:
            return None
        cancelled: list[str] = []
        requested: list[str] = []
        now = self.clock()

        def fn(rec: Record) -> None:
            cancelled.clear()
            requested.clear()
            for step, r in rec["s"].items():
                if not r.get("live"):
                    continue
                if r.get("run"):
                    requested.append(step)
                    rec["c"] = now
                else:
                    rec["s"][step] = _finished(HandleState.CANCELLED, None, now, attempts=int(r.get("a", 0)))
                    rec["x"] = int(rec.get("x", 0)) + 1
                    rec["last"] = now
                    cancelled.append(step)

        await self._change(event_id, fn)
        if cancelled or requested:
            await self.core.state_set(self.namespace, _CANCELS, event_id, json.dumps(now))
        handle = await self.handle_get(event_id)
        assert handle is not None
        return CancelResult(handle=handle, cancelled=tuple(sorted(cancelled)), requested=tuple(sorted(requested)))

    async def cancel_requests(self, deliveries: Sequence[Delivery]) -> set[str]:
        """The deliveries whose event was cancelled."""
        if not deliveries:
            return set()
        cancels = await self.core.state_items(self.namespace, _CANCELS)
        return {d.id for d in deliveries if d.envelope.id in cancels}

    async def scheduled_list(self, topic: str | None, limit: int) -> list[ScheduledDelivery]:
        """Scheduled deliveries, from every record (slow: for the CLI)."""
        now, out = self.clock(), []
        for event_id, raw in (await self.core.state_items(self.namespace, _HANDLES)).items():
            rec = json.loads(raw)
            if "i" not in rec or (topic is not None and rec["i"][0] != topic):
                continue
            for step, r in rec["s"].items():
                if r.get("live") and not r.get("run") and int(r.get("a", 0)) == 0 and float(r["due"]) > now:
                    out.append(ScheduledDelivery(event_id=event_id, step=step, topic=rec["i"][0], trace_id=rec["i"][1],
                                                 due_at=float(r["due"]), emitted_at=rec["i"][2],
                                                 delivery_id=r.get("d") or ""))
        return sorted(out, key=lambda s: (s.due_at, s.event_id, s.step))[:max(0, limit)]

    async def handles_prune(self, before: float, keep: int) -> int:
        """Drop finished records by age and count; forget cancellations with nothing left queued; drop
        expired keys."""
        ranked: list[tuple[float, str, str]] = []
        for event_id, raw in (await self.core.state_items(self.namespace, _HANDLES)).items():
            rec = json.loads(raw)
            if not any(r.get("live") for r in rec["s"].values()) and not int(rec.get("x", 0)):
                ranked.append((float(rec.get("last") or 0.0), event_id, raw))
        ranked.sort(reverse=True)
        dropped = 0
        for i, (last, event_id, raw) in enumerate(ranked):
            if (i >= keep or last < before) and await self.core.state_cas(self.namespace, _HANDLES, event_id,
                                                                           raw, None):
                dropped += 1
        handles = await self.core.state_items(self.namespace, _HANDLES)
        for event_id in await self.core.state_items(self.namespace, _CANCELS):
            rec = json.loads(handles[event_id]) if event_id in handles else {"s": {}}
            if not any(r.get("live") for r in rec["s"].values()) and not int(rec.get("x", 0)):
                await self.core.state_delete(self.namespace, _CANCELS, event_id)
        now = self.clock()
        for name, raw in (await self.core.state_items(self.namespace, _KEYS)).items():
            if json.loads(raw)["x"] <= now:
                await self.core.state_cas(self.namespace, _KEYS, name, raw, None)
        return dropped


async def _all(updates: Iterable[Awaitable[None]]) -> None:
    """Run the record updates of a batch's events concurrently (as many at a time as the backend has
    connections), not one after the other: each is its own compare-and-set loop, so two updates of one
    event that race retry rather than lose one another."""
    await asyncio.gather(*updates)
