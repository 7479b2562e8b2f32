"""What every backend's job-handle store shares: the state of a live delivery, and the text form of the
records a backend keeps as strings (Redis, the state-derived store).

A finished record is one JSON object: ``s`` state, ``a`` attempts, ``d`` delivery id, ``st`` started at,
``f`` finished at, ``e`` error, ``r`` the result's JSON text. The result stays text inside it, so it comes
back byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .records import EventHandle, HandleState, StepHandle


def live_state(leased: bool, attempts: int, due_at: float, now: float) -> HandleState:
    """The state of a delivery that still exists: leased, failed before, not due yet, or queued."""
    if leased:
        return HandleState.RUNNING
    if attempts > 0:
        return HandleState.RETRYING
    return HandleState.SCHEDULED if due_at > now else HandleState.QUEUED


def live_step(step: str, *, delivery_id: str, leased: bool, attempts: int, due_at: float, started_at: float | None,
              now: float, note: tuple[str | None, str | None], cancel_requested: bool) -> StepHandle:
    """The :class:`StepHandle` of a delivery that still exists (``note``: its last error and progress; a
    cancel request shows only while it is leased)."""
    error, progress_json = note
    return StepHandle(step=step, state=live_state(leased, attempts, due_at, now), delivery_id=delivery_id,
                      attempts=attempts, due_at=None if leased else due_at, started_at=started_at, error=error,
                      progress_json=progress_json, cancel_requested=leased and cancel_requested)


def finished_step(step: str, state: str, delivery_id: str | None, attempts: int, started_at: float | None,
                  finished_at: float | None, error: str | None, result_json: str | None,
                  progress_json: str | None) -> StepHandle:
    """The :class:`StepHandle` of a finished record (a row of a backend's handles table)."""
    return StepHandle(step=step, state=HandleState(state), delivery_id=delivery_id, attempts=attempts,
                      started_at=started_at, finished_at=finished_at, error=error, result_json=result_json,
                      progress_json=progress_json)


def finish_json(state: HandleState, *, delivery_id: str | None, attempts: int, started_at: float | None,
                finished_at: float | None, error: str | None = None, result_json: str | None = None) -> str:
    """The text of a finished record (``finished_at`` None: the backend appends its own clock's time,
    see :func:`finish_json_open`)."""
    rec: dict[str, Any] = {"s": state.value, "a": attempts, "d": delivery_id, "st": started_at}
    if error is not None:
        rec["e"] = error
    if result_json is not None:
        rec["r"] = result_json
    if finished_at is not None:
        rec["f"] = finished_at
    return json.dumps(rec, separators=(",", ":"))


def json_text(text: str) -> str:
    """``text`` as a JSON string (the common case of an id of letters and digits without ``json.dumps``)."""
    return f'"{text}"' if text.isalnum() else json.dumps(text)


def finish_json_open(state: HandleState, *, delivery_id: str | None, attempts: int, started_at: float | None,
                     error: str | None = None, result_json: str | None = None) -> str:
    """A finished record without its closing brace, for a script to append ``,"f":<time>}`` (built by hand:
    the Redis backend writes one per acknowledgement)."""
    head = (f'{{"s":"{state.value}","a":{int(attempts)},"d":{"null" if delivery_id is None else json_text(delivery_id)}'
            f',"st":{"null" if started_at is None else repr(float(started_at))}')
    if error is not None:
        head += ',"e":' + json.dumps(error)
    if result_json is not None:
        head += ',"r":' + json.dumps(result_json)
    return head


def step_from_finish(step: str, text: str, progress_json: str | None = None) -> StepHandle:
    """The :class:`StepHandle` of a finished record's text."""
    rec = json.loads(text)
    return StepHandle(step=step, state=HandleState(rec["s"]), delivery_id=rec.get("d"), attempts=int(rec.get("a", 0)),
                      started_at=rec.get("st"), finished_at=rec.get("f"), error=rec.get("e"),
                      result_json=rec.get("r"), progress_json=progress_json)


def event_handle(event_id: str, info: tuple[str, str, float], steps: Iterable[StepHandle]) -> EventHandle:
    """An :class:`EventHandle` from (topic, trace id, emitted at) and its steps (sorted by name here)."""
    topic, trace_id, emitted_at = info
    return EventHandle(event_id=event_id, topic=topic, trace_id=trace_id, emitted_at=emitted_at,
                       steps=tuple(sorted(steps, key=lambda s: s.step)))
