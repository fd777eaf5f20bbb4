"""Send windows (SPEC 11.3): the SendWindow model, its checks, zone lookup and next_opening. Pure."""

from __future__ import annotations

import bisect
import functools
import importlib.resources
import itertools
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tocsin.core.windows import (
    WEEKDAYS,
    SendWindow,
    Weekday,
    choose_zone,
    is_template,
    known_zone,
    next_opening,
    send_window_problems,
    timezone_problem,
)


def zone(name: str) -> zoneinfo.ZoneInfo:
    found = known_zone(name)
    assert found is not None, name
    return found


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def window(start: str, end: str, *days: Weekday) -> SendWindow:
    return SendWindow(start=start, end=end, days=days or WEEKDAYS)


BERLIN = zone("Europe/Berlin")
NEW_YORK = zone("America/New_York")
KOLKATA = zone("Asia/Kolkata")
UTC_ZONE = zone("UTC")


# --- the model -------------------------------------------------------------------------------------------


def test_the_dump_leaves_out_a_missing_timezone_and_all_seven_days() -> None:
    assert window("09:00", "17:00").model_dump(mode="json") == {"start": "09:00", "end": "17:00"}
    narrowed = SendWindow(timezone="{{ tz }}", days=("mon", "fri"), start="09:00", end="17:00")
    assert narrowed.model_dump(mode="json") == {
        "timezone": "{{ tz }}",
        "days": ["mon", "fri"],
        "start": "09:00",
        "end": "17:00",
    }
    assert SendWindow.model_validate(narrowed.model_dump(mode="json")) == narrowed


@pytest.mark.parametrize(
    "fields",
    [
        {"start": "09:00", "end": "09:00"},
        {"start": "9:00", "end": "17:00"},
        {"start": "09:00", "end": "24:00"},
        {"start": "09:00", "end": "17:00", "days": ()},
        {"start": "09:00", "end": "17:00", "days": ("Mon",)},
        {"start": "09:00", "end": "17:00", "colour": "red"},
    ],
)
def test_the_model_refuses_what_the_checks_refuse(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SendWindow.model_validate(fields)


def test_a_window_is_frozen_and_knows_when_it_is_overnight() -> None:
    night = window("22:00", "06:00")
    assert night.overnight and not window("06:00", "22:00").overnight
    with pytest.raises(ValidationError):
        night.start = "21:00"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("{{ tz }}", True), ("{% if x %}UTC{% endif %}", True), ("UTC{# note #}", True), ("Europe/Berlin", False)],
)
def test_is_template(text: str, expected: bool) -> None:
    assert is_template(text) is expected


# --- zones -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "US/Eastern", "Etc/GMT+5", "America/Argentina/Salta"])
def test_known_zone_finds_iana_names_and_links(name: str) -> None:
    found = known_zone(name)
    assert found is not None and found.key == name
    assert known_zone(name) is found  # loaded once


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "/usr/share/zoneinfo/UTC",
        "",
        "Not/AZone",
        "europe/berlin",
        "Europe/Berlin\x00",
        " UTC",
        "America",  # a directory of the wheel
        "zone.tab",  # a file of the wheel that is no zone
        "__init__.py",
        "Europe/../UTC",
        123,
        None,
        ["UTC"],
    ],
)
def test_known_zone_refuses_anything_but_a_zone_name(name: object) -> None:
    assert known_zone(name) is None


def test_known_zone_ignores_the_hosts_zone_database(tmp_path: Path) -> None:
    # A zone only the host's database has: zoneinfo.ZoneInfo finds it, known_zone does not.
    (tmp_path / "Mars").mkdir()
    with importlib.resources.files("tzdata.zoneinfo").joinpath("UTC").open("rb") as source:
        (tmp_path / "Mars" / "Olympus").write_bytes(source.read())
    zoneinfo.reset_tzpath([str(tmp_path)])
    try:
        assert zoneinfo.ZoneInfo.no_cache("Mars/Olympus").utcoffset(None) == timedelta(0)
        assert known_zone("Mars/Olympus") is None
    finally:
        zoneinfo.reset_tzpath()


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        (("Europe/Berlin", "Asia/Kolkata", "UTC"), "Europe/Berlin"),
        (("Mars/Base", "Asia/Kolkata", "Europe/Berlin"), "Asia/Kolkata"),
        ((None, None, "America/New_York"), "America/New_York"),
        (("{{ tz }}", "", "Europe/Berlin"), "Europe/Berlin"),
        ((None, "Mars/Base"), "UTC"),
        ((), "UTC"),
    ],
)
def test_choose_zone_takes_the_first_known_zone_else_utc(candidates: tuple[str | None, ...], expected: str) -> None:
    name, chosen = choose_zone(*candidates)
    assert name == expected and chosen.key == expected


def test_timezone_problem() -> None:
    assert timezone_problem("Asia/Kolkata", "default_timezone") is None
    unknown = timezone_problem("Mars/Base", "default_timezone")
    assert unknown is not None and (unknown.location, unknown.code) == ("default_timezone", "invalid_timezone")
    assert "'Mars/Base' is not a known IANA zone name" in unknown.message
    template = timezone_problem("{{ tz }}", "default_timezone")
    assert template is not None and template.code == "invalid_timezone"
    assert "a template is not allowed here" in template.message
    number = timezone_problem(5, "default_timezone")
    assert number is not None and number.code == "invalid_timezone" and "got 5" in number.message
    hidden = timezone_problem("Mars\nBase", "default_timezone")
    assert hidden is not None and "\n" not in hidden.message


# --- send_window_problems --------------------------------------------------------------------------------

LOCATION = "steps[0].send_window"


def test_a_valid_window_is_normalized() -> None:
    raw = {"timezone": "{{ tz }}", "days": ["FRI", "mon", "Fri", "wed"], "start": "9:05", "end": "17:30"}
    normalized, problems = send_window_problems(raw, LOCATION)
    assert problems == []
    assert normalized == {"timezone": "{{ tz }}", "days": ("mon", "wed", "fri"), "start": "09:05", "end": "17:30"}
    assert SendWindow.model_validate(normalized).days == ("mon", "wed", "fri")


def test_a_window_without_timezone_and_days_gets_every_day() -> None:
    normalized, problems = send_window_problems({"start": "22:00", "end": "06:00", "timezone": None}, LOCATION)
    assert problems == []
    assert SendWindow.model_validate(normalized) == window("22:00", "06:00")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (["09:00", "17:00"], [(LOCATION, "invalid_send_window")]),
        ("09:00-17:00", [(LOCATION, "invalid_send_window")]),
        ({"start": "09:00", "end": "17:00", "colour": "red"}, [(f"{LOCATION}.colour", "invalid_send_window")]),
        ({"end": "17:00"}, [(LOCATION, "invalid_send_window")]),
        ({"start": "09:00"}, [(LOCATION, "invalid_send_window")]),
        ({"start": "09:00", "end": "9:00"}, [(LOCATION, "invalid_send_window")]),
        ({"start": "24:00", "end": "17:00"}, [(f"{LOCATION}.start", "invalid_send_window")]),
        ({"start": "09:60", "end": "17:00"}, [(f"{LOCATION}.start", "invalid_send_window")]),
        ({"start": "09:00", "end": "17:00:00"}, [(f"{LOCATION}.end", "invalid_send_window")]),
        ({"start": "09:00", "end": "5pm"}, [(f"{LOCATION}.end", "invalid_send_window")]),
        (
            {"start": "09:00", "end": "\u0661\u0667:\u0660\u0660"},
            [(f"{LOCATION}.end", "invalid_send_window")],
        ),  # Arabic-Indic digits
        ({"start": 540, "end": "17:00"}, [(f"{LOCATION}.start", "invalid_send_window")]),
        ({"start": "09:00", "end": "17:00", "days": "mon"}, [(f"{LOCATION}.days", "invalid_send_window")]),
        ({"start": "09:00", "end": "17:00", "days": []}, [(f"{LOCATION}.days", "invalid_send_window")]),
        (
            {"start": "09:00", "end": "17:00", "days": ["mon", "tue", "monday", 3]},
            [(f"{LOCATION}.days[2]", "invalid_send_window"), (f"{LOCATION}.days[3]", "invalid_send_window")],
        ),
        ({"start": "09:00", "end": "17:00", "timezone": "Mars/Base"}, [(f"{LOCATION}.timezone", "invalid_timezone")]),
        ({"start": "09:00", "end": "17:00", "timezone": ""}, [(f"{LOCATION}.timezone", "invalid_timezone")]),
        ({"start": "09:00", "end": "17:00", "timezone": 1}, [(f"{LOCATION}.timezone", "invalid_timezone")]),
        ({"start": "09:00", "end": "17:00", "timezone": "{{ tz"}, [(f"{LOCATION}.timezone", "invalid_template")]),
        (
            {"start": "9", "end": "25:00", "days": ["xyz"], "timezone": "Nowhere", "x": 1},
            [
                (f"{LOCATION}.x", "invalid_send_window"),
                (f"{LOCATION}.timezone", "invalid_timezone"),
                (f"{LOCATION}.days[0]", "invalid_send_window"),
                (f"{LOCATION}.start", "invalid_send_window"),
                (f"{LOCATION}.end", "invalid_send_window"),
            ],
        ),
    ],
)
def test_send_window_problems(raw: object, expected: list[tuple[str, str]]) -> None:
    _, problems = send_window_problems(raw, LOCATION)
    assert [(problem.location, problem.code) for problem in problems] == expected
    assert all(problem.message and "\n" not in problem.message for problem in problems)


def test_an_unquoted_yaml_time_is_explained() -> None:
    # YAML 1.1 reads `end: 22:00` as 1320 (sexagesimal): the message says what happened.
    _, problems = send_window_problems({"start": "06:00", "end": 1320}, LOCATION)
    assert [problem.location for problem in problems] == [f"{LOCATION}.end"]
    assert "YAML reads an unquoted 22:00 as a number: put it in quotes" in problems[0].message


def test_start_equal_to_end_is_one_problem_at_the_window() -> None:
    _, problems = send_window_problems({"start": "7:30", "end": "07:30"}, LOCATION)
    assert [(problem.location, problem.code) for problem in problems] == [(LOCATION, "invalid_send_window")]
    assert "both 07:30" in problems[0].message


# --- next_opening: plain days ----------------------------------------------------------------------------

OFFICE = window("09:00", "17:00")


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (utc(2027, 1, 4, 8, 59, 59), utc(2027, 1, 4, 9)),
        (utc(2027, 1, 4, 9), None),  # start is inclusive
        (utc(2027, 1, 4, 16, 59, 59, 999999), None),
        (utc(2027, 1, 4, 17), utc(2027, 1, 5, 9)),  # end is exclusive
        (utc(2027, 1, 4, 23, 59), utc(2027, 1, 5, 9)),
        (utc(2027, 12, 31, 20), utc(2028, 1, 1, 9)),
    ],
)
def test_a_day_window(at: datetime, expected: datetime | None) -> None:
    assert next_opening(OFFICE, UTC_ZONE, at) == expected


def test_the_days_filter_skips_to_the_next_listed_day() -> None:
    fridays = window("09:00", "17:00", "fri")
    saturday = utc(2027, 1, 9, 10)
    assert next_opening(fridays, UTC_ZONE, saturday) == utc(2027, 1, 15, 9)
    assert next_opening(fridays, UTC_ZONE, utc(2027, 1, 15, 12)) is None
    assert next_opening(fridays, UTC_ZONE, utc(2027, 1, 15, 17)) == utc(2027, 1, 22, 9)
    weekdays = window("09:00", "17:00", "mon", "tue", "wed", "thu", "fri")
    assert next_opening(weekdays, UTC_ZONE, utc(2027, 1, 8, 17, 30)) == utc(2027, 1, 11, 9)


def test_at_may_come_in_any_offset_and_the_result_is_always_utc() -> None:
    pacific = timezone(timedelta(hours=-8))
    at = datetime(2027, 1, 4, 0, 30, tzinfo=pacific)  # 08:30 UTC
    opening = next_opening(OFFICE, UTC_ZONE, at)
    assert opening == utc(2027, 1, 4, 9) and opening is not None and opening.tzinfo is UTC
    assert next_opening(OFFICE, UTC_ZONE, datetime(2027, 1, 4, 1, tzinfo=pacific)) is None
    in_berlin = next_opening(OFFICE, BERLIN, datetime(2027, 1, 4, 7, tzinfo=BERLIN))
    assert in_berlin == utc(2027, 1, 4, 8) and in_berlin is not None and in_berlin.tzinfo is UTC


def test_a_naive_moment_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_opening(OFFICE, UTC_ZONE, datetime(2027, 1, 4, 9))


def test_a_window_in_a_half_hour_zone() -> None:
    # Asia/Kolkata is +05:30 all year: 09:00-18:00 local is 03:30-12:30 UTC.
    kolkata = window("09:00", "18:00")
    assert next_opening(kolkata, KOLKATA, utc(2027, 1, 4, 3)) == utc(2027, 1, 4, 3, 30)
    assert next_opening(kolkata, KOLKATA, utc(2027, 1, 4, 3, 30)) is None
    assert next_opening(kolkata, KOLKATA, utc(2027, 1, 4, 12, 29)) is None
    assert next_opening(kolkata, KOLKATA, utc(2027, 1, 4, 12, 30)) == utc(2027, 1, 5, 3, 30)
    # 20:00 UTC on Sunday is 01:30 on Monday there: a Monday-only window opens that morning.
    assert next_opening(window("09:00", "18:00", "mon"), KOLKATA, utc(2027, 1, 3, 20)) == utc(2027, 1, 4, 3, 30)


# --- next_opening: overnight -----------------------------------------------------------------------------

NIGHT = window("22:00", "06:00")
MONDAY_NIGHT = window("22:00", "06:00", "mon")


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (utc(2027, 1, 4, 21, 59), utc(2027, 1, 4, 22)),
        (utc(2027, 1, 4, 22), None),
        (utc(2027, 1, 4, 23, 30), None),
        (utc(2027, 1, 5, 0), None),
        (utc(2027, 1, 5, 3), None),
        (utc(2027, 1, 5, 5, 59), None),
        (utc(2027, 1, 5, 6), utc(2027, 1, 5, 22)),
        (utc(2027, 1, 5, 12), utc(2027, 1, 5, 22)),
    ],
)
def test_an_overnight_window(at: datetime, expected: datetime | None) -> None:
    assert next_opening(NIGHT, UTC_ZONE, at) == expected


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (utc(2027, 1, 4, 3), utc(2027, 1, 4, 22)),  # Monday 03:00 belongs to Sunday's night, not listed
        (utc(2027, 1, 4, 22, 30), None),
        (utc(2027, 1, 5, 3), None),  # Tuesday 03:00 belongs to Monday's night
        (utc(2027, 1, 5, 6), utc(2027, 1, 11, 22)),
        (utc(2027, 1, 5, 22, 30), utc(2027, 1, 11, 22)),  # Tuesday's night is not listed
        (utc(2027, 1, 3, 23), utc(2027, 1, 4, 22)),
    ],
)
def test_an_overnight_window_belongs_to_the_day_it_opens_on(at: datetime, expected: datetime | None) -> None:
    assert next_opening(MONDAY_NIGHT, UTC_ZONE, at) == expected


# --- next_opening: daylight saving time ------------------------------------------------------------------
# Europe/Berlin, 2027-03-28 (Sunday): 02:00 CET (01:00 UTC) becomes 03:00 CEST; 02:00-03:00 does not exist.
# 2027-10-31 (Sunday): 03:00 CEST (01:00 UTC) becomes 02:00 CET; 02:00-03:00 happens twice.


def test_a_start_in_the_spring_forward_gap_opens_when_the_gap_ends() -> None:
    early = window("02:30", "05:00")
    assert next_opening(early, BERLIN, utc(2027, 3, 27, 23)) == utc(2027, 3, 28, 1)  # 03:00 CEST
    assert next_opening(early, BERLIN, utc(2027, 3, 28, 0, 59, 59)) == utc(2027, 3, 28, 1)
    assert next_opening(early, BERLIN, utc(2027, 3, 28, 1)) is None
    assert next_opening(early, BERLIN, utc(2027, 3, 28, 2, 59)) is None  # 04:59 CEST
    assert next_opening(early, BERLIN, utc(2027, 3, 28, 3)) == utc(2027, 3, 29, 0, 30)  # 02:30 CEST on Monday
    # The day before, still CET: 02:30 is 01:30 UTC.
    assert next_opening(early, BERLIN, utc(2027, 3, 26, 23)) == utc(2027, 3, 27, 1, 30)


def test_an_end_in_the_spring_forward_gap_closes_when_the_gap_ends() -> None:
    late_night = window("01:00", "02:30")
    assert next_opening(late_night, BERLIN, utc(2027, 3, 28, 0, 59)) is None  # 01:59 CET
    assert next_opening(late_night, BERLIN, utc(2027, 3, 28, 1)) == utc(2027, 3, 28, 23)  # 01:00 CEST Monday


def test_a_window_wholly_inside_the_gap_does_not_open_that_day() -> None:
    lost = window("02:05", "02:55")
    assert next_opening(lost, BERLIN, utc(2027, 3, 27, 23)) == utc(2027, 3, 29, 0, 5)


def test_an_ambiguous_start_opens_at_its_first_occurrence() -> None:
    early = window("02:30", "05:00")
    assert next_opening(early, BERLIN, utc(2027, 10, 30, 23)) == utc(2027, 10, 31, 0, 30)  # 02:30 CEST
    assert next_opening(early, BERLIN, utc(2027, 10, 31, 0, 30)) is None
    assert next_opening(early, BERLIN, utc(2027, 10, 31, 1, 30)) is None  # 02:30 CET, the second time
    assert next_opening(early, BERLIN, utc(2027, 10, 31, 3, 59)) is None  # 04:59 CET: an hour longer today
    assert next_opening(early, BERLIN, utc(2027, 10, 31, 4)) == utc(2027, 11, 1, 1, 30)


def test_a_window_opens_once_a_day_even_when_its_hour_repeats() -> None:
    repeated = window("02:00", "02:30")
    assert next_opening(repeated, BERLIN, utc(2027, 10, 31, 0, 10)) is None  # 02:10 CEST
    # 02:10 CET reads the same on the clock, but that day's window has closed already.
    assert next_opening(repeated, BERLIN, utc(2027, 10, 31, 1, 10)) == utc(2027, 11, 1, 1)


def test_an_overnight_window_across_a_dst_change_keeps_its_local_times() -> None:
    night = window("22:00", "06:00", "sat")
    assert next_opening(night, BERLIN, utc(2027, 3, 27, 21, 30)) is None  # 22:30 CET
    assert next_opening(night, BERLIN, utc(2027, 3, 28, 3, 59)) is None  # 05:59 CEST
    assert next_opening(night, BERLIN, utc(2027, 3, 28, 4)) == utc(2027, 4, 3, 20)  # Sat 22:00 CEST
    assert next_opening(night, BERLIN, utc(2027, 10, 31, 4, 59)) is None  # 05:59 CET
    assert next_opening(night, BERLIN, utc(2027, 10, 31, 5)) == utc(2027, 11, 6, 21)  # Sat 22:00 CET


def test_new_york_office_hours_across_the_spring_change() -> None:
    # 2027-03-14 (Sunday) 02:00 EST becomes 03:00 EDT: 09:00 is 14:00 UTC on Friday, 13:00 UTC on Monday.
    weekdays = window("09:00", "17:00", "mon", "tue", "wed", "thu", "fri")
    assert next_opening(weekdays, NEW_YORK, utc(2027, 3, 12, 13, 59)) == utc(2027, 3, 12, 14)
    assert next_opening(weekdays, NEW_YORK, utc(2027, 3, 12, 22)) == utc(2027, 3, 15, 13)
    assert next_opening(weekdays, NEW_YORK, utc(2027, 3, 15, 20, 59)) is None
    assert next_opening(weekdays, NEW_YORK, utc(2027, 3, 15, 21)) == utc(2027, 3, 16, 13)
    # 2027-11-07 (Sunday) 02:00 EDT becomes 01:00 EST.
    assert next_opening(weekdays, NEW_YORK, utc(2027, 11, 5, 22)) == utc(2027, 11, 8, 14)


def test_a_zone_whose_clocks_go_back_across_midnight() -> None:
    # Asia/Beirut, 2027-10-31 00:00 EEST (21:00 UTC on the 30th) becomes 23:00 EET on Saturday the 30th.
    beirut = zone("Asia/Beirut")
    saturday_night = window("23:30", "23:45", "sat")
    assert next_opening(saturday_night, beirut, utc(2027, 10, 30, 20, 30)) is None  # 23:30 EEST
    # 23:35 EET, on the clock Saturday again: that Saturday's window has been and gone.
    assert next_opening(saturday_night, beirut, utc(2027, 10, 30, 21, 35)) == utc(2027, 11, 6, 21, 30)


# --- a property: next_opening against a brute-force reading of the clock ---------------------------------

PROPERTY_ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",  # a half-hour DST shift
    "America/Havana",  # changes at midnight
    "Asia/Beirut",  # goes back across midnight
    "America/Santiago",  # changes at 24:00
    "Pacific/Chatham",  # +12:45 / +13:45
]
SPAN_START = utc(2026, 1, 1)
SPAN_SECONDS = 2 * 365 * 86400


@functools.cache
def transitions(name: str) -> tuple[datetime, ...]:
    """The hours (UTC) in the span at which `name` changes its offset."""
    found: list[datetime] = []
    tz = zone(name)
    previous = SPAN_START.astimezone(tz).utcoffset()
    for hour in range(1, SPAN_SECONDS // 3600):
        moment = SPAN_START + timedelta(hours=hour)
        offset = moment.astimezone(tz).utcoffset()
        if offset != previous:
            found.append(moment)
            previous = offset
    return tuple(found)


def minutes(start: datetime, end: datetime) -> Iterator[datetime]:
    moment = start
    while moment < end:
        yield moment
        moment += timedelta(minutes=1)


def clock_reaches(tz: zoneinfo.ZoneInfo, day: date, clock: str) -> datetime:
    """The first minute (UTC) the clock of `tz` has reached `clock` on `day`, read off minute by minute: so a
    time in a gap is reached when the gap ends, an ambiguous one at its first occurrence."""
    target = datetime.fromisoformat(f"{day.isoformat()}T{clock}")
    # Near enough: these zones shift by an hour at most, so three hours before, the clock read less.
    guess = target.replace(tzinfo=tz).astimezone(UTC)
    scanned = list(minutes(guess - timedelta(hours=3), guess + timedelta(hours=3)))
    reached: list[datetime] = []  # the latest the clock has read so far: never goes back
    for moment in scanned:
        wall = moment.astimezone(tz).replace(tzinfo=None)
        reached.append(max(wall, reached[-1]) if reached else wall)
    index = bisect.bisect_left(reached, target)
    assert 0 < index < len(scanned)
    return scanned[index]


def occurrences(sendwindow: SendWindow, tz: zoneinfo.ZoneInfo, at: datetime) -> list[tuple[datetime, datetime]]:
    """(opens, closes) of each listed day's window around `at`, the empty ones left out."""
    today = at.astimezone(tz).date()
    found = []
    for shift in range(-2, 9):
        day = today + timedelta(days=shift)
        if WEEKDAYS[day.weekday()] in sendwindow.days:
            closing_day = day + timedelta(days=1) if sendwindow.overnight else day
            opens, closes = clock_reaches(tz, day, sendwindow.start), clock_reaches(tz, closing_day, sendwindow.end)
            if opens < closes:
                found.append((opens, closes))
    return found


clocks = st.one_of(
    st.integers(0, 1439), st.sampled_from([0, 30, 45, 60, 90, 120, 150, 165, 180, 1380, 1410, 1425, 1439])
).map(lambda minute: f"{minute // 60:02d}:{minute % 60:02d}")


@st.composite
def cases(draw: st.DrawFn) -> tuple[SendWindow, str, datetime]:
    name = draw(st.sampled_from(PROPERTY_ZONES))
    start = draw(clocks)
    end = draw(clocks.filter(lambda clock: clock != start))
    days = draw(st.sets(st.sampled_from(WEEKDAYS), min_size=1))
    sendwindow = SendWindow(start=start, end=end, days=tuple(day for day in WEEKDAYS if day in days))
    changes = transitions(name)
    near_a_change = draw(st.booleans())  # of offset, where mistakes live
    if changes and near_a_change:
        at = draw(st.sampled_from(changes)) + timedelta(seconds=draw(st.integers(-2 * 86400, 2 * 86400)))
    else:
        at = SPAN_START + timedelta(seconds=draw(st.integers(0, SPAN_SECONDS - 12 * 86400)))
    offset = timedelta(minutes=draw(st.integers(-14 * 60, 14 * 60)))
    return sendwindow, name, at.astimezone(timezone(offset))


@settings(max_examples=150, deadline=None)
@given(cases())
def test_next_opening_agrees_with_the_clock(case: tuple[SendWindow, str, datetime]) -> None:
    sendwindow, name, at = case
    tz = zone(name)
    spans = occurrences(sendwindow, tz, at)
    opening = next_opening(sendwindow, tz, at)
    if opening is None:
        assert any(opens <= at < closes for opens, closes in spans)
        return
    assert opening.tzinfo is UTC and opening > at
    assert not any(opens <= at < closes for opens, closes in spans)
    assert opening == min(opens for opens, _ in spans if opens > at)
    assert next_opening(sendwindow, tz, opening) is None
    # Every minute before it is outside the window (the first and last hours, checked one by one).
    following = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    first_hour = minutes(following, min(opening, following + timedelta(hours=1)))
    last_hour = minutes(max(following, opening - timedelta(hours=1)), opening)
    for moment in itertools.chain(first_hour, last_hour):
        assert next_opening(sendwindow, tz, moment) is not None, moment
