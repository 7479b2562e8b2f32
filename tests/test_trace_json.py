"""A run record's JSON text: the fast form the trace writer builds is the text ``json.dumps`` writes."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from motia_py.runs import Outcome, RunKind, RunRecord
from motia_py.tracing import run_json, run_to_json

dumps = json.JSONEncoder(default=str, separators=(",", ":")).encode
texts = st.text(max_size=12)  # any character: quotes, controls, non-ASCII, surrogates
ids = st.lists(texts, max_size=3)


@st.composite
def records(draw: st.DrawFn) -> RunRecord:
    emitted = draw(ids)
    return RunRecord(
        step=draw(texts), trace_id=draw(texts), topic=draw(texts), attempt=draw(st.integers(-5, 10**20)),
        started_at=draw(st.floats(allow_nan=True, allow_infinity=True)),
        duration_s=draw(st.floats(allow_nan=True, allow_infinity=True)),
        outcome=draw(st.sampled_from(Outcome)), error=draw(st.none() | texts), emitted=tuple(emitted),
        delivery_id=draw(texts), event_id=draw(texts),
        emitted_ids=tuple(draw(st.lists(texts, max_size=len(emitted) + 1))),
        kind=draw(st.sampled_from(RunKind)), source=draw(st.none() | texts))


@given(records())
def test_a_record_is_written_as_json_dumps_writes_it(rec: RunRecord) -> None:
    assert run_json(rec) == dumps(run_to_json(rec))


def test_a_record_with_log_lines_keeps_them_and_their_odd_values() -> None:
    rec = RunRecord(step="S", trace_id="t", topic="x", attempt=1, started_at=1.5, duration_s=0.25,
                    outcome=Outcome.OK, error=None, emitted=(), delivery_id="d")
    logs = [{"msg": "hi", "level": "info", "ids": {1, 2}, "obj": object.__new__(type("Odd", (), {}))}]  # str()
    text = run_json(rec, logs)
    assert text == dumps(run_to_json(rec, logs))
    assert json.loads(text)["logs"][0] == {"msg": "hi", "level": "info", "ids": "{1, 2}", "obj": str(logs[0]["obj"])}
