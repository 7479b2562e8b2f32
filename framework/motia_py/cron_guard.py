"""The cron side of a run: the ``overlap: skip`` lock that keeps one run of a cron step at a time across
every worker, and the record of each step's last run that ``motia-py cron list`` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime

from . import meta_keys
from .backends.base import Backend, Delivery
from .config import StepSpec
from .errors import BackendError
from .logs import StepLogger
from .runs import Outcome
from .types import Clock


class CronGuard:
    """Overlap locks and last-run records of cron steps, kept in the backend's leases and metadata."""

    def __init__(self, backend: Backend, clock: Clock, log: StepLogger) -> None:
        self.backend = backend
        self.clock = clock
        self.log = log

    @staticmethod
    def lease_s(spec: StepSpec) -> float:
        """How long the overlap lock lasts between renewals."""
        return max(1.0, spec.queue.visibility_timeout_s)

    async def admit(self, spec: StepSpec, d: Delivery, scheduled_at: datetime | None, started: float
                    ) -> Outcome | None:
        """Take the overlap lock for this tick: None when it may run now, else why not.

        A tick that became due while the previous run was running is skipped (``Outcome.SKIPPED``). Ticks
        fired together by a late scheduler are not skipped: an older tick waits for the run before it
        (``Outcome.DEFERRED``), so every tick still runs once with its own ``scheduled_at``.
        """
        key = meta_keys.cron_running(spec.name)
        if await self.backend.acquire(key, d.id, self.lease_s(spec)):
            await self.backend.meta_set(meta_keys.cron_running_since(spec.name), repr(self.clock()))
            return None
        raw = await self.backend.meta_get(meta_keys.cron_running_since(spec.name))
        running_since = float(raw) if raw else 0.0
        tick = scheduled_at.timestamp() if scheduled_at else started
        return Outcome.DEFERRED if tick < running_since else Outcome.SKIPPED

    @contextlib.asynccontextmanager
    async def held(self, spec: StepSpec, d: Delivery) -> AsyncIterator[None]:
        """Keep the lock renewed while the body runs (a run may outlast the lease), release it after."""
        key = meta_keys.cron_running(spec.name)
        renew = asyncio.create_task(self._renew(spec, key, d.id))
        try:
            yield
        finally:
            renew.cancel()
            try:
                await asyncio.shield(self.backend.release(key, d.id))
            except BackendError as exc:
                self.log.warning(f"cron '{spec.name}': could not release the overlap lock ({exc}); the next tick "
                                 f"may be skipped until it expires ({self.lease_s(spec):g} s)", step=spec.name)

    async def _renew(self, spec: StepSpec, key: str, owner: str) -> None:
        lease = self.lease_s(spec)
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await self.backend.acquire(key, owner, lease)
            except BackendError as exc:
                self.log.warning(f"cron '{spec.name}': overlap lock renewal failed ({exc}); if it lapses, a tick "
                                 "may start while this run still runs", step=spec.name)

    async def record_last(self, spec: StepSpec, d: Delivery, outcome: Outcome) -> None:
        """Remember the step's last run for ``motia-py cron list`` (skipped when the backend is down)."""
        record = {"scheduled_at": (d.envelope.data or {}).get("scheduled_at"), "outcome": outcome.value,
                  "finished_at": self.clock(), "attempt": d.attempt, "trace_id": d.envelope.trace_id}
        try:
            await self.backend.meta_set(meta_keys.cron_last(spec.name), json.dumps(record))
        except BackendError as exc:
            self.log.warning(f"cron '{spec.name}': could not record its last run ({exc}); `cron list` will show "
                             "an older one", step=spec.name)
