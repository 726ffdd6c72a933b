# The data types every stage shares (config -> plan -> execute -> store ->
# publish): an interval, a job, a result, the granularity of a report, and
# the error an interval fails with. Dependency-free: imports only the
# standard library, so any stage may import it without importing another
# stage. (Job names ReportConfig for type checkers only: config imports
# Granularity from here, and a runtime import would make a cycle.)

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import ReportConfig

HOUR_LABEL = "%Y-%m-%dT%H:00:00"
DAY_LABEL = "%Y-%m-%d"

Explode = tuple[tuple[str, str], ...]  # (placeholder, value), sorted by placeholder


class Granularity(enum.Enum):
    HOURS = "hours"
    DAYS = "days"
    WEEKS = "weeks"
    MONTHS = "months"
    QUARTERS = "quarters"
    YEARS = "years"


class EngineError(Exception):
    """A query or script that failed for one interval; one line, no secrets."""


@dataclass(frozen=True, order=True)
class Interval:
    """One data point of a report: [start, end), timezone-aware (in the
    report's time zone, so that the label is the local date)."""

    start: datetime
    end: datetime
    hourly: bool = False

    @cached_property
    def label(self) -> str:
        """The value of the first column of the rows of this interval."""
        return self.start.strftime(HOUR_LABEL if self.hourly else DAY_LABEL)

    def __str__(self) -> str:
        return self.label

    def __hash__(self) -> int:
        # Kept: planning hashes each interval a dozen times (sets of due,
        # missing, taken ones), and hashing aware datetimes is not cheap.
        try:
            return self.__dict__["_hash"]
        except KeyError:
            value = self.__dict__["_hash"] = hash((self.start, self.end, self.hourly))
            return value

    def span(self, last: Interval) -> Interval:
        """[this start, last end): what a batch of intervals covers."""
        return Interval(self.start, last.end, self.hourly)


@dataclass(frozen=True)
class Job:
    """One interval (or, batched, a run of consecutive intervals) of one
    explode combination of one report. `interval` is what the query covers."""

    report: ReportConfig
    interval: Interval
    explode: Explode
    parts: tuple[Interval, ...] = ()      # the intervals a batch covers; () = just `interval`

    def __post_init__(self) -> None:
        if not self.parts:
            object.__setattr__(self, "parts", (self.interval,))

    @property
    def explode_values(self) -> dict[str, str]:
        return dict(self.explode)

    def describe(self) -> str:
        parts = [self.report.key] + [f"{name}={value}" for name, value in self.explode]
        if len(self.parts) > 1:
            return f"{' '.join(parts)} {self.parts[0].label}..{self.parts[-1].label}"
        return f"{' '.join(parts)} {self.interval.label}"


@dataclass(frozen=True)
class Result:
    """What one job produced: a header and rows of text, first column a date."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    # The engine returned no rows: `rows` is one placeholder row of empty
    # cells, stored so the interval counts as done. Distinct from a real row
    # of NULLs, which a pivot keeps.
    empty: bool = False

    @property
    def dates(self) -> set[str]:
        return {row[0] for row in self.rows}
