"""The backend protocols and the records that cross them, in one import.

The records live in :mod:`.records`, the store protocols in :mod:`.stores`; this module re-exports
both so that ``from motia_py.backends.base import Backend, Delivery, ...`` keeps working.
"""

from __future__ import annotations

from .records import (
    DeadLetter,
    Delivery,
    Envelope,
    FlowControl,
    Outgoing,
    QueueStats,
    StateRead,
    StateWrite,
    StepQueueStats,
    Target,
    TraceRun,
    TxResult,
    new_id,
    worker_identity,
)
from .stores import Backend, CoreBackend, LeaseStore, QueueStore, StateStore, TraceStore, TxStore, WaitStore

__all__ = [
    "Backend",
    "CoreBackend",
    "DeadLetter",
    "Delivery",
    "Envelope",
    "FlowControl",
    "LeaseStore",
    "Outgoing",
    "QueueStats",
    "QueueStore",
    "StateRead",
    "StateStore",
    "StateWrite",
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
