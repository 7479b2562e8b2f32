"""Backends: one protocol (:mod:`.base`), found by URL scheme through the ``motia_py.backends`` entry points."""

from .base import Backend, DeadLetter, Delivery, Envelope, Outgoing, QueueStats, Target
from .registry import available_schemes, open_backend

__all__ = [
    "Backend",
    "DeadLetter",
    "Delivery",
    "Envelope",
    "Outgoing",
    "QueueStats",
    "Target",
    "available_schemes",
    "open_backend",
]
