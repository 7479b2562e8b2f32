"""An envelope's JSON text (how the Redis backend stores events) reads back as the envelope it was."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from motia_py.backends.records import Envelope

texts = st.text(st.characters(blacklist_categories=()), max_size=10)  # lone surrogates too
maybe = st.none() | texts


@given(st.builds(Envelope, id=texts, topic=texts, data_json=texts, trace_id=texts,
                 emitted_at=st.floats(allow_nan=False), group_id=maybe, source=maybe, traceparent=maybe))
def test_an_envelope_reads_back_from_its_json(env: Envelope) -> None:
    text = env.to_json()
    assert Envelope.from_json(text) == env
    assert Envelope.from_json(text.encode()) == env


def test_an_envelope_written_by_an_older_version_reads_with_its_missing_fields_empty() -> None:
    text = json.dumps({"id": "e", "topic": "t", "data": "{}", "trace_id": "e", "emitted_at": 5, "future": 1})
    assert Envelope.from_json(text) == Envelope(id="e", topic="t", data_json="{}", trace_id="e", emitted_at=5.0)


def test_text_that_is_no_envelope_is_refused() -> None:
    with pytest.raises(ValueError):
        Envelope.from_json("{not json")
    with pytest.raises(KeyError):
        Envelope.from_json('{"id": "e"}')
