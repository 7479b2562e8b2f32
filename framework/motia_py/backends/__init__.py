"""Backends: five store protocols bundled into a :class:`Backend` (:mod:`.stores`), the records that cross
them (:mod:`.records`), found by URL scheme through the ``motia_py.backends`` entry points (:mod:`.registry`).
"""

from .compose import compose
from .records import DeadLetter, Delivery, Envelope, FlowControl, Outgoing, QueueStats, Target, TraceRun
from .registry import available_schemes, open_backend
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
    "CoreBackend",
    "DeadLetter",
    "Delivery",
    "Envelope",
    "FlowControl",
    "HandleStore",
    "LeaseStore",
    "Outgoing",
    "QueueStats",
    "QueueStore",
    "StateStore",
    "Target",
    "TraceRun",
    "TraceStore",
    "TxStore",
    "WaitStore",
    "available_schemes",
    "compose",
    "open_backend",
]
