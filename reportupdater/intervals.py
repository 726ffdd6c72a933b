# Stage 2 of 5: planning (config -> plan -> execute -> store -> publish).
#
# Works out which intervals of a report should exist at a given time and
# which of them are missing, given the dates already in the output file and
# the pending reruns. Pure calendar arithmetic on UTC datetimes: touches no
# file, database or clock (the caller passes `now`).

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from datetime import date, datetime, timedelta, timezone
from typing import Iterable

from croniter import croniter

from .config import Granularity, ReportConfig


@dataclass(frozen=True, order=True)
class Interval:
    """One data point of a report: [start, end), timezone-aware."""

    start: datetime
    end: datetime

    @cached_property
    def label(self) -> str:
        """The value of the first column of the rows of this interval."""
        return self.start.strftime("%Y-%m-%d")

    def __str__(self) -> str:
        return self.label

    def span(self, last: "Interval") -> "Interval":
        """[this start, last end): what a batch of intervals covers."""
        return Interval(self.start, last.end)


@dataclass(frozen=True)
class Plan:
    """What a report (one explode combination) should have and still lacks."""

    due: tuple[Interval, ...]      # every interval that should exist now, oldest first
    missing: tuple[Interval, ...]  # not in the output, or covered by a pending rerun

    @property
    def window_start(self) -> str | None:
        """Label of the oldest interval to keep (max_data_points trimming)."""
        return self.due[0].label if self.due else None


def truncate(moment: datetime, granularity: Granularity) -> datetime:
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity is Granularity.DAYS:
        return day
    if granularity is Granularity.WEEKS:
        # Weeks start on Sunday, so a week's data is ready on Monday.
        return day - timedelta(days=day.isoweekday() % 7)
    return day.replace(day=1)


def step(moment: datetime, granularity: Granularity, count: int = 1) -> datetime:
    """`moment` moved by `count` units (negative goes back); months keep day 1."""
    if granularity is Granularity.DAYS:
        return moment + timedelta(days=count)
    if granularity is Granularity.WEEKS:
        return moment + timedelta(weeks=count)
    months = moment.year * 12 + (moment.month - 1) + count
    return moment.replace(year=months // 12, month=months % 12 + 1)


def as_utc(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)


def due_intervals(report: ReportConfig, now: datetime) -> list[Interval]:
    """Every interval of the report that should be computed at `now`, oldest first.

    Empty when the report starts in the future (or within its lag).
    """
    granularity = report.granularity
    last = step(truncate(as_utc(now) - timedelta(seconds=report.lag), granularity), granularity, -1)
    first = truncate(as_utc(report.starts), granularity)
    if report.max_data_points:
        first = max(first, step(last, granularity, -(report.max_data_points - 1)))
    intervals: list[Interval] = []
    start = first
    while start <= last:
        end = step(start, granularity)
        intervals.append(Interval(start, end))
        start = end
    return intervals


@dataclass(frozen=True)
class DateRange:
    """[start, end) of dates, as a rerun request gives them."""

    start: date
    end: date

    def overlaps(self, interval: Interval) -> bool:
        return interval.start < as_utc(self.end) and interval.end > as_utc(self.start)


def plan(due: list[Interval] | tuple[Interval, ...], done_labels: Iterable[str],
         reruns: Iterable[DateRange] = ()) -> Plan:
    """Of the due intervals (see due_intervals), those missing or to be recomputed."""
    done = set(done_labels)
    reruns = list(reruns)
    missing = tuple(
        interval for interval in due
        if interval.label not in done or any(r.overlaps(interval) for r in reruns)
    )
    return Plan(due=tuple(due), missing=missing)


def batches(todo: list[Interval], batch: int | str | None) -> list[list[Interval]]:
    """Consecutive missing intervals grouped for one query each (`batch: 30`
    or `batch: month`); without `batch`, one interval per query."""
    if not batch:
        return [[interval] for interval in todo]
    groups: list[list[Interval]] = []
    for interval in todo:
        if groups:
            group = groups[-1]
            consecutive = group[-1].end == interval.start
            fits = (len(group) < batch if isinstance(batch, int)
                    else (group[0].start.year, group[0].start.month)
                    == (interval.start.year, interval.start.month))
            if consecutive and fits:
                group.append(interval)
                continue
        groups.append([interval])
    return groups


# -- schedules (`schedule:` cron expressions)

# A timer runs hourly: a cron time up to this long ago, never started since,
# makes the report due.
SCHEDULE_WINDOW = timedelta(hours=1)


def schedule_due(expression: str, now: datetime, last_started: datetime | None) -> bool:
    """Whether a report with this cron schedule may start at `now`: a cron
    time has passed since it last started (so a missed 02:00 is caught up by
    the next run), or, never started, a cron time lies within the last hour."""
    # croniter's previous time of `now` is strictly before it: a run exactly
    # at 02:00:00 must see 02:00 itself.
    previous = croniter(expression, as_utc(now) + timedelta(seconds=1)).get_prev(datetime)
    if last_started is not None:
        return as_utc(last_started) < previous
    return as_utc(now) - previous < SCHEDULE_WINDOW


def next_schedule_time(expression: str, now: datetime) -> datetime:
    return croniter(expression, as_utc(now)).get_next(datetime)
