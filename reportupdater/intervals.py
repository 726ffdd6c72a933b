# Stage 2 of 5: planning (config -> plan -> execute -> store -> publish).
#
# The calendar that planning (plan.py) works with: which intervals of a
# report should exist at a given time, batches of them, rerun date ranges,
# and when a `schedule:` is due. Pure calendar arithmetic on timezone-aware datetimes
# (UTC, or the report's `timezone:` for local calendar days, weeks, months,
# quarters and years): touches no file, database or clock (the caller passes
# `now`).

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo, UTC


from .config import ReportConfig
from .datatypes import DAY_LABEL, Granularity, Interval


def truncate(moment: datetime, granularity: Granularity) -> datetime:
    """The start of the unit holding `moment`, in `moment`'s own time zone."""
    if granularity is Granularity.HOURS:
        return moment.replace(minute=0, second=0, microsecond=0)
    day = _local(moment.replace(hour=0, minute=0, second=0, microsecond=0))
    if granularity is Granularity.DAYS:
        return day
    if granularity is Granularity.WEEKS:
        # Weeks start on Sunday, so a week's data is ready on Monday.
        return _local(day - timedelta(days=day.isoweekday() % 7))
    first_month = {Granularity.MONTHS: day.month, Granularity.QUARTERS: (day.month - 1) // 3 * 3 + 1,
                   Granularity.YEARS: 1}[granularity]
    return _local(day.replace(month=first_month, day=1))


def step(moment: datetime, granularity: Granularity, count: int = 1) -> datetime:
    """`moment` moved by `count` units (negative goes back); months keep day 1.

    Calendar units move the local wall clock (a day at a DST change is 23
    or 25 hours long); hours move real time.
    """
    if granularity is Granularity.HOURS:
        return (moment.astimezone(UTC) + timedelta(hours=count)).astimezone(moment.tzinfo)
    if granularity is Granularity.DAYS:
        return _local(moment + timedelta(days=count))
    if granularity is Granularity.WEEKS:
        return _local(moment + timedelta(weeks=count))
    months = {Granularity.MONTHS: 1, Granularity.QUARTERS: 3, Granularity.YEARS: 12}[granularity]
    total = moment.year * 12 + (moment.month - 1) + count * months
    return _local(moment.replace(year=total // 12, month=total % 12 + 1))


def _local(moment: datetime) -> datetime:
    """Wall-clock arithmetic done: let the time zone pick the UTC offset again."""
    if moment.tzinfo is None or moment.tzinfo is UTC:
        return moment
    return moment.replace(tzinfo=None).replace(tzinfo=moment.tzinfo)


def in_zone(value: date | datetime, zone: tzinfo) -> datetime:
    """A date (midnight there) or an instant, in the report's time zone."""
    if isinstance(value, datetime):
        return as_utc(value).astimezone(zone)
    return datetime(value.year, value.month, value.day, tzinfo=zone)


def label_start(label: str, report: ReportConfig) -> datetime:
    """The start instant of the interval a first-column value names."""
    if report.granularity is Granularity.HOURS:
        return datetime.strptime(label[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return in_zone(datetime.strptime(label[:10], DAY_LABEL).date(), report.zone)


def as_utc(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def due_intervals(report: ReportConfig, now: datetime) -> list[Interval]:
    """Every interval of the report that should be computed at `now`, oldest first.

    Empty when the report starts in the future (or within its lag).
    """
    return list(_due(report.granularity, report.zone, report.starts, report.lag,
                     report.max_data_points, now))


@functools.lru_cache(maxsize=64)
def _due(granularity: Granularity, zone: tzinfo, starts: date, lag: int,
         max_data_points: int | None, now: datetime) -> tuple[Interval, ...]:
    # Cached: the reports of a folder mostly share their calendar, and
    # building two years of days is most of the cost of planning a report.
    hourly = granularity is Granularity.HOURS
    ready = in_zone(as_utc(now) - timedelta(seconds=lag), zone)
    last = step(truncate(ready, granularity), granularity, -1)
    first = truncate(in_zone(starts, zone), granularity)
    if max_data_points:
        # More points than the calendar has before `last`: keep them all.
        with contextlib.suppress(OverflowError, ValueError):
            first = max(first, step(last, granularity, -(max_data_points - 1)))
    intervals: list[Interval] = []
    start = first
    while start <= last:
        end = step(start, granularity)
        intervals.append(Interval(start, end, hourly))
        start = end
    return tuple(intervals)


@dataclass(frozen=True)
class DateRange:
    """[start, end) of dates, as a rerun request gives them."""

    start: date
    end: date

    def overlaps(self, interval: Interval) -> bool:
        # The dates are the report's calendar dates (its time zone).
        zone = interval.start.tzinfo or UTC
        return interval.start < in_zone(self.end, zone) and interval.end > in_zone(self.start, zone)


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


def schedule_due(expression: str, now: datetime, last_started: datetime | None,
                 first_seen: datetime | None = None) -> bool:
    """Whether a report with this cron schedule may start at `now`: a cron
    time has passed since it last started (so a missed 02:00 is caught up by
    the next run), or, never started, since a run first saw it not due, or,
    never seen, a cron time lies within the last hour."""
    from croniter import croniter  # 40 ms to import; only `schedule:` needs it
    # croniter's previous time of `now` is strictly before it: a run exactly
    # at 02:00:00 must see 02:00 itself.
    previous = croniter(expression, as_utc(now) + timedelta(seconds=1)).get_prev(datetime)
    if last_started is not None:
        return as_utc(last_started) < previous
    if first_seen is not None and as_utc(first_seen) < previous:
        return True
    return as_utc(now) - previous < SCHEDULE_WINDOW


def next_schedule_time(expression: str, now: datetime) -> datetime:
    from croniter import croniter
    return croniter(expression, as_utc(now)).get_next(datetime)
