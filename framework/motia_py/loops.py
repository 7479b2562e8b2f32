"""The event loop the long-running commands (``start`` and ``dev``) run on.

``[worker] event_loop`` (``MOTIA_PY_EVENT_LOOP``) picks it:

- ``auto`` (the default): uvloop when it is installed (it is a dependency on Linux and macOS), else
  asyncio's own loop;
- ``uvloop``: uvloop, and a clear error when it is not installed;
- ``asyncio``: asyncio's own loop (for handlers that need something uvloop does not do).

uvloop runs the same asyncio code with a faster loop: each wake-up, socket read and callback costs
less, which is most of a worker's time between handlers. Short commands (``emit``, ``validate``, the
inspection commands) stay on asyncio's loop: they would not gain what importing uvloop costs.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

from .errors import ProjectError

T = TypeVar("T")


def loop_name(choice: str) -> str:
    """``uvloop`` or ``asyncio``: what ``choice`` (auto, uvloop, asyncio) gives on this machine.

    Raises:
        ProjectError: ``uvloop`` was asked for and is not installed.
    """
    if choice == "asyncio":
        return "asyncio"
    installed = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not installed:
        raise ProjectError("[worker] event_loop = 'uvloop' but uvloop is not installed "
                           "(pip install uvloop, or set event_loop = 'auto' or 'asyncio')")
    return "uvloop" if installed else "asyncio"


def run_on(choice: str, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh loop of the kind ``choice`` names (see :func:`loop_name`)."""
    if loop_name(choice) == "asyncio":
        return asyncio.run(coro)
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
