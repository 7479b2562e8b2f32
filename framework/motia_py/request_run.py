"""One API request's run, as the HTTP layer drives it: call the handler (through the shared executor),
report a failure, publish the emits, and say how it ended; the router records it."""

from __future__ import annotations

import asyncio
import random
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from .backends.base import Outgoing
from .config import StepSpec
from .context import Context
from .errors import MotiaError
from .executor import Executor
from .publisher import Publisher
from .runs import Outcome
from .settle import conflict_delay
from .tx_state import Transaction


class RequestRun:
    """The run of one API request (see :meth:`motia_py.router.Router.request`).

    Attributes:
        ctx: the handler's ``ctx`` (middleware gets it too).
        status: the HTTP status answered (set by the HTTP layer; 5xx records the run as an error).
        error: the failure, when the handler or its response failed.
        published: the events published when the request succeeded.
        conflicts: how many times a transactional request's commit found a changed read (each one runs
            the request again: see :meth:`again`).
    """

    __slots__ = ("_executor", "_on_conflict", "_publisher", "_restart", "conflicted", "conflicts", "ctx", "error",
                 "published", "skipped", "spec", "status", "tx")

    def __init__(self, spec: StepSpec, ctx: Context, executor: Executor, publisher: Publisher, *,
                 tx: Transaction | None = None,
                 restart: Callable[[], tuple[Context, Transaction | None]] | None = None,
                 on_conflict: Callable[[], None] | None = None) -> None:
        self.spec = spec
        self.ctx = ctx
        self.tx = tx  # a transactional step's: its state writes commit with its emits
        self._executor = executor
        self._publisher = publisher
        self._restart = restart
        self._on_conflict = on_conflict
        self.status = 500
        self.error: str | None = None
        self.published: Sequence[Outgoing] = ()
        self.skipped = False  # a Motia 1.0 trigger's condition said no
        self.conflicted = False
        self.conflicts = 0

    @property
    def trace_id(self) -> str:
        """The request's trace id (continues a caller's W3C ``traceparent``)."""
        return self.ctx.trace_id

    @property
    def outcome(self) -> Outcome:
        """How the run ended, from the status answered."""
        if self.skipped:
            return Outcome.SKIPPED
        return Outcome.OK if self.status < 500 else Outcome.ERROR

    async def call(self, req: Any) -> Any:
        """Call the step's handler with ``req`` and the ctx, under the step's timeout."""
        return await self._executor.call(self.spec, req, self.ctx)

    def fail(self, exc: BaseException) -> None:
        """Report a failed handler (or response): logged with its traceback and recorded."""
        self.error = f"{type(exc).__name__}: {exc}"
        self.ctx.logger.error(f"API step '{self.spec.name}' failed: {self.error}",
                              traceback="".join(traceback.format_exception(exc)))

    async def commit(self) -> None:
        """Publish the events the handler emitted (a request that answers 5xx publishes nothing); for a
        transactional step, commit its state writes with them, all or nothing (``conflicted`` when a value
        it read changed: nothing was committed, and :meth:`again` starts the request over). Called again
        (a streamed answer, when its body ends), publish the events emitted since."""
        outbox = self.ctx.outbox
        if self.tx is not None:
            result = await self._publisher.backend.complete_tx(None, outbox, self.tx.writes(), self.tx.reads())
            self.conflicted = result == "conflict"
            if self.conflicted:
                self.conflicts += 1
                if self._on_conflict is not None:
                    self._on_conflict()
            else:
                self.published = tuple(outbox)
            return
        new = outbox[len(self.published):]
        if new:
            await self._publisher.publish(new)
            self.published = (*self.published, *new)

    async def again(self, rand: Callable[[], float] = random.random) -> None:
        """Start a transactional request over after a conflict: a fresh ``ctx`` and transaction, at once
        the first time, after a short jittered wait when it happens again
        (:func:`~motia_py.settle.conflict_delay`)."""
        if self._restart is None:
            raise MotiaError("again() is for transactional requests")  # pragma: no cover - a caller's bug
        await asyncio.sleep(conflict_delay(self.conflicts, rand))
        self.ctx, self.tx = self._restart()
        self.conflicted = False
        self.error = None
