"""Cron: parsing (5 fields, or 6 with seconds first), the pure next_fire, fires_between and describe."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from motia_py.cron import CronSchedule, describe, fires_between, next_fire, parse_cron
from motia_py.errors import CronExpressionError, StepConfigError

NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# One table for next_fire: (expression, time zone, after, expected first fire in UTC). An expected
# value of None marks a local time that does not exist (DST spring-forward): croniter's choice is not
# pinned, only that it is sane (aware, strictly after `after`, within the next day).
NEXT_FIRE_CASES: list[tuple[str, str, datetime, datetime | None]] = [
    # 5 fields: minute hour day month weekday
    ("* * * * *", "UTC", utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 0, 1)),
    ("* * * * *", "UTC", utc(2026, 1, 1, 0, 0, 30), utc(2026, 1, 1, 0, 1)),
    ("*/15 * * * *", "UTC", utc(2026, 1, 1, 0, 7), utc(2026, 1, 1, 0, 15)),
    ("*/15 * * * *", "UTC", utc(2026, 1, 1, 0, 15), utc(2026, 1, 1, 0, 30)),
    ("0 * * * *", "UTC", utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 11, 0)),
    ("30 9 * * *", "UTC", utc(2026, 1, 1, 9, 29, 59), utc(2026, 1, 1, 9, 30)),
    ("30 9 * * *", "UTC", utc(2026, 1, 1, 9, 30), utc(2026, 1, 2, 9, 30)),
    ("0 0 * * 1", "UTC", utc(2026, 1, 1, 12, 0), utc(2026, 1, 5, 0, 0)),  # 2026-01-01 is a Thursday
    ("0 0 15 * *", "UTC", utc(2026, 1, 15, 0, 0), utc(2026, 2, 15, 0, 0)),
    ("0 8-10 * * *", "UTC", utc(2026, 1, 1, 10, 0), utc(2026, 1, 2, 8, 0)),
    # 6 fields: seconds first
    ("*/10 * * * * *", "UTC", utc(2026, 1, 1, 0, 0, 5), utc(2026, 1, 1, 0, 0, 10)),
    ("*/10 * * * * *", "UTC", utc(2026, 1, 1, 0, 0, 10), utc(2026, 1, 1, 0, 0, 20)),
    ("*/10 * * * * *", "UTC", utc(2026, 1, 1, 0, 0, 55), utc(2026, 1, 1, 0, 1, 0)),
    ("* * * * * *", "UTC", utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 0, 0, 1)),
    ("0 */5 * * * *", "UTC", utc(2026, 1, 1, 0, 3, 0), utc(2026, 1, 1, 0, 5, 0)),
    ("0 */5 * * * *", "UTC", utc(2026, 1, 1, 0, 5, 0), utc(2026, 1, 1, 0, 10, 0)),
    ("30 0 9 * * *", "UTC", utc(2026, 1, 1, 9, 0, 0), utc(2026, 1, 1, 9, 0, 30)),
    # sub-second `after`
    ("*/10 * * * * *", "UTC", utc(2026, 1, 1, 0, 0, 9, 999_999), utc(2026, 1, 1, 0, 0, 10)),
    ("*/10 * * * * *", "UTC", utc(2026, 1, 1, 0, 0, 10, 1), utc(2026, 1, 1, 0, 0, 20)),
    ("*/10 * * * * *", "UTC", utc(2026, 1, 1, 0, 0, 10, 500_000), utc(2026, 1, 1, 0, 0, 20)),
    ("* * * * * *", "UTC", utc(2026, 1, 1, 0, 0, 0, 500_000), utc(2026, 1, 1, 0, 0, 1)),
    ("* * * * *", "UTC", utc(2026, 1, 1, 0, 0, 0, 1), utc(2026, 1, 1, 0, 1)),
    ("* * * * *", "UTC", utc(2026, 1, 1, 0, 0, 59, 999_999), utc(2026, 1, 1, 0, 1)),
    # end of month / year rollover, leap day
    ("0 0 1 * *", "UTC", utc(2026, 1, 31, 12, 0), utc(2026, 2, 1, 0, 0)),
    ("0 0 31 * *", "UTC", utc(2026, 1, 31, 0, 0), utc(2026, 3, 31, 0, 0)),
    ("0 0 1 1 *", "UTC", utc(2026, 12, 31, 23, 59, 59), utc(2027, 1, 1, 0, 0)),
    ("59 23 31 12 *", "UTC", utc(2026, 12, 31, 23, 59), utc(2027, 12, 31, 23, 59)),
    ("*/10 * * * * *", "UTC", utc(2026, 12, 31, 23, 59, 55), utc(2027, 1, 1, 0, 0, 0)),
    ("0 0 29 2 *", "UTC", utc(2026, 3, 1, 0, 0), utc(2028, 2, 29, 0, 0)),
    # a time zone: 09:00 in Paris is 08:00Z in winter (CET) and 07:00Z in summer (CEST)
    ("0 9 * * *", "Europe/Paris", utc(2026, 1, 15, 0, 0), utc(2026, 1, 15, 8, 0)),
    ("0 9 * * *", "Europe/Paris", utc(2026, 7, 15, 0, 0), utc(2026, 7, 15, 7, 0)),
    ("0 9 * * *", "Europe/Paris", utc(2026, 1, 15, 8, 0), utc(2026, 1, 16, 8, 0)),
    ("0 0 * * *", "Asia/Tokyo", utc(2026, 1, 1, 12, 0), utc(2026, 1, 1, 15, 0)),
    # across the New York spring-forward (2026-03-08, 02:00 EST -> 03:00 EDT): 02:30 does not exist
    ("0 * * * *", "America/New_York", utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 0)),
    ("0 9 * * *", "America/New_York", utc(2026, 3, 7, 15, 0), utc(2026, 3, 8, 13, 0)),
    ("30 2 * * *", "America/New_York", utc(2026, 3, 7, 12, 0), None),
    ("30 2 * * *", "America/New_York", utc(2026, 3, 8, 5, 0), None),
    ("30 2 * * *", "America/New_York", utc(2026, 3, 8, 6, 59, 59), None),
    ("30 2 * * *", "America/New_York", utc(2026, 3, 8, 7, 0), None),
    # across the New York fall-back (2026-11-01, 02:00 EDT -> 01:00 EST)
    ("0 * * * *", "America/New_York", utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 5, 0)),
    ("0 * * * *", "America/New_York", utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7, 0)),
    ("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12, 0), utc(2026, 11, 1, 5, 30)),
]


@pytest.mark.parametrize(("expression", "tz", "after", "expected"), NEXT_FIRE_CASES)
def test_next_fire(expression: str, tz: str, after: datetime, expected: datetime | None) -> None:
    result = next_fire(parse_cron(expression, tz), after)
    assert result.tzinfo is not None
    assert result > after
    if expected is None:
        assert result - after <= timedelta(days=1)
        return
    assert result == expected
    assert result.utcoffset() == timedelta(0)  # returned in UTC; the schedule's zone picks the instants


def test_next_fire_over_the_fall_back_gives_strictly_increasing_utc_times() -> None:
    schedule = parse_cron("0 * * * *", "America/New_York")
    t = utc(2026, 11, 1, 3, 0)
    seen = []
    for _ in range(6):
        t = next_fire(schedule, t.astimezone(UTC))
        seen.append(t.astimezone(UTC))
    assert all(a < b for a, b in itertools.pairwise(seen))
    assert seen[0] == utc(2026, 11, 1, 4, 0)
    assert seen[-1] - seen[0] <= timedelta(hours=6)


def test_fires_between_over_the_fall_back_gives_strictly_increasing_utc_times() -> None:
    fires = fires_between(parse_cron("0 * * * *", "America/New_York"), utc(2026, 11, 1, 3, 0), utc(2026, 11, 1, 9, 0))
    in_utc = [f.astimezone(UTC) for f in fires]
    assert all(a < b for a, b in itertools.pairwise(in_utc))
    assert in_utc[0] == utc(2026, 11, 1, 4, 0)
    assert in_utc[-1] == utc(2026, 11, 1, 9, 0)


def test_next_fire_depends_only_on_the_instant_not_on_the_zone_of_after() -> None:
    schedule = parse_cron("0 * * * *", "America/New_York")
    after = utc(2026, 11, 1, 5, 0)  # 01:00 EDT; the next hour mark is 01:00 EST = 06:00Z
    assert next_fire(schedule, after) == utc(2026, 11, 1, 6, 0)
    assert next_fire(schedule, after.astimezone(NEW_YORK)).astimezone(UTC) == utc(2026, 11, 1, 6, 0)


def test_fires_between_over_the_fall_back_misses_no_tick() -> None:
    start, end = utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 7, 0)
    fires = fires_between(parse_cron("*/10 * * * * *", "America/New_York"), start, end, limit=10_000)
    assert len(fires) == 720  # 2 hours of 10-second ticks, every one of them
    assert utc(2026, 11, 1, 6, 0) in [f.astimezone(UTC) for f in fires]


def test_fires_between_over_the_spring_forward_misses_no_tick() -> None:
    start, end = utc(2026, 3, 8, 6, 0), utc(2026, 3, 8, 8, 0)
    fires = fires_between(parse_cron("*/10 * * * * *", "America/New_York"), start, end, limit=10_000)
    assert len(fires) == 720


@pytest.mark.parametrize(("expression", "tz", "after", "expected"), NEXT_FIRE_CASES)
def test_next_fire_accepts_after_in_any_zone(expression: str, tz: str, after: datetime,
                                             expected: datetime | None) -> None:
    schedule = parse_cron(expression, tz)
    in_tokyo = after.astimezone(ZoneInfo("Asia/Tokyo"))
    assert next_fire(schedule, in_tokyo) == next_fire(schedule, after)


def test_next_fire_returns_utc_instants_chosen_by_the_schedule_zone() -> None:
    schedule = parse_cron("0 9 * * *", "Europe/Paris")
    result = next_fire(schedule, utc(2026, 1, 15, 0, 0))
    assert result.utcoffset() == timedelta(0) and (result.hour, result.minute) == (8, 0)
    local = result.astimezone(schedule.tz)
    assert (local.hour, local.minute) == (9, 0)


def test_next_fire_needs_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire(parse_cron("* * * * *"), datetime(2026, 1, 1))


def test_next_fire_is_strictly_after_for_many_starts() -> None:
    schedule = parse_cron("*/10 * * * * *")
    start = utc(2026, 1, 1, 0, 0, 0)
    for micros in range(0, 30_000_000, 2_500_001):
        after = start + timedelta(microseconds=micros)
        result = next_fire(schedule, after)
        assert after < result <= after + timedelta(seconds=10)
        assert result.second % 10 == 0 and result.microsecond == 0


# --- fires_between ----------------------------------------------------------------------------------


def test_fires_between_excludes_start_and_includes_end() -> None:
    schedule = parse_cron("*/10 * * * * *")
    fires = fires_between(schedule, utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 0, 0, 30))
    assert [f.astimezone(UTC) for f in fires] == [
        utc(2026, 1, 1, 0, 0, 10), utc(2026, 1, 1, 0, 0, 20), utc(2026, 1, 1, 0, 0, 30)
    ]


def test_fires_between_respects_the_limit() -> None:
    fires = fires_between(parse_cron("* * * * * *"), utc(2026, 1, 1), utc(2026, 1, 2), limit=5)
    assert len(fires) == 5


def test_fires_between_an_empty_window_is_empty() -> None:
    assert fires_between(parse_cron("0 0 * * *"), utc(2026, 1, 1, 1, 0), utc(2026, 1, 1, 23, 0)) == []


# --- parsing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "tz", "field"),
    [
        ("* * *", "UTC", "cron"),
        ("* * * * * * * *", "UTC", "cron"),  # 7 fields (a year last) is valid: Motia 1.0
        ("61 * * * *", "UTC", "cron"),
        ("* 25 * * *", "UTC", "cron"),
        ("61 * * * * *", "UTC", "cron"),
        ("garbage", "UTC", "cron"),
        ("a b c d e", "UTC", "cron"),
        ("", "UTC", "cron"),
        ("   ", "UTC", "cron"),
        ("* * * * *", "Mars/Olympus", "timezone"),
        ("* * * * *", "", "timezone"),
        ("* * * * *", "../etc/passwd", "timezone"),
    ],
)
def test_invalid_expressions_and_time_zones_raise_cron_expression_error(expression: str, tz: str,
                                                                         field: str) -> None:
    with pytest.raises(CronExpressionError) as info:
        parse_cron(expression, tz)
    assert info.value.field == field
    assert isinstance(info.value, StepConfigError)


def test_wrong_field_count_explains_both_forms() -> None:
    with pytest.raises(CronExpressionError) as info:
        parse_cron("* * *")
    assert "3 fields" in str(info.value)
    assert info.value.hint is not None
    assert "*/10 * * * * *" in info.value.hint


def test_unknown_time_zone_hint_names_an_iana_zone() -> None:
    with pytest.raises(CronExpressionError) as info:
        parse_cron("* * * * *", "Paris")
    assert info.value.hint is not None
    assert "IANA" in info.value.hint


def test_non_string_expression_is_rejected() -> None:
    with pytest.raises(CronExpressionError):
        parse_cron(5)  # type: ignore[arg-type]


def test_parse_normalises_whitespace_and_keeps_the_zone() -> None:
    schedule = parse_cron("  */10   *  * * * * ", "Europe/Paris")
    assert schedule == CronSchedule(expression="*/10 * * * * *", timezone="Europe/Paris")
    assert schedule.has_seconds is True
    assert schedule.tz == ZoneInfo("Europe/Paris")
    assert parse_cron("0 9 * * *").has_seconds is False
    assert parse_cron("0 9 * * *").timezone == "UTC"


def test_expression_that_can_never_fire_is_rejected_at_parse_time() -> None:
    with pytest.raises(CronExpressionError) as info:
        parse_cron("0 0 31 2 *")
    assert info.value.field == "cron"


# --- describe ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "tz", "words"),
    [
        ("* * * * *", "UTC", "every minute"),
        ("*/5 * * * *", "UTC", "every 5 minutes"),
        ("15 * * * *", "UTC", "every hour at minute 15"),
        ("* * * * * *", "UTC", "every second"),
        ("*/10 * * * * *", "UTC", "every 10 seconds"),
        ("0 * * * * *", "UTC", "every minute"),
        ("0 */5 * * * *", "UTC", "every 5 minutes"),
        ("0 9 * * *", "UTC", "every day at 09:00 UTC"),
        ("30 7 * * *", "Europe/Paris", "every day at 07:30 Europe/Paris"),
        ("0 0 9 * * *", "UTC", "every day at 09:00 UTC"),
        ("0 9 * * 1-5", "UTC", "at 09:00, Monday through Friday (UTC)"),
        ("5 0 9 * * *", "UTC", "at 09:00:05 (UTC)"),
        ("0 0 L * *", "Europe/Paris", "at 00:00, on the last day of the month (Europe/Paris)"),
    ],
)
def test_describe_gives_words_for_common_schedules(expression: str, tz: str, words: str) -> None:
    assert describe(parse_cron(expression, tz)) == words


@pytest.mark.parametrize("zone", ["America", "A" * 300, "Europe/Paris\x00", "../../etc/passwd", ""])
def test_a_zone_that_is_a_folder_too_long_or_a_path_is_an_error_on_the_timezone_field(zone: str) -> None:
    with pytest.raises(CronExpressionError, match="unknown time zone") as info:
        parse_cron("* * * * *", zone)
    assert info.value.field == "timezone"


@pytest.mark.parametrize("expr", ["99999999999999999999 * * * *", "*/0 * * * *", "1-99999999 * * * *"])
def test_hostile_expressions_are_errors_on_the_cron_field(expr: str) -> None:
    with pytest.raises(CronExpressionError) as info:
        parse_cron(expr)
    assert info.value.field == "cron"


@pytest.mark.parametrize(("expression", "message"), [
    ("*/61 * * * *", "step /61 is out of range for the minute field (1-60)"),
    ("*/61 * * * * *", "step /61 is out of range for the second field (1-60)"),
    ("0 25 * * *", "25 is out of range for the hour field (0-23)"),
    ("0 0 32 * *", "32 is out of range for the day of month field (1-31)"),
    ("0 0 * 13 *", "13 is out of range for the month field (1-12)"),
    ("0 0 * * 1-8", "8 is out of range for the day of week field (0-7)"),
    ("0,75 * * * *", "75 is out of range for the minute field (0-59)"),
])
def test_out_of_range_values_and_steps_name_the_field_and_its_range(expression: str, message: str) -> None:
    with pytest.raises(CronExpressionError) as info:
        parse_cron(expression)
    assert message in str(info.value) and info.value.field == "cron"
