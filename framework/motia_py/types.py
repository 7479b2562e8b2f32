"""Aliases and protocols shared across motia-py (a leaf module: imports nothing of ours)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeAlias

JSON: TypeAlias = Any
"""A value that survives ``json.dumps``/``json.loads`` unchanged."""

JSONDict: TypeAlias = dict[str, Any]

Handler: TypeAlias = Callable[..., Any]
"""A step handler: ``async def handler(input, ctx)``, ``handler(ctx)`` for cron, ``handler(req, ctx)`` for api."""

Middleware: TypeAlias = Callable[[Any, Any, Callable[[], Awaitable[Any]]], Awaitable[Any]]


class Clock(Protocol):
    """Wall-clock seconds since the epoch; injected so that tests control time."""

    def __call__(self) -> float: ...
