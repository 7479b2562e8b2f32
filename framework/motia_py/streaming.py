"""A response whose body is sent while the handler still writes it (server-sent events and other streamed
answers of Motia 1.0's HTTP handlers): what a handler adapter returns instead of a finished response."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from msgspec import Struct, field


class StreamReply(Struct, frozen=True):
    """Status and headers, known before the first byte, then the body as it is written."""

    status: int
    chunks: AsyncIterator[bytes]
    headers: Mapping[str, str] = field(default_factory=dict)
