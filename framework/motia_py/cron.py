"""Cron expressions: parsing and the pure ``next_fire(schedule, after)``.

Expressions have 5 fields (minute first), 6 fields with **seconds first** (``*/10 * * * * *`` fires
every ten seconds), or 7: seconds first and a year last (``0 0 9 * * 1 *``), the form of Motia 1.0's
engine. croniter puts seconds last by default; we pass ``second_at_beginning``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from msgspec import Struct

from . import check_cache
from .errors import CronExpressionError

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

# croniter and zoneinfo (about 2 ms: it reads sysconfig) are imported by the functions that use them: a
# project without cron steps never loads them.


class CronSchedule(Struct, frozen=True):
    """A parsed cron expression in a time zone."""

    expression: str
    timezone: str = "UTC"

    @property
    def has_seconds(self) -> bool:
        """True for the 6- and 7-field forms (seconds first)."""
        return len(self.expression.split()) in (6, 7)

    @property
    def tz(self) -> ZoneInfo:
        """The schedule's time zone."""
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.timezone)


def parse_cron(expression: str, timezone: str = "UTC") -> CronSchedule:
    """Parse and check a cron expression.

    Raises:
        CronExpressionError: naming the field (``cron`` or ``timezone``) that is wrong.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise CronExpressionError("'cron' must be a non-empty expression", field="cron")
    expr = " ".join(expression.split())
    n = len(expr.split())
    if n not in (5, 6, 7):
        raise CronExpressionError(
            f"cron expression '{expression}' has {n} fields; expected 5 (minute hour day month weekday), "
            "6 with seconds first (second minute hour day month weekday) or 7 with a year last",
            field="cron",
            hint="'*/10 * * * * *' fires every 10 s; '0 * * * *' fires every hour",
        )
    _check_ranges(expr, expression)
    key = f"{expr}\x00{timezone}"
    if check_cache.passed("cron", key):  # checked by an earlier discovery: no croniter import
        _zone(timezone)
        return CronSchedule(expression=expr, timezone=timezone)
    from croniter import CroniterBadDateError, croniter

    try:
        valid = croniter.is_valid(expr, second_at_beginning=True)
    except Exception:  # croniter raises more than its own errors on hostile input (huge numbers)
        valid = False
    if not valid:
        raise CronExpressionError(f"cron expression '{expression}' is invalid", field="cron")
    zone = _zone(timezone)
    try:
        croniter(expr, datetime(2026, 1, 1, tzinfo=zone), second_at_beginning=True).get_next(datetime)
    except CroniterBadDateError as exc:
        raise CronExpressionError(f"cron expression '{expression}' never fires", field="cron",
                                  hint="check the day and month fields (e.g. February has no 31st)") from exc
    except Exception as exc:
        raise CronExpressionError(f"cron expression '{expression}' is invalid: {exc}", field="cron") from exc
    check_cache.remember("cron", key)
    return CronSchedule(expression=expr, timezone=timezone)


_FIELDS_5 = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_FIELDS_6 = (("second", 0, 59), *_FIELDS_5)
_FIELDS_7 = (*_FIELDS_6, ("year", 1970, 2099))


def _check_ranges(expr: str, shown: str) -> None:
    """Each numeric value and step within its field's range (croniter accepts ``*/61``, which would
    silently fire once an hour): a :class:`CronExpressionError` naming the field and its range."""
    parts = expr.split()
    fields = {5: _FIELDS_5, 6: _FIELDS_6, 7: _FIELDS_7}[len(parts)]
    for text, (name, low, high) in zip(parts, fields, strict=True):
        for item in text.split(","):
            base, _, step = item.partition("/")
            numbers = [n for n in base.split("-") if n.isdigit()]
            bad = next((int(n) for n in numbers if not low <= int(n) <= high), None)
            if bad is not None:
                raise CronExpressionError(f"cron expression '{shown}': {bad} is out of range for the {name} field "
                                          f"({low}-{high})", field="cron")
            if step and step.isdigit() and not 1 <= int(step) <= high - low + 1:
                raise CronExpressionError(f"cron expression '{shown}': step /{step} is out of range for the {name} "
                                          f"field (1-{high - low + 1})", field="cron",
                                          hint=f"'*/{min(int(step), high)}' at most; a longer period needs "
                                               "another field")


def _zone(timezone: str) -> ZoneInfo:
    """The time zone named ``timezone``; anything else is a :class:`CronExpressionError` on ``timezone``.

    ``ZoneInfo`` reads a file named after the key, so a folder of the zone database (``America``), an
    over-long name or a NUL byte raise ``OSError``/``ValueError`` rather than ``ZoneInfoNotFoundError``.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    shown = timezone if len(timezone) <= 60 else timezone[:57] + "..."
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise CronExpressionError(
            f"unknown time zone {shown!r}", field="timezone", hint="use an IANA name such as 'Europe/Paris'"
        ) from exc


def next_fire(schedule: CronSchedule, after: datetime) -> datetime:
    """The first fire time strictly after ``after``, as an aware datetime in UTC (the schedule's zone
    decides *which* instants fire; ``.astimezone(schedule.tz)`` shows them in local time)."""
    if after.tzinfo is None:
        raise ValueError("next_fire needs a timezone-aware datetime")
    local = after.astimezone(schedule.tz)
    from croniter import croniter

    it = croniter(schedule.expression, local, second_at_beginning=True)
    result: datetime = it.get_next(datetime)
    # compare instants, not wall times: within one zone Python ignores `fold`, so 01:00 EST would
    # count as "not after" 01:00 EDT on the fall-back night
    while result.timestamp() <= after.timestamp():  # croniter rounds sub-second starts down
        result = croniter(schedule.expression, result, second_at_beginning=True).get_next(datetime)
    # UTC: a local time on the fall-back night is ambiguous and Python never equates it with another zone
    return result.astimezone(UTC)


def fires_between(schedule: CronSchedule, start: datetime, end: datetime, limit: int = 1000) -> list[datetime]:
    """Every fire time ``t`` with ``start < t <= end`` (at most ``limit`` of them)."""
    out: list[datetime] = []
    t = start
    while len(out) < limit:
        t = next_fire(schedule, t)
        if t > end:
            break
        out.append(t)
    return out


def describe(schedule: CronSchedule) -> str:
    """A short description in words, e.g. ``every 10 seconds``."""
    fields = schedule.expression.split()
    sec = fields[0] if schedule.has_seconds else "0"
    rest = fields[1:6] if schedule.has_seconds else fields
    minute, hour, dom, month, dow = rest
    if len(fields) == 7 and fields[6] != "*":  # a year: only the describer says it right
        return f"{_in_words(schedule.expression)} ({schedule.timezone})"
    if all(f == "*" for f in (hour, dom, month, dow)):
        if schedule.has_seconds and minute == "*":
            if sec == "*":
                return "every second"
            if sec.startswith("*/"):
                return f"every {sec[2:]} seconds"
        if not schedule.has_seconds or sec == "0":
            if minute == "*":
                return "every minute"
            if minute.startswith("*/"):
                return f"every {minute[2:]} minutes"
            if minute.isdigit():
                return f"every hour at minute {minute}"
    if all(f == "*" for f in (dom, month, dow)) and minute.isdigit() and hour.isdigit() and sec in ("0", "00"):
        return f"every day at {int(hour):02d}:{int(minute):02d} {schedule.timezone}"
    return f"{_in_words(schedule.expression)} ({schedule.timezone})"


def _in_words(expression: str) -> str:
    """Any expression in words, by cron-descriptor (which reads 6 fields with seconds first, as we do)."""
    try:
        from cron_descriptor import Options, get_description

        options = Options()
        options.use_24hour_time_format = True
        words = str(get_description(expression, options))
    except Exception:  # a form the describer does not know: show the expression itself
        return f"cron '{expression}'"
    return words[:1].lower() + words[1:]

