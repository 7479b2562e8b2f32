"""A pretend email service: the part of a real app that talks to an SMTP server or an email API."""

from __future__ import annotations

from motia_py import NonRetryableError
from services.jobs import RetryableJobError


class EmailDeliveryError(RetryableJobError):
    """The mail server did not accept the message this time."""


async def send_email(to: str, subject: str, body: str) -> dict[str, str]:
    """"Send" an email and return a receipt.

    Raises:
        NonRetryableError: ``to`` is not an address (no ``@``); trying again cannot help.
        EmailDeliveryError: the server refused it (addresses containing ``fail``, for the demo).
    """
    if "@" not in to:
        raise NonRetryableError(f"invalid email address {to!r}")
    if "fail" in to:
        raise EmailDeliveryError(f"mail server refused {to}")
    return {"to": to, "subject": subject, "status": "sent"}
