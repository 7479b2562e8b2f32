"""One API request's run, as the HTTP layer drives it: call the handler (through the shared executor),
report a failure, publish the emits, and say how it ended; the router records it."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import Any

from .backends.base import Outgoing
from .config import StepSpec
from .context import Context
from .executor import Executor
from .publisher import Publisher
from .runs import Outcome


class RequestRun:
    """The run of one API request (see :meth:`motia_py.router.Router.request`).

    Attributes:
        ctx: the handler's ``ctx`` (middleware gets it too).
        status: the HTTP status answered (set by the HTTP layer; 5xx records the run as an error).
        error: the failure, when the handler or its response failed.
        published: the events published when the request succeeded.
    """

    __slots__ = ("_executor", "_publisher", "ctx", "error", "published", "skipped", "spec", "status")

    def __init__(self, spec: StepSpec, ctx: Context, executor: Executor, publisher: Publisher) -> None:
        self.spec = spec
        self.ctx = ctx
        self._executor = executor
        self._publisher = publisher
        self.status = 500
        self.error: str | None = None
        self.published: Sequence[Outgoing] = ()
        self.skipped = False  # a Motia 1.0 trigger's condition said no

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
        """Publish the events the handler emitted (a request that answers 5xx publishes nothing); called
        again (a streamed answer, when it ends), publish those emitted since."""
        new = self.ctx.outbox[len(self.published):]
        if new:
            await self._publisher.publish(new)
            self.published = (*self.published, *new)
