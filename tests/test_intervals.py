"""reportupdater.intervals: which intervals are due at a given `now`, and which are missing."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone, UTC

import pytest

from reportupdater.config import ReportConfig
from reportupdater.datatypes import Granularity, Interval
from reportupdater.intervals import DateRange, due_intervals

UTC = UTC
DAYS, WEEKS, MONTHS = Granularity.DAYS, Granularity.WEEKS, Granularity.MONTHS


def report(granularity: Granularity, starts: date, lag: int = 0,
           max_data_points: int | None = None) -> ReportConfig:
    return ReportConfig(key="r", type="script", granularity=granularity, starts=starts,
                        lag=lag, max_data_points=max_data_points)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def labels(intervals) -> list[str]:
    return [interval.label for interval in intervals]


def spans(intervals) -> list[tuple[datetime, datetime]]:
    return [(interval.start, interval.end) for interval in intervals]


# ------------------------------------------------------------------ days


def test_days_every_day_from_starts_to_yesterday():
    due = due_intervals(report(DAYS, date(2026, 1, 1)), utc(2026, 1, 5, 0, 0))
    assert spans(due) == [
        (utc(2026, 1, 1), utc(2026, 1, 2)),
        (utc(2026, 1, 2), utc(2026, 1, 3)),
        (utc(2026, 1, 3), utc(2026, 1, 4)),
        (utc(2026, 1, 4), utc(2026, 1, 5)),
    ]
    # Intervals are timezone-aware UTC.
    assert all(i.start.utcoffset() == timedelta(0) and i.end.utcoffset() == timedelta(0)
               for i in due)


def test_days_today_is_not_due_until_it_ends():
    due = due_intervals(report(DAYS, date(2026, 1, 1)), utc(2026, 1, 5, 23, 59, 59))
    assert labels(due)[-1] == "2026-01-04"
    due = due_intervals(report(DAYS, date(2026, 1, 1)), utc(2026, 1, 6, 0, 0, 0))
    assert labels(due)[-1] == "2026-01-05"


def test_days_across_month_ends_of_31_and_30_days():
    due = due_intervals(report(DAYS, date(2026, 1, 30)), utc(2026, 2, 2))
    assert labels(due) == ["2026-01-30", "2026-01-31", "2026-02-01"]
    assert due[1].end == utc(2026, 2, 1)
    due = due_intervals(report(DAYS, date(2026, 4, 29)), utc(2026, 5, 2))
    assert labels(due) == ["2026-04-29", "2026-04-30", "2026-05-01"]
    assert due[1].end == utc(2026, 5, 1)


def test_days_leap_day_2028():
    due = due_intervals(report(DAYS, date(2028, 2, 27)), utc(2028, 3, 1, 0, 0))
    assert labels(due) == ["2028-02-27", "2028-02-28", "2028-02-29"]
    assert due[-1].end == utc(2028, 3, 1)


def test_naive_now_is_taken_as_utc():
    due = due_intervals(report(DAYS, date(2026, 1, 1)), datetime(2026, 1, 3, 0, 30))
    assert labels(due) == ["2026-01-01", "2026-01-02"]


def test_timezone_aware_now_in_another_offset_is_converted_to_utc():
    # 01:00 at +02:00 is 23:00 UTC the day before: the 9th has not ended in UTC.
    now = datetime(2026, 1, 10, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    due = due_intervals(report(DAYS, date(2026, 1, 1)), now)
    assert labels(due)[-1] == "2026-01-08"
    assert due[-1].start == utc(2026, 1, 8)
    # ... and a negative offset pushes into the next UTC day.
    now = datetime(2026, 1, 9, 23, 0, tzinfo=timezone(timedelta(hours=-2)))
    assert labels(due_intervals(report(DAYS, date(2026, 1, 1)), now))[-1] == "2026-01-09"


# ----------------------------------------------------------------- weeks


def test_weeks_start_on_sunday():
    # Monday 2026-11-23 05:00: the last full week is Sun 2026-11-15 .. Sun 2026-11-22.
    now = utc(2026, 11, 23, 5, 0)
    due = due_intervals(report(WEEKS, date(2026, 11, 1)), now)
    assert spans(due) == [
        (utc(2026, 11, 1), utc(2026, 11, 8)),
        (utc(2026, 11, 8), utc(2026, 11, 15)),
        (utc(2026, 11, 15), utc(2026, 11, 22)),
    ]
    assert all(i.start.isoweekday() == 7 for i in due)  # Sundays
    assert "2026-11-22" not in labels(due)


def test_week_is_due_from_the_following_sunday_midnight():
    r = report(WEEKS, date(2026, 11, 1))
    assert labels(due_intervals(r, utc(2026, 11, 28, 23, 59)))[-1] == "2026-11-15"  # Saturday
    assert labels(due_intervals(r, utc(2026, 11, 29, 0, 0)))[-1] == "2026-11-22"    # Sunday


def test_weekly_report_starting_on_a_wednesday_truncates_to_the_preceding_sunday():
    # 2026-11-18 is a Wednesday; its week starts Sunday 2026-11-15.
    due = due_intervals(report(WEEKS, date(2026, 11, 18)), utc(2026, 11, 30, 12, 0))
    assert labels(due) == ["2026-11-15", "2026-11-22"]
    assert due[0].end == utc(2026, 11, 22)


# ---------------------------------------------------------------- months


def test_months_start_on_the_first_and_follow_month_lengths():
    due = due_intervals(report(MONTHS, date(2026, 1, 15)), utc(2026, 5, 1, 0, 0))
    assert spans(due) == [
        (utc(2026, 1, 1), utc(2026, 2, 1)),
        (utc(2026, 2, 1), utc(2026, 3, 1)),
        (utc(2026, 3, 1), utc(2026, 4, 1)),
        (utc(2026, 4, 1), utc(2026, 5, 1)),
    ]


def test_month_is_not_due_on_its_last_day():
    r = report(MONTHS, date(2026, 1, 1))
    # April 30 23:59: April has not ended, March is the last due month.
    assert labels(due_intervals(r, utc(2026, 4, 30, 23, 59)))[-1] == "2026-03-01"
    assert labels(due_intervals(r, utc(2026, 5, 1, 0, 0)))[-1] == "2026-04-01"
    assert labels(due_intervals(r, utc(2026, 1, 31, 23, 59))) == []


def test_february_of_a_leap_year_ends_on_march_first():
    due = due_intervals(report(MONTHS, date(2028, 1, 1)), utc(2028, 3, 2))
    assert spans(due) == [
        (utc(2028, 1, 1), utc(2028, 2, 1)),
        (utc(2028, 2, 1), utc(2028, 3, 1)),
    ]


def test_months_across_a_year_boundary():
    due = due_intervals(report(MONTHS, date(2025, 11, 1)), utc(2026, 2, 10))
    assert labels(due) == ["2025-11-01", "2025-12-01", "2026-01-01"]
    assert due[1].end == utc(2026, 1, 1)


# ------------------------------------------------------------------- lag


def test_lag_in_seconds_keeps_yesterday_out_until_it_has_passed():
    r = report(DAYS, date(2026, 1, 1), lag=7200)
    # 01:00 with a 2 h lag: yesterday (the 9th) ended only an hour ago.
    assert labels(due_intervals(r, utc(2026, 1, 10, 1, 0)))[-1] == "2026-01-08"
    assert labels(due_intervals(r, utc(2026, 1, 10, 1, 59, 59)))[-1] == "2026-01-08"
    assert labels(due_intervals(r, utc(2026, 1, 10, 2, 0)))[-1] == "2026-01-09"


def test_lag_can_push_a_monthly_report_back_a_whole_month():
    r = report(MONTHS, date(2025, 11, 1), lag=7200)
    # 2026-03-01 01:00 minus 2 h is still February: February is not due yet.
    assert labels(due_intervals(r, utc(2026, 3, 1, 1, 0))) == ["2025-11-01", "2025-12-01", "2026-01-01"]
    assert labels(due_intervals(r, utc(2026, 3, 1, 2, 0)))[-1] == "2026-02-01"


def test_lag_on_weeks():
    r = report(WEEKS, date(2026, 11, 1), lag=3 * 86400)
    # Wednesday 2026-11-25 minus 3 days is Sunday 2026-11-22 00:00 exactly.
    assert labels(due_intervals(r, utc(2026, 11, 24, 23, 59)))[-1] == "2026-11-08"
    assert labels(due_intervals(r, utc(2026, 11, 25, 0, 0)))[-1] == "2026-11-15"


# ------------------------------------------------------- max_data_points


def test_max_data_points_days():
    due = due_intervals(report(DAYS, date(2026, 1, 1), max_data_points=3), utc(2026, 1, 20, 5))
    assert labels(due) == ["2026-01-17", "2026-01-18", "2026-01-19"]


def test_max_data_points_weeks():
    due = due_intervals(report(WEEKS, date(2026, 1, 4), max_data_points=2), utc(2026, 11, 23, 5))
    assert labels(due) == ["2026-11-08", "2026-11-15"]


def test_max_data_points_months():
    due = due_intervals(report(MONTHS, date(2020, 1, 1), max_data_points=4), utc(2026, 3, 5))
    assert labels(due) == ["2025-11-01", "2025-12-01", "2026-01-01", "2026-02-01"]


def test_max_data_points_larger_than_history_keeps_starts():
    due = due_intervals(report(DAYS, date(2026, 1, 3), max_data_points=30), utc(2026, 1, 6))
    assert labels(due) == ["2026-01-03", "2026-01-04", "2026-01-05"]


def test_max_data_points_one():
    due = due_intervals(report(MONTHS, date(2020, 1, 1), max_data_points=1), utc(2026, 3, 5))
    assert spans(due) == [(utc(2026, 2, 1), utc(2026, 3, 1))]


# ------------------------------------------------------------ not started


def test_report_starting_in_the_future_has_no_intervals():
    assert due_intervals(report(DAYS, date(2026, 2, 1)), utc(2026, 1, 5)) == []
    assert due_intervals(report(WEEKS, date(2026, 2, 1)), utc(2026, 1, 5)) == []
    assert due_intervals(report(MONTHS, date(2026, 2, 1)), utc(2026, 1, 5)) == []


def test_report_starting_today_has_no_intervals_yet():
    assert due_intervals(report(DAYS, date(2026, 1, 5)), utc(2026, 1, 5, 23)) == []
    assert labels(due_intervals(report(DAYS, date(2026, 1, 5)), utc(2026, 1, 6))) == ["2026-01-05"]


def test_report_held_back_by_lag_has_no_intervals():
    r = report(DAYS, date(2026, 1, 4), lag=7200)
    assert due_intervals(r, utc(2026, 1, 5, 1, 0)) == []


# ------------------------------------------------------------------ label


def test_interval_label_is_the_start_date():
    interval = Interval(utc(2026, 3, 1), utc(2026, 4, 1))
    assert interval.label == "2026-03-01"
    assert str(interval) == "2026-03-01"
    assert Interval(utc(2028, 2, 29), utc(2028, 3, 1)).label == "2028-02-29"


# ------------------------------------------------- reruns over due intervals
# Which stored intervals a rerun's dates make due again (plan.py asks each
# pending request the same through DateRange.overlaps); gaps and the rest
# of planning are tested in test_plan.py.


def covered(due, reruns) -> list[str]:
    return [interval.label for interval in due if any(r.overlaps(interval) for r in reruns)]


def test_max_data_points_keeps_the_newest_due_intervals():
    due = due_intervals(report(DAYS, date(2026, 1, 1), max_data_points=2), utc(2026, 1, 7))
    assert labels(due) == ["2026-01-05", "2026-01-06"]


def test_daily_rerun_end_is_exclusive():
    due = due_intervals(report(DAYS, date(2025, 12, 30)), utc(2026, 1, 6))
    assert covered(due, [DateRange(date(2026, 1, 1), date(2026, 1, 3))]) == ["2026-01-01", "2026-01-02"]


def test_rerun_covering_part_of_a_month_makes_that_month_missing():
    due = due_intervals(report(MONTHS, date(2026, 1, 1)), utc(2026, 5, 1))
    assert covered(due, [DateRange(date(2026, 2, 10), date(2026, 2, 11))]) == ["2026-02-01"]
    # A range straddling a month boundary touches both months.
    assert covered(due, [DateRange(date(2026, 2, 28), date(2026, 3, 2))]) == ["2026-02-01", "2026-03-01"]


def test_rerun_of_exactly_one_month_touches_no_neighbour():
    due = due_intervals(report(MONTHS, date(2026, 1, 1)), utc(2026, 5, 1))
    assert covered(due, [DateRange(date(2026, 2, 1), date(2026, 3, 1))]) == ["2026-02-01"]


def test_rerun_of_one_weekday_makes_its_week_missing():
    due = due_intervals(report(WEEKS, date(2026, 11, 1)), utc(2026, 11, 23))
    assert covered(due, [DateRange(date(2026, 11, 11), date(2026, 11, 12))]) == ["2026-11-08"]  # a Wednesday


def test_several_reruns_combine_in_order():
    due = due_intervals(report(DAYS, date(2026, 1, 1)), utc(2026, 1, 11))
    reruns = [DateRange(date(2026, 1, 8), date(2026, 1, 9)),
              DateRange(date(2026, 1, 2), date(2026, 1, 3))]
    assert covered(due, reruns) == ["2026-01-02", "2026-01-08"]


def test_rerun_outside_the_due_window_adds_nothing():
    due = due_intervals(report(DAYS, date(2026, 1, 1)), utc(2026, 1, 4))
    assert covered(due, [DateRange(date(2025, 6, 1), date(2026, 1, 1))]) == []


@pytest.mark.parametrize("start, end, expected", [
    (date(2026, 1, 1), date(2026, 1, 2), True),
    (date(2026, 1, 2), date(2026, 1, 3), False),   # starts at the interval's end
    (date(2025, 12, 31), date(2026, 1, 1), False),  # ends at the interval's start
    (date(2025, 12, 1), date(2026, 2, 1), True),
])
def test_date_range_overlaps_half_open(start, end, expected):
    interval = Interval(utc(2026, 1, 1), utc(2026, 1, 2))
    assert DateRange(start, end).overlaps(interval) is expected
