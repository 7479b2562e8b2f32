"""Backends: five store protocols bundled into a :class:`Backend` (:mod:`.stores`), the records that cross
them (:mod:`.records`), found by URL scheme through the ``motia_py.backends`` entry points (:mod:`.registry`).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_LAZY = {
    "compose": "compose",
    "DeadLetter": "records",
    "Delivery": "records",
    "Envelope": "records",
    "FlowControl": "records",
    "Outgoing": "records",
    "QueueStats": "records",
    "Target": "records",
    "TraceRun": "records",
    "available_schemes": "registry",
    "open_backend": "registry",
    "Backend": "stores",
    "CoreBackend": "stores",
    "HandleStore": "stores",
    "LeaseStore": "stores",
    "QueueStore": "stores",
    "StateStore": "stores",
    "TraceStore": "stores",
    "TxStore": "stores",
    "WaitStore": "stores",
}


def __getattr__(name: str) -> Any:
    """The package's names, imported on first use: importing one backend module (``records``, the SQLite
    backend) does not import every other (``compose`` brings asyncio, ``registry`` the entry points)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


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
