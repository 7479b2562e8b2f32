"""What a running process is waiting on: on SIGUSR1, ``motia-py start`` and ``motia-py dev`` log one record
listing every asyncio task of the process with the place each one waits at.

A worker that holds events and makes no progress is otherwise a black box: its log is quiet and its
leases are renewed. ``kill -USR1 PID`` then shows which call every consumer, runner and background task
is in (a backend call, a handler's own ``await``, the isolation gate), without stopping anything.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from types import FrameType
from typing import Any

from .logs import StepLogger

_FRAMES = 12  # the innermost frames kept per task (where it waits, and what led there)


def task_stacks() -> list[dict[str, Any]]:
    """Every task of the running loop: ``{"task": name, "coro": its coroutine's name, "at": [frames]}``,
    each frame ``"file:line in function"``, outermost first, down to where the task waits."""
    out = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        frames = _awaited_frames(coro)[-_FRAMES:]
        out.append({"task": task.get_name(), "coro": getattr(coro, "__qualname__", repr(coro)),
                    "at": [f"{_short(f.f_code.co_filename)}:{f.f_lineno} in {f.f_code.co_name}" for f in frames]})
    return sorted(out, key=lambda t: str(t["task"]))


def _awaited_frames(coro: Any) -> list[FrameType]:
    """The frames of a suspended coroutine and of what it awaits, in turn (``Task.get_stack`` gives only
    the outermost one)."""
    frames: list[FrameType] = []
    while coro is not None and len(frames) < 100:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return frames


def install(log: StepLogger) -> None:
    """Log :func:`task_stacks` on SIGUSR1 (where the platform has it)."""
    sigusr1 = getattr(signal, "SIGUSR1", None)
    if sigusr1 is None:  # Windows
        return

    def dump() -> None:
        tasks = task_stacks()
        log.info(f"SIGUSR1: {len(tasks)} task(s) and where each one waits", tasks=tasks)

    asyncio.get_running_loop().add_signal_handler(sigusr1, dump)


def _short(path: str) -> str:
    """A file name shortened to what follows site-packages or the standard library's directory."""
    for root in sorted((p for p in sys.path if p), key=len, reverse=True):
        if path.startswith(root + "/"):
            return path[len(root) + 1:]
    return path
