"""Traces: every handler run recorded against its trace id, through the backend, off the hot path.

A run record holds the step, what triggered it (topic and event id, or route), attempt, start,
duration, outcome, error, the events it emitted (topic and id) and the log lines it wrote. Records are
buffered in memory and written in batches; retention by age and count is applied as they are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii
from typing import Any, Final

from msgspec import Struct

from .backends.base import Backend, TraceRun
from .errors import BackendError
from .handle_codec import MIN_PREFIX, unique
from .logs import LogSink, _to_logging
from .runs import Outcome, RunRecord

MAX_LOG_LINES_PER_RUN = 50
_INF: Final = float("inf")
_PRUNE_EVERY_S = 30.0


class TraceSettings(Struct, frozen=True):
    """Retention of traces: how old and how many (the oldest go first)."""

    enabled: bool = True
    max_age_s: float = 24 * 3600.0
    max_traces: int = 10_000
    flush_interval_s: float = 0.2


def run_to_json(rec: RunRecord, logs: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The stored form of one run."""
    return {
        "trace_id": rec.trace_id, "step": rec.step, "kind": rec.kind, "topic": rec.topic, "attempt": rec.attempt,
        "started_at": rec.started_at, "duration_ms": round(rec.duration_s * 1000, 3), "outcome": rec.outcome,
        "error": rec.error, "event_id": rec.event_id, "source": rec.source,
        "emitted": [{"topic": t, "event_id": i} for t, i in zip(rec.emitted, rec.emitted_ids, strict=False)],
        "logs": [{k: v for k, v in line.items() if k not in ("trace_id", "step", "topic", "attempt", "flow")}
                 for line in logs],
    }


_dumps = json.JSONEncoder(default=str, separators=(",", ":")).encode
_string = encode_basestring_ascii  # a str as _dumps writes it (a str enum: its value)


def _text(value: str | None) -> str:
    return "null" if value is None else _string(value)


def run_json(rec: RunRecord, logs: Sequence[dict[str, Any]] = ()) -> str:
    """:func:`run_to_json` as JSON text: the text ``json.dumps`` writes, the common record (no log lines,
    finite times) built directly (about a quarter of the time; a worker writes one per run)."""
    started, duration = rec.started_at, round(rec.duration_s * 1000, 3)
    if (logs or type(rec.attempt) is not int or type(started) is not float or type(duration) is not float
            or not (-_INF < started < _INF and -_INF < duration < _INF)):
        return _dumps(run_to_json(rec, logs))
    emitted = ",".join([f'{{"topic":{_string(t)},"event_id":{_string(i)}}}'
                        for t, i in zip(rec.emitted, rec.emitted_ids, strict=False)])
    return (f'{{"trace_id":{_string(rec.trace_id)},"step":{_string(rec.step)},"kind":{_string(rec.kind)},'
            f'"topic":{_text(rec.topic)},"attempt":{int.__repr__(rec.attempt)},"started_at":{started!r},'
            f'"duration_ms":{duration!r},"outcome":{_string(rec.outcome)},"error":{_text(rec.error)},'
            f'"event_id":{_text(rec.event_id)},"source":{_text(rec.source)},"emitted":[{emitted}],"logs":[]}}')


class TraceRecorder:
    """Observer of the router: buffers run records and log lines, writes them in batches."""

    def __init__(self, backend: Backend, settings: TraceSettings | None = None,
                 downstream: LogSink | None = None) -> None:
        self.backend = backend
        self.settings = settings or TraceSettings()
        self._downstream = downstream or _to_logging
        self._buffer: list[tuple[RunRecord, Sequence[dict[str, Any]]]] = []
        self._logs: OrderedDict[tuple[str, str, int], list[dict[str, Any]]] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._recorded = asyncio.Event()  # set by the first run recorded after a flush: an idle writer sleeps

    def log_sink(self, record: dict[str, Any]) -> None:
        """Forward a log line and keep it for its run's record."""
        self._downstream(record)
        trace, step = record.get("trace_id"), record.get("step")
        if trace and step and record.get("source") != "motia":
            key = (str(trace), str(step), int(record.get("attempt") or 1))
            lines = self._logs.setdefault(key, [])
            if len(lines) < MAX_LOG_LINES_PER_RUN:
                lines.append(record)
            while len(self._logs) > 10_000:  # lines of runs that never finish here (killed elsewhere)
                self._logs.popitem(last=False)

    def observe(self, rec: RunRecord) -> None:
        """Record one finished run: kept as it is, encoded in a batch when written."""
        logs = self._logs.pop((rec.trace_id, rec.step, rec.attempt), ()) if self._logs else ()
        if not self._buffer:
            self._recorded.set()
        self._buffer.append((rec, logs))
        if len(self._buffer) >= 2000:
            self._wake.set()

    def start(self) -> None:
        """Start the background writer."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="motia-traces")

    async def _run(self) -> None:
        last_prune = 0.0
        while True:
            if not self._buffer:  # nothing to write: no timer until a run is recorded (or it is time to prune)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._recorded.wait(), _PRUNE_EVERY_S)
            self._recorded.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.flush_interval_s)
            self._wake.clear()
            await self.flush()
            if time.time() - last_prune > _PRUNE_EVERY_S:
                last_prune = time.time()
                with contextlib.suppress(BackendError):
                    await self.backend.traces_prune(time.time() - self.settings.max_age_s,
                                                    self.settings.max_traces)

    async def flush(self) -> None:
        """Write what is buffered (kept for the next try when the backend fails)."""
        if not self._buffer:
            return
        pending, self._buffer = self._buffer, []
        batch = [TraceRun(rec.trace_id, rec.started_at, run_json(rec, logs)) for rec, logs in pending]
        try:
            await self.backend.traces_add(batch)
        except BackendError:
            self._buffer = pending[-10_000:] + self._buffer

    async def stop(self) -> None:
        """Flush and stop the writer."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(BackendError):
            await self.flush()


async def find_trace(backend: Backend, ref: str, scan: int) -> tuple[str, list[dict[str, Any]]]:
    """(trace id, its runs) of the trace ``ref`` names: its id, or a unique prefix of at least 6 characters
    among the ``scan`` most recently active traces. No runs: no such trace.

    Raises:
        AmbiguousIdError: the prefix matches several traces (listed).
    """
    runs = [json.loads(r) for r in await backend.traces_get(ref)]
    if runs or len(ref.strip()) < MIN_PREFIX:
        return ref, runs
    ref = ref.strip()
    candidates = [t for t in await backend.traces_recent(scan) if t.startswith(ref)]
    if not candidates:
        return ref, []
    trace_id = unique(ref, sorted(candidates), "trace")
    return trace_id, [json.loads(r) for r in await backend.traces_get(trace_id)]


def summarize(trace_id: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One line of ``trace list``: when, what started it, how many runs, and the status."""
    runs = sorted(runs, key=lambda r: r["started_at"])
    outcomes = {_outcome(r["outcome"]) for r in runs}
    status = ("failed" if any(o is not None and o.failed for o in outcomes)
              else "retried" if any(o is not None and o.retried for o in outcomes) else "ok")
    start = runs[0]["started_at"] if runs else 0.0
    end = max((r["started_at"] + r["duration_ms"] / 1000 for r in runs), default=start)
    roots = [r for r in runs if not r.get("source")]
    root = roots[0] if roots else (runs[0] if runs else {})
    return {"trace_id": trace_id, "started_at": start, "duration_ms": round((end - start) * 1000, 3),
            "entry": root.get("topic"), "steps": sorted({r["step"] for r in runs}), "runs": len(runs),
            "status": status, "errors": [r["error"] for r in runs if r.get("error")][:5]}


def build_tree(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs nested under the run whose emitted event triggered them (roots: triggered from outside)."""
    by_event: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(runs, key=lambda r: (r["started_at"], r["attempt"])):
        by_event.setdefault(r.get("event_id") or "", []).append({**r, "children": []})
    emitted_by: dict[str, dict[str, Any]] = {}
    nodes = [n for group in by_event.values() for n in group]
    for n in nodes:
        for e in n.get("emitted", []):
            emitted_by[e["event_id"]] = n
    roots = []
    for n in nodes:
        parent = emitted_by.get(n.get("event_id") or "")
        if parent is not None and parent is not n:
            parent["children"].append(n)
        else:
            roots.append(n)
    return roots


def _outcome(value: str) -> Outcome | None:
    """The outcome a stored run record names (None for a value this version does not know)."""
    try:
        return Outcome(value)
    except ValueError:
        return None


def render_tree(runs: list[dict[str, Any]]) -> str:
    """The text tree ``motia-py trace ID`` prints: one line per run with ``├─``/``└─`` branches, and under
    each run its error and log lines (with their fields)."""
    lines: list[str] = []

    def walk(node: dict[str, Any], prefix: str, branch: str, below: str) -> None:
        outcome = _outcome(node["outcome"])
        mark = outcome.mark if outcome is not None else str(node["outcome"])
        when = time.strftime("%H:%M:%S", time.localtime(node["started_at"]))
        lines.append(f"{prefix}{branch}{node['step']} <- {node['topic']}  attempt {node['attempt']}  "
                     f"{node['duration_ms']:.1f} ms  {mark}  ({when})")
        inner = prefix + below + ("│  " if node["children"] else "   ")
        if node.get("error"):
            lines.append(f"{inner}! {node['error']}")
        for log in node.get("logs", [])[:5]:
            fields = " ".join(f"{k}={_short(v)}" for k, v in log.items() if k not in _LOG_KEYS)
            text = f"{inner}[{log.get('level', 'info')}] {log.get('msg', '')}"
            lines.append(f"{text}  {fields}" if fields else text)
        children = node["children"]
        for i, child in enumerate(children):
            last = i == len(children) - 1
            walk(child, prefix + below, "└─ " if last else "├─ ", "   " if last else "│  ")

    for root in build_tree(runs):
        walk(root, "", "", "")
    return "\n".join(lines)


_LOG_KEYS = frozenset({"ts", "level", "msg"})


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
