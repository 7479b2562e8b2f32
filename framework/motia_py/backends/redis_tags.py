"""The flow tag of a Redis delivery: its priority and flow-control keys, written in front of its envelope.

Every structure of the redis backend's queue (stream entries, delayed members, FIFO items, dead letters)
carries a delivery's envelope text verbatim, through retries, hand backs, lease expiry and replays. A
delivery with a priority other than 0 or with a key carries them there, as a prefix the Lua scripts read
with one ``string.match``::

    #<priority>|<rate key>|<concurrency key>|{"id": ...}

A key is empty when the delivery has none, else ``=`` followed by the key with ``%``, ``:``, ``{``, ``}``
and ``|`` percent-encoded (so it is one unambiguous field and one Redis key segment). An untagged
envelope (a JSON object) starts with ``{``.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote

_ESCAPES: Final = str.maketrans({"%": "%25", ":": "%3A", "{": "%7B", "}": "%7D", "|": "%7C"})


def _field(key: str | None) -> str:
    return "" if key is None else "=" + key.translate(_ESCAPES)


def _key(field: str) -> str | None:
    return unquote(field[1:]) if field else None


def tag(priority: int, rate_key: str | None, concurrency_key: str | None) -> str:
    """The prefix of a delivery's envelope text ('' for priority 0 without keys)."""
    if not priority and rate_key is None and concurrency_key is None:
        return ""
    return f"#{priority}|{_field(rate_key)}|{_field(concurrency_key)}|"


def untag(text: str) -> tuple[str, int, str | None, str | None]:
    """(envelope JSON, priority, rate key, concurrency key) of a stored envelope text."""
    if not text.startswith("#"):
        return text, 0, None, None
    priority, rate, conc, env = text[1:].split("|", 3)
    return env, int(priority), _key(rate), _key(conc)
