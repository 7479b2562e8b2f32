"""Running the handlers of Motia 1.0 steps: the adapter between motia-py's calls (``handler(input, ctx)``,
``handler(ctx)`` for cron, ``handler(req, ctx)`` for API) and a 1.0 handler (``handler(input, ctx)``,
``handler(input)`` or ``handler()``, plain ``def`` or ``async def``).

Each call builds the 1.0 ``FlowContext`` (``ctx.trigger`` says which trigger fired), makes the run the
current one for the module-level helpers (``enqueue``, ``logger``, ``stateManager``, ``Stream``), checks
the trigger's ``condition`` (false: :class:`~motia_py.errors.ConditionSkipped`, the run is skipped) and
calls the handler. Plain ``def`` code (the handler, its condition, the functions ``ctx.match`` picks)
runs in a handler thread, where the helpers block and return values as in Motia's SDK; ``async def``
code runs on the event loop, where the helpers are awaitable.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from msgspec import Struct

from .errors import ConditionSkipped
from .executor import SYNC_HANDLER_THREADS, SYNC_THREAD
from .motia_compat import _run
from .motia_compat.types import FlowContext, StateTriggerInput, StreamTriggerInput, TriggerInfo

_pool: ThreadPoolExecutor | None = None


def _threads() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:  # one pool per process, like Motia's SDK; its idle threads cost nothing
        _pool = ThreadPoolExecutor(max_workers=SYNC_HANDLER_THREADS, thread_name_prefix=f"{SYNC_THREAD}-1.0")
    return _pool


async def run_sync(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a plain function in a handler thread, in a copy of the caller's context (so the helpers find
    the run), and await its result; an awaitable it returns is awaited on the loop."""
    run = contextvars.copy_context().run
    result = await asyncio.get_running_loop().run_in_executor(_threads(), run, fn, *args)
    if isinstance(result, _run.Ready):
        return result.value
    if inspect.isawaitable(result):
        return await result
    return result


class TriggerPlan(Struct, frozen=True, eq=False):  # identity equality: holds callables
    """One trigger of a 1.0 step, as its adapter runs it."""

    step: str  # the spec's name (``Step#queue`` for one trigger of several)
    kind: str  # "queue" | "http" | "cron" | "state" | "stream"
    index: int
    handler: Callable[..., Any]
    arity: int  # positional arguments the handler takes: 0, 1 or 2 (input, ctx)
    enqueues: frozenset[str]
    condition: Callable[..., Any] | None = None
    topic: str | None = None
    method: str | None = None
    path: str | None = None
    expression: str | None = None
    middleware: tuple[Callable[..., Any], ...] = ()
    stream_name: str | None = None  # stream triggers
    item_id: str | None = None  # stream triggers on one item

    def info(self, topic: str | None = None) -> TriggerInfo:
        """``ctx.trigger`` of a call."""
        return TriggerInfo(type=self.kind, index=self.index, topic=topic or self.topic, method=self.method,  # type: ignore[arg-type]
                           path=self.path, expression=self.expression)


def invocation(plan: TriggerPlan, ctx: Any, flow: FlowContext[Any]) -> _run.Invocation:
    """The run the helpers act on while ``plan``'s handler runs."""
    return _run.Invocation(ctx, flow, asyncio.get_running_loop(), run_sync, step=plan.step, enqueues=plan.enqueues)


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)  # an async callable object


async def admitted(condition: Callable[..., Any] | None, value: Any, flow: FlowContext[Any]) -> bool:
    """Whether a condition lets the run through (no condition: yes); a plain condition runs in a thread."""
    if condition is None:
        return True
    if _is_async(condition):
        return bool(await condition(value, flow))
    return bool(await run_sync(_condition, condition, value, flow))


def _condition(condition: Callable[..., Any], value: Any, flow: FlowContext[Any]) -> Any:
    result = condition(value, flow)
    if inspect.isawaitable(result):  # a plain function that returned a coroutine: wait for it here
        result = _run.current("a condition").call(lambda: _awaited(result))
    return result


async def _awaited(aw: Any) -> Any:
    return await aw


def _sync_run(plan: TriggerPlan, value: Any, flow: FlowContext[Any], check: bool) -> Any:
    """A plain handler with its plain condition, in one handler thread."""
    if check and plan.condition is not None and not _condition(plan.condition, value, flow):
        raise ConditionSkipped(f"the condition of {plan.kind} trigger {plan.index} of '{plan.step}' is false")
    return plan.handler(*(value, flow)[: plan.arity])


async def call_handler(plan: TriggerPlan, value: Any, flow: FlowContext[Any], *, check: bool = True) -> Any:
    """Check the condition (``check``) and call the handler with ``(value, flow)`` cut to its arity.

    Raises:
        ConditionSkipped: the condition is false.
    """
    if not _is_async(plan.handler):
        condition = plan.condition
        if check and condition is not None and _is_async(condition):
            if not await admitted(condition, value, flow):
                raise ConditionSkipped(f"the condition of {plan.kind} trigger {plan.index} of '{plan.step}' is false")
            check = False
        return await run_sync(_sync_run, plan, value, flow, check)
    if check and not await admitted(plan.condition, value, flow):
        raise ConditionSkipped(f"the condition of {plan.kind} trigger {plan.index} of '{plan.step}' is false")
    result = plan.handler(*(value, flow)[: plan.arity])
    return await result if inspect.isawaitable(result) else result


def trigger_input(plan: TriggerPlan, data: Any, emitted_at: float) -> Any:
    """The handler's input for a delivery: a queue message as it is, ``StateTriggerInput`` and
    ``StreamTriggerInput`` from motia-py's change documents (``{group_id, item_id, old_value, new_value}``)."""
    if plan.kind == "state" and isinstance(data, dict):
        return StateTriggerInput.model_validate(data)
    if plan.kind == "stream" and isinstance(data, dict):
        old, new = data.get("old_value"), data.get("new_value")
        kind = "create" if old is None else "delete" if new is None else "update"
        return StreamTriggerInput.model_validate({
            "timestamp": int(emitted_at * 1000), "stream_name": plan.stream_name, "group_id": data.get("group_id"),
            "id": data.get("item_id"), "event": {"type": kind, "data": old if new is None else new}})
    return data


async def run_trigger(plan: TriggerPlan, ctx: Any, data: Any) -> Any:
    """One delivery of a queue, cron, state or stream trigger (the handler's result is the run's)."""
    value = None if plan.kind == "cron" else trigger_input(plan, data, time.time())
    if plan.item_id is not None and getattr(value, "id", None) != plan.item_id:
        raise ConditionSkipped(f"stream trigger {plan.index} of '{plan.step}' watches item '{plan.item_id}' only")
    flow: FlowContext[Any] = FlowContext(ctx.trace_id, plan.info(ctx.topic if plan.kind == "queue" else None),
                                         value)
    inv = invocation(plan, ctx, flow)
    token = _run.CURRENT.set(inv)
    try:
        result = await call_handler(plan, value, flow)
        await inv.settle()
        return result
    finally:
        _run.CURRENT.reset(token)


def adapter(plan: TriggerPlan) -> Callable[..., Any]:
    """The function motia-py calls for a queue, cron, state or stream trigger (``__wrapped__`` is the
    step's own handler; HTTP triggers have :func:`motia_py.motia1_http.adapter`)."""
    if plan.kind == "cron":

        async def on_tick(ctx: Any) -> Any:
            return await run_trigger(plan, ctx, None)

        fn: Callable[..., Any] = on_tick
    else:

        async def on_delivery(data: Any, ctx: Any) -> Any:
            return await run_trigger(plan, ctx, data)

        fn = on_delivery
    fn.__wrapped__ = plan.handler  # type: ignore[attr-defined]
    return fn
