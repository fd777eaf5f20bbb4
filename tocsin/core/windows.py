"""Send windows (SPEC 11.3): checking a step's `send_window` and finding the next moment it opens.

Zones come from the `tzdata` wheel, never the host's zone database, so every machine computes the same
moments. Time comes in as arguments: nothing here reads a clock.

A window is a list of occurrences, one per listed day: it opens at `start` local time on that day and closes
at `end` (on the next day when `start > end`). A local time that does not exist (a spring-forward gap) is
taken as the first instant after the gap; an ambiguous one (a fall-back) as its first occurrence. So a
window opens at most once a day, and an occurrence that lies wholly inside a gap does not open at all.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from tocsin.core.errors import Problem
from tocsin.core.limits import printable
from tocsin.core.templates import text_template_problems

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)
"""Monday first, as `date.weekday()` counts."""

_FIELDS = frozenset({"timezone", "days", "start", "end"})
_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})")
_HH_MM = r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$"
_MINUTES_PER_DAY = 24 * 60


class SendWindow(BaseModel):
    """When a step's delivery may be sent: `start` (inclusive) to `end` (exclusive) local time on `days`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str | None = None  # a literal IANA name or a template rendering to one; None: the recipient's
    days: Annotated[tuple[Weekday, ...], Field(min_length=1)] = WEEKDAYS
    start: Annotated[str, Field(pattern=_HH_MM)]
    end: Annotated[str, Field(pattern=_HH_MM)]

    @model_validator(mode="after")
    def _not_empty(self) -> SendWindow:
        if self.start == self.end:
            raise ValueError(f"start and end are both {self.start}: the window would never open")
        return self

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The defaults are left out of the dump, so the checksum does not depend on whether they were spelled out.
        data: dict[str, Any] = handler(self)
        if self.timezone is None:
            data.pop("timezone", None)
        if self.days == WEEKDAYS:
            data.pop("days", None)
        return data

    @property
    def overnight(self) -> bool:
        """Whether the window closes on the day after the one it opens on (`22:00`-`06:00`)."""
        return self.start > self.end


def is_template(text: str) -> bool:
    """Whether `text` is a Jinja template rather than a literal (it holds a `{{`, `{%` or `{#`)."""
    return "{{" in text or "{%" in text or "{#" in text


@functools.cache
def _zone_names() -> frozenset[str]:
    # The wheel's own list of its keys (links like US/Eastern included). Being the only way a name reaches
    # a file, it also keeps out paths ('../etc/passwd'), directories and the wheel's non-zone files.
    listing = importlib.resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in listing.splitlines() if line.strip())


@functools.lru_cache(maxsize=512)
def _load_zone(name: str) -> ZoneInfo:
    # from_file, not ZoneInfo(name): the constructor would prefer the host's /usr/share/zoneinfo.
    with importlib.resources.files("tzdata.zoneinfo").joinpath(*name.split("/")).open("rb") as file:
        return ZoneInfo.from_file(file, key=name)


def known_zone(name: object) -> ZoneInfo | None:
    """The IANA zone called exactly `name` (`Europe/Berlin`, `UTC`), from tzdata; None for anything else."""
    if not isinstance(name, str) or name not in _zone_names():
        return None
    return _load_zone(name)


def choose_zone(*candidates: str | None) -> tuple[str, ZoneInfo]:
    """The first candidate that is a known zone, with its name; ("UTC", UTC) when none is.

    Callers pass, in order, the window's rendered or literal timezone, the recipient's, the definition's default.
    """
    for name in candidates:
        if name is not None and (zone := known_zone(name)) is not None:
            return name, zone
    return "UTC", _load_zone("UTC")


def _shown(value: object) -> str:
    return printable(repr(value))


def timezone_problem(value: object, location: str) -> Problem | None:
    """invalid_timezone when `value` (a literal, such as a definition's `default_timezone`) is no known zone."""
    if known_zone(value) is not None:
        return None
    if not isinstance(value, str):
        message = f"a timezone must be an IANA zone name such as 'Europe/Berlin', got {_shown(value)}"
    elif is_template(value):
        message = f"a template is not allowed here: give an IANA zone name such as 'Europe/Berlin', got {_shown(value)}"
    else:
        message = f"{_shown(value)} is not a known IANA zone name (such as 'Europe/Berlin' or 'UTC')"
    return Problem(location, "invalid_timezone", message)


def _clock(value: object, name: str, location: str, problems: list[Problem]) -> str | None:
    """`value` (the window's `name`, start or end) as a two-digit HH:MM, or None and a problem."""
    if isinstance(value, str) and (match := _CLOCK.fullmatch(value)):
        hours, minutes = int(match[1]), int(match[2])
        if hours < 24 and minutes < 60:
            return f"{hours:02d}:{minutes:02d}"
    message = f'{name} must be a local time "HH:MM" from 00:00 to 23:59, got {_shown(value)}'
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MINUTES_PER_DAY:
        # YAML 1.1 reads an unquoted 22:00 as the sexagesimal number 1320.
        message += f" (YAML reads an unquoted {value // 60}:{value % 60:02d} as a number: put it in quotes)"
    problems.append(Problem(location, "invalid_send_window", message))
    return None


def _days(value: object, location: str, problems: list[Problem]) -> object:
    """`value` as listed weekdays in WEEKDAYS order without repeats, or problems (and `value` as it is)."""
    if not isinstance(value, list | tuple) or not value:
        problems.append(
            Problem(location, "invalid_send_window", f"days must be a non-empty list of {', '.join(WEEKDAYS)}")
        )
        return value
    listed: set[str] = set()
    valid = True
    for index, day in enumerate(value):
        name = day.lower() if isinstance(day, str) else None
        if name in WEEKDAYS:
            listed.add(name)
        else:
            valid = False
            problems.append(
                Problem(
                    f"{location}[{index}]", "invalid_send_window", f"{_shown(day)} is not one of {', '.join(WEEKDAYS)}"
                )
            )
    return tuple(day for day in WEEKDAYS if day in listed) if valid else value


def send_window_problems(raw: object, location: str) -> tuple[object, list[Problem]]:
    """Check a step's `send_window` (found at `location`): the normalized mapping for SendWindow, and every problem.

    The normalized mapping is only meant to be used when there is no problem.
    """
    if not isinstance(raw, Mapping):
        message = "send_window must be a mapping with start and end (and optionally timezone and days)"
        return raw, [Problem(location, "invalid_send_window", message)]
    problems: list[Problem] = []
    for name in raw:
        if name not in _FIELDS:
            shown = printable(str(name))
            problems.append(Problem(f"{location}.{shown}", "invalid_send_window", f"unknown field {_shown(name)}"))
    normalized: dict[str, object] = {}
    timezone = raw.get("timezone")
    if timezone is not None:
        normalized["timezone"] = timezone
        where = f"{location}.timezone"
        if isinstance(timezone, str) and is_template(timezone):
            problems.extend(text_template_problems(timezone, where))
        elif (problem := timezone_problem(timezone, where)) is not None:
            problems.append(problem)
    normalized["days"] = _days(raw.get("days", WEEKDAYS), f"{location}.days", problems)
    clocks: list[str] = []
    for name in ("start", "end"):
        if name not in raw:
            problems.append(Problem(location, "invalid_send_window", f'send_window needs {name} ("HH:MM")'))
            continue
        clock = _clock(raw[name], name, f"{location}.{name}", problems)
        normalized[name] = raw[name] if clock is None else clock
        if clock is not None:
            clocks.append(clock)
    if len(clocks) == 2 and clocks[0] == clocks[1]:
        message = f"start and end are both {clocks[0]}: the window would never open"
        problems.append(Problem(location, "invalid_send_window", message))
    return normalized, problems


def _minutes(clock: str) -> int:
    return int(clock[:2]) * 60 + int(clock[3:])


def _offset_at(zone: ZoneInfo, timestamp: int) -> timedelta | None:
    return datetime.fromtimestamp(timestamp, UTC).astimezone(zone).utcoffset()


def _instant(zone: ZoneInfo, day: date, minutes: int) -> datetime:
    """The UTC instant the clocks of `zone` first read `minutes` past midnight of `day`, or the end of the gap
    that time falls into."""
    wall = datetime.combine(day, time(minutes // 60, minutes % 60))
    first = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0: the earlier of an ambiguous pair
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # In a gap the two folds map to the instants either side of the transition: find it, to the second
    # (tzdata's transitions fall on whole seconds).
    low, high = sorted(int(wall.replace(tzinfo=zone, fold=fold).timestamp()) for fold in (0, 1))
    after = _offset_at(zone, high)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_at(zone, middle) == after:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def next_opening(window: SendWindow, zone: ZoneInfo, at: datetime) -> datetime | None:
    """None when the aware moment `at` is inside `window` (read in `zone`); else the next instant (aware, UTC)
    the window opens."""
    if at.utcoffset() is None:
        raise ValueError(f"next_opening needs an aware datetime, got {at!r}")
    moment = at.astimezone(UTC)
    today = moment.astimezone(zone).date()
    start, end = _minutes(window.start), _minutes(window.end)
    # Yesterday's overnight occurrence may still be open. A zone whose clocks go back across midnight can
    # show a date behind the real one, so one more day is looked at either side; a week on, some listed day
    # has opened for certain.
    upcoming: datetime | None = None
    for shift in range(-2, 9):
        day = today + timedelta(days=shift)
        if WEEKDAYS[day.weekday()] not in window.days:
            continue
        opens = _instant(zone, day, start)
        closes = _instant(zone, day + timedelta(days=1) if window.overnight else day, end)
        if opens <= moment < closes:
            return None
        if moment < opens < closes and (upcoming is None or opens < upcoming):
            upcoming = opens
    return upcoming
