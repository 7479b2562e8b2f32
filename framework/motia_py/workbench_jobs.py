"""The Workbench's job-handle answers (status, cancel, a trace by prefix) as (HTTP status, JSON body),
kept apart from :mod:`.workbench`'s routing: 404 for an unknown or pruned id, 409 for an ambiguous prefix
(with its candidates)."""

from __future__ import annotations

from typing import Any

from .backends.base import Backend
from .errors import AmbiguousIdError, UnknownEventError
from .handles import cancel_event, event_status
from .tracing import build_tree, find_trace, summarize

Answer = tuple[int, dict[str, Any]]


def _ambiguous(exc: AmbiguousIdError) -> Answer:
    return 409, {"error": "ambiguous_id", "message": str(exc), "candidates": exc.candidates}


async def status(backend: Backend, ref: str) -> Answer:
    """An event's status per subscribing step."""
    try:
        return 200, (await event_status(backend, ref)).to_json()
    except AmbiguousIdError as exc:
        return _ambiguous(exc)
    except UnknownEventError as exc:
        return 404, {"error": "unknown_event", "message": str(exc)}


async def cancel(backend: Backend, ref: str) -> Answer:
    """Cancel an event; ``changed`` is false when it had already finished."""
    try:
        done = await cancel_event(backend, ref)
    except AmbiguousIdError as exc:
        return _ambiguous(exc)
    except UnknownEventError as exc:
        return 404, {"error": "unknown_event", "message": str(exc)}
    return 200, {"changed": done.changed, "cancelled": list(done.cancelled), "requested": list(done.requested),
                 "status": done.status.to_json()}


async def trace(backend: Backend, ref: str, scan: int) -> Answer:
    """One trace (by id or unique prefix): its summary and tree of runs."""
    try:
        trace_id, runs = await find_trace(backend, ref, scan)
    except AmbiguousIdError as exc:
        return _ambiguous(exc)
    if not runs:
        return 404, {"error": "unknown_trace", "message": f"no trace '{ref}' (or it is past retention)"}
    return 200, {"trace_id": trace_id, "summary": summarize(trace_id, runs), "tree": build_tree(runs)}
