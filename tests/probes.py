"""Signals between a test and the step handlers it runs in-process, so that tests wait on events
instead of sleeping.

A step file names globals it does not define (``gate``, ``started``, ...); the test hands them in with
:func:`inject` after discovery and before any event is emitted. The handler's own module globals are
used (not ``sys.modules``): a later discovery drops the project's modules from ``sys.modules`` while
the handlers of the old project keep running on theirs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from motia_py.discovery import Project
from motia_py.runtime import Runtime, load_project, require_valid
from motia_py.settings import load_settings


def load(root: Path, **flags: Any) -> Project:
    """Discover and validate the project at ``root`` (settings from its files only, not the environment)."""
    project, findings = load_project(load_settings(root, flags=flags or None, env={}))
    require_valid(project, findings)
    return project


def step_globals(project: Project, step: str) -> dict[str, Any]:
    """The module globals of a step's handler."""
    spec = project.step(step)
    assert spec is not None and spec.handler is not None, f"no handler for step {step!r}"
    return spec.handler.__globals__


def inject(project: Project, step: str, **values: Any) -> None:
    """Set globals in a step's module (gates, events, lists the handler records into)."""
    step_globals(project, step).update(values)


async def until(predicate: Callable[[], bool | Awaitable[bool]], what: str, timeout_s: float = 10.0) -> None:
    """Wait until ``predicate`` holds, checking it as the event loop turns; fail after ``timeout_s``.

    For conditions that have no event of their own (a worker's ``in_flight``, a log line written by the
    framework). The timeout only bounds a broken run; a passing run never waits for it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.002)


async def wait(event: asyncio.Event, what: str, timeout_s: float = 10.0) -> None:
    """Wait for ``event``; fail with ``what`` after ``timeout_s`` (a broken run only)."""
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None


async def emit(rt: Runtime, topic: str, data: Any = None, *, delay_s: float = 0.0) -> str:
    """Publish an event from outside into a running runtime (as an API or the CLI would); return the trace id."""
    return await rt.router.emit(topic, data, delay_s=delay_s)
