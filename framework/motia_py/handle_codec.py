"""The light half of job handles, on every worker's path: encoding results and progress, ``at`` as a
delay, id prefixes, and the retention janitor. What callers get back (:class:`~motia_py.handles.EventStatus`
and the lookups) is in :mod:`motia_py.handles`, imported only by what asks for a status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from .backends.base import HandleStore
from .errors import AmbiguousIdError, BackendError, InvalidEmitError, UnknownEventError
from .types import Clock

MIN_PREFIX: Final = 6
"""The shortest id prefix accepted in place of a full id."""
DEFAULT_DEDUP_WINDOW_S: Final = 86_400.0
"""How long an idempotency key is held when neither the emit nor a subscriber says."""
MAX_CANDIDATES: Final = 10
"""How many matching ids an ambiguous prefix lists."""


# -- what handlers and emitters hand in ----------------------------------------------------------------
def _dumps(value: Any) -> str:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        value = dump(mode="json")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_result(value: Any, max_bytes: int) -> tuple[str | None, str | None]:
    """A handler's return value as stored JSON text, or (None, why it cannot be stored).

    ``None`` is no result. A pydantic model is stored as its JSON dump; anything else must be JSON
    within ``max_bytes`` (the payload limit).
    """
    if value is None:
        return None, None
    try:
        text = _dumps(value)
    except (TypeError, ValueError) as exc:
        return None, f"it is not JSON ({exc})"
    if len(text) > max_bytes and len(text.encode()) > max_bytes:
        return None, f"it is {len(text.encode())} bytes of JSON; the limit is {max_bytes}"
    return text, None


def encode_progress(fraction: float | None, message: str | None, fields: Mapping[str, Any], now: float,
                    max_bytes: int) -> str:
    """The JSON text of one progress report: ``fraction``, ``message``, the extra fields and ``at``.

    Raises:
        InvalidEmitError: ``fraction`` is not a number between 0 and 1, or the report is not JSON or
            over ``max_bytes``.
    """
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, int | float)
                                 or not 0.0 <= fraction <= 1.0):
        raise InvalidEmitError(f"progress fraction must be a number from 0 to 1, got {fraction!r}")
    report = {**fields, "fraction": fraction, "message": None if message is None else str(message), "at": now}
    try:
        text = _dumps(report)
    except (TypeError, ValueError) as exc:
        raise InvalidEmitError(f"progress fields must be JSON: {exc}") from exc
    if len(text.encode()) > max_bytes:
        raise InvalidEmitError(f"a progress report is {len(text.encode())} bytes; the limit is {max_bytes}")
    return text


def delay_until(at: datetime, now: float) -> float:
    """Seconds from ``now`` (epoch seconds) until ``at`` (0 when past).

    Raises:
        InvalidEmitError: ``at`` is not a timezone-aware datetime.
    """
    if not isinstance(at, datetime):
        raise InvalidEmitError(f"'at' must be a datetime, got {type(at).__name__}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidEmitError(f"'at' must be timezone-aware (e.g. datetime.now(UTC) + timedelta(hours=1)), "
                               f"got the naive datetime {at.isoformat()}")
    return max(0.0, at.timestamp() - now)


# -- looking events up ----------------------------------------------------------------------------------
def check_prefix(ref: str) -> str:
    """``ref`` stripped; raise UnknownEventError when it is shorter than :data:`MIN_PREFIX`."""
    ref = ref.strip()
    if len(ref) < MIN_PREFIX:
        raise UnknownEventError(f"'{ref}' is too short: give the event id or at least {MIN_PREFIX} of its characters")
    return ref


def unique(ref: str, candidates: list[str], what: str) -> str:
    """The one candidate ``ref`` names (itself when listed).

    Raises:
        AmbiguousIdError: several candidates (they are listed).
    """
    if ref in candidates or len(candidates) == 1:
        return ref if ref in candidates else candidates[0]
    shown = "\n".join(f"  {c}" for c in candidates[:MAX_CANDIDATES])
    more = " (and more)" if len(candidates) > MAX_CANDIDATES else ""
    raise AmbiguousIdError(f"'{ref}' matches {len(candidates)} {what}s{more}; give more characters:\n{shown}",
                           candidates[:MAX_CANDIDATES])


# -- retention ------------------------------------------------------------------------------------------
class HandleJanitor:
    """Prunes finished handles by age and count every ``interval_s`` (jittered), in the background.

    Args:
        backend: whose handles to prune.
        max_age_s: a finished handle older than this goes.
        max_count: at most this many finished handles are kept (the oldest go first).
        clock: epoch seconds.
    """

    def __init__(self, backend: HandleStore, max_age_s: float, max_count: int, clock: Clock = time.time,
                 interval_s: float = 60.0) -> None:
        self.backend = backend
        self.max_age_s = max_age_s
        self.max_count = max_count
        self.clock = clock
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start pruning in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="motia-handles-retention")

    async def prune(self) -> int:
        """Prune once; how many handles went."""
        return await self.backend.handles_prune(self.clock() - self.max_age_s, self.max_count)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s * (0.5 + random.random()))
            with contextlib.suppress(BackendError):  # the next round tries again; retention is not urgent
                await self.prune()

    async def stop(self) -> None:
        """Stop pruning."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
