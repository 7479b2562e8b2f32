"""What each job type does. The processor step imports this with a relative import (``from .handlers``)."""

from __future__ import annotations

import math
from typing import Any

from motia_py import NonRetryableError
from services.email import send_email

_OPERATIONS = {
    "sum": lambda xs: sum(xs),
    "mean": lambda xs: sum(xs) / len(xs) if xs else 0,
    "square": lambda xs: [x * x for x in xs],
    "double": lambda xs: [x * 2 for x in xs],
}


async def run_email(payload: dict[str, Any]) -> dict[str, Any]:
    """Send the email described by ``payload`` (``to``, ``subject``, ``body``)."""
    return await send_email(str(payload.get("to", "")), str(payload.get("subject", "")),
                            str(payload.get("body", "")))


async def run_data(payload: dict[str, Any]) -> dict[str, Any]:
    """Apply ``operation`` (sum, mean, square, double) to ``numbers``.

    Raises:
        NonRetryableError: an unknown operation, a value that is not a number, or a result too large for
            a float (it could not be stored, and retrying gives the same overflow).
    """
    operation = payload.get("operation", "sum")
    numbers = payload.get("numbers", [])
    if operation not in _OPERATIONS:
        raise NonRetryableError(f"unknown operation {operation!r}; use one of {', '.join(_OPERATIONS)}")
    if not isinstance(numbers, list) or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                                 for x in numbers):
        raise NonRetryableError("'numbers' must be a list of numbers")
    value = _OPERATIONS[operation](numbers)
    if not all(math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
        raise NonRetryableError(f"the {operation} of these numbers overflows a float")
    return {"operation": operation, "value": value}


async def run_job(job_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one attempt of a job and return its result."""
    if job_type == "email":
        return await run_email(payload)
    return await run_data(payload)
