"""The backend protocols and the records that cross them, in one import.

The records live in :mod:`.records`, the store protocols in :mod:`.stores`; this module re-exports
both so that ``from motia_py.backends.base import Backend, Delivery, ...`` keeps working.
"""

from __future__ import annotations

from .records import (
    CancelResult,
    DeadLetter,
    Delivery,
    Envelope,
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
    Target,
    TraceRun,
    TxResult,
    new_id,
    worker_identity,
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

__all__ = [
    "Backend",
    "CancelResult",
    "CoreBackend",
    "DeadLetter",
    "Delivery",
    "Envelope",
    "EventHandle",
    "FlowControl",
    "HandleState",
    "HandleStore",
    "LeaseStore",
    "Outgoing",
    "QueueStats",
    "QueueStore",
    "ScheduledDelivery",
    "StateRead",
    "StateStore",
    "StateWrite",
    "StepHandle",
    "StepQueueStats",
    "Target",
    "TraceRun",
    "TraceStore",
    "TxResult",
    "TxStore",
    "WaitStore",
    "new_id",
    "worker_identity",
]
