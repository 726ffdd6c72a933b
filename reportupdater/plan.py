# Stage 2 of 5: planning (config -> plan -> execute -> store -> publish).
#
# plan_report is the one place that decides what a run does for a report:
# which intervals are due, which of them each output file lacks, which are
# recomputed (pending reruns, lookback), which wait for their retry time,
# which the per-run limit leaves for later, and the jobs (batched, newest or
# oldest first) that run now. The runner executes the plan; `status` and
# `run --dry-run` print the same plan, so what they show is what runs.
#
# Pure: touches no file, database or clock. The caller passes what it read
# (the dates in each output file, the run state, the pending reruns, the
# version record and today's version, `now`). With `on_query_change: rerun`
# (or rerun_since) the dates an older version computed are planned like a
# rerun request's: recomputed, within the per-run limit, with their reason.

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from enum import Enum
from pathlib import Path

from . import intervals
from .config import ReportConfig
from .datatypes import Explode, Interval, Job
from .reruns import PendingRerun, file_key
from .state import State, failure_key
from .versions import PlanVersions

class Verdict(Enum):
    DUE = "due"
    NOTHING_DUE = "nothing due"        # starts in the future (or within its lag)
    NOT_SCHEDULED = "not scheduled"    # its `schedule:` says not now


@dataclass(frozen=True)
class FileInput:
    """What the caller read of one output file: its dates, or why it cannot be read."""

    explode: Explode
    path: Path
    dates: set[str] | frozenset[str] = frozenset()
    error: str | None = None


@dataclass(frozen=True)
class Limits:
    max_intervals: int | None = None  # --max-intervals (the report's own limit also applies)
    retry_failed_now: bool = False    # ignore the backoff of failed intervals
    forced: bool = False              # named with -r: runs now, whatever its schedule says


@dataclass(frozen=True)
class FilePlan:
    """One output file (one explode combination): what it lacks and what runs now."""

    report_key: str
    explode: Explode
    path: Path
    error: str | None                   # the file cannot be read: nothing is planned for it
    missing: tuple[Interval, ...]       # not stored, or covered by a pending rerun
    lookback: tuple[Interval, ...]      # stored, recomputed because of `lookback`
    rerun: frozenset[Interval]          # due intervals a pending rerun covers
    backing_off: tuple[Interval, ...]   # failed before, waiting for their retry time
    todo: tuple[Interval, ...]          # computed this run, oldest first
    later: tuple[Interval, ...]         # left for later runs by the per-run limit
    reasons: tuple[tuple[str, str], ...]  # ('first..last', why) for every missing interval
    window_start: str | None            # oldest label kept (max_data_points trimming)
    stale: frozenset[Interval] = frozenset()  # stored, computed by an older version: recomputed

    @property
    def name(self) -> str:
        return " ".join([self.report_key] + [f"{key}={value}" for key, value in self.explode])


class Jobs:
    """A plan's jobs, in the order they run, built as they are iterated (each
    iteration builds them anew): a million-interval backfill does not hold a
    million Job objects. Compares equal to the tuple of the same jobs."""

    def __init__(self, make: Callable[[], Iterator[Job]], intervals: int):
        self._make = make
        self.intervals = intervals  # intervals over all the jobs

    def __iter__(self) -> Iterator[Job]:
        return self._make()

    def __bool__(self) -> bool:
        return self.intervals > 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Jobs, tuple, list)):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Jobs({list(self)!r})"


NO_JOBS = Jobs(lambda: iter(()), 0)


@dataclass(frozen=True, eq=False)
class ReportPlan:
    report: ReportConfig
    verdict: Verdict
    due: tuple[Interval, ...]
    files: tuple[FilePlan, ...]
    jobs: Jobs
    limit: int | None                   # intervals per run, when limited
    next_due: datetime | None           # when the interval after the last due one is computable
    next_schedule: datetime | None      # reports with `schedule:`: the next cron time

    @property
    def todo(self) -> int:
        return self.jobs.intervals

    @property
    def later(self) -> int:
        return sum(len(file.later) for file in self.files)


def plan_report(report: ReportConfig, files: Sequence[FileInput], state: State,
                reruns: Sequence[PendingRerun], now: datetime, limits: Limits = Limits(),
                versions: PlanVersions | None = None) -> ReportPlan:
    """Everything a run does for `report` at `now` (see the module header).

    `files`: one per explode combination, in the report's order; `reruns`:
    the requests still pending for this output folder; `state` is only read;
    `versions`: the report's version record and today's version (None: no
    record, nothing is stale)."""
    due = tuple(intervals.due_intervals(report, now))
    next_due = next_due_time(report, due, now)
    next_schedule = None
    if report.schedule:
        next_schedule = intervals.next_schedule_time(report.schedule, now)
    limit_values = [value for value in (report.max_intervals_per_run, limits.max_intervals) if value]
    limit = min(limit_values) if limit_values else None

    labels = [interval.label for interval in due]  # once: a folder has thousands of files
    inputs = _Inputs(report, due, labels, state, tuple(rerun for rerun in reruns if rerun.names(report.key)),
                     now, limits, versions)

    def empty(verdict: Verdict, why: str) -> ReportPlan:
        shown = tuple(_file_plan(inputs, file, blocked=why) for file in files)
        return ReportPlan(report, verdict, due, shown, NO_JOBS, limit, next_due, next_schedule)

    if not due:
        return ReportPlan(report, Verdict.NOTHING_DUE, due, (), NO_JOBS, limit, next_due, next_schedule)
    if (report.schedule and not limits.forced
            and not intervals.schedule_due(report.schedule, now, state.last_started(report.key),
                                           state.first_seen(report.key))):
        assert next_schedule is not None
        return empty(Verdict.NOT_SCHEDULED, f"not scheduled now (next {next_schedule:%Y-%m-%dT%H:%MZ})")

    drafts = [_file_plan(inputs, file) for file in files]
    # Missing intervals go before lookback's recomputations: were it the other
    # way round, a limit smaller than lookback x files would leave the
    # history missing for ever while every run said ok.
    def every_job() -> Iterator[Job]:
        return itertools.chain(_jobs(report, drafts, missing=True),
                               _jobs(report, drafts, missing=False))

    if limit is None:
        jobs = Jobs(every_job, sum(len(draft.todo) for draft in drafts))
        shown = tuple(_apply_limit(draft, set(draft.todo), limit, state, now) for draft in drafts)
    else:
        kept = tuple(_within(every_job(), limit, newest=report.backfill_order == "newest"))
        jobs = Jobs(lambda: iter(kept), sum(len(job.parts) for job in kept))
        taken: dict[Explode, set[Interval]] = {}
        for job in kept:
            taken.setdefault(job.explode, set()).update(job.parts)
        shown = tuple(_apply_limit(draft, taken.get(draft.explode, set()), limit, state, now)
                      for draft in drafts)
    return ReportPlan(report, Verdict.DUE, due, shown, jobs, limit, next_due, next_schedule)


def _jobs(report: ReportConfig, drafts: list[FilePlan], missing: bool) -> Iterator[Job]:
    """The jobs for the files' missing intervals (or for their lookback-only
    ones), batched per file, newest or oldest first (by the newest interval
    of a batch, or the oldest; files keep their order between equal ones):
    the files' jobs merged as they are taken."""
    newest = report.backfill_order == "newest"
    per_file = [_file_jobs(report, draft, missing, newest) for draft in drafts]
    if len(per_file) == 1:  # in order already: no merge, no key per job
        return per_file[0]
    if newest:
        return heapq.merge(*per_file, key=lambda job: job.parts[-1].start, reverse=True)
    return heapq.merge(*per_file, key=lambda job: job.parts[0].start)


def _file_jobs(report: ReportConfig, draft: FilePlan, missing: bool, newest: bool) -> Iterator[Job]:
    """One file's jobs, in the order of the merge in _jobs."""
    wanted = set(draft.missing) if draft.missing else frozenset()
    todo = [interval for interval in draft.todo if (interval in wanted) == missing]
    if not report.batch:  # one interval per job: no batch lists at all
        for interval in (reversed(todo) if newest else todo):
            yield Job(report=report, interval=interval, explode=draft.explode, parts=(interval,))
        return
    groups = intervals.batches(todo, report.batch)
    for batch in (reversed(groups) if newest else groups):
        yield Job(report=report, interval=batch[0].span(batch[-1]), explode=draft.explode,
                  parts=tuple(batch))


def _within(jobs: Iterator[Job], budget: int, newest: bool) -> list[Job]:
    """The first jobs that fit `budget` intervals; the last one cut to fit."""
    kept: list[Job] = []
    for job in jobs:
        if budget <= 0:
            break
        if len(job.parts) > budget:
            parts = job.parts[-budget:] if newest else job.parts[:budget]
            job = Job(report=job.report, interval=parts[0].span(parts[-1]), explode=job.explode,
                      parts=parts)
        kept.append(job)
        budget -= len(job.parts)
    return kept


@dataclass(frozen=True)
class _Inputs:
    """What plan_report's files share: the report, its due intervals (and
    their labels), and what the caller passed in."""

    report: ReportConfig
    due: tuple[Interval, ...]
    labels: list[str]
    state: State
    covering: tuple[PendingRerun, ...]  # the pending reruns that name this report
    now: datetime
    limits: Limits
    versions: PlanVersions | None


def _file_plan(inputs: _Inputs, file: FileInput, blocked: str | None = None) -> FilePlan:
    """A file's plan before the per-run limit: todo is everything it would compute.
    `blocked`: why nothing runs now (the reasons say it for every missing interval)."""
    report, due, state, now = inputs.report, inputs.due, inputs.state, inputs.now
    if file.error is not None:
        return FilePlan(report.key, file.explode, file.path, file.error, (), (), frozenset(), (), (), (),
                        (), None)
    key = file_key(file.explode)
    rerun = frozenset(interval for interval in due
                      if any(request.covers(report.key, key, interval) for request in inputs.covering)) \
        if inputs.covering else frozenset()
    dates = file.dates
    stale = _stale(inputs, file)
    if not rerun and not stale and len(dates) >= len(due) and dates.issuperset(inputs.labels):
        missing: tuple[Interval, ...] = ()  # the hourly common case: a complete file
    else:
        missing = tuple(interval for interval in due
                        if interval.label not in dates or interval in rerun or interval in stale)
    lookback: tuple[Interval, ...] = ()
    if report.lookback:
        # Late data: the newest computed intervals are computed again.
        missing_set = set(missing)
        lookback = tuple([interval for interval in due if interval not in missing_set][-report.lookback:])
    wanted = sorted(set(missing) | set(lookback))
    todo, backing_off = state.split_retries(report.key, file.explode, wanted, now,
                                            inputs.limits.retry_failed_now)
    window_start = due[0].label if due else None
    if blocked is not None:
        reasons = _fold([(interval, blocked) for interval in missing])
        return FilePlan(report.key, file.explode, file.path, None, missing, lookback, rerun,
                        tuple(backing_off), (), (), reasons, window_start, stale)
    return FilePlan(report.key, file.explode, file.path, None, missing, lookback, rerun, tuple(backing_off),
                    tuple(todo), (), (), window_start, stale)


def _stale(inputs: _Inputs, file: FileInput) -> frozenset[Interval]:
    """The due dates the file holds that an older version computed, when the
    report's on_query_change asks for them to be recomputed (from its date on)."""
    policy, versions = inputs.report.on_query_change, inputs.versions
    if versions is None or policy.policy != "rerun" or not file.dates:
        return frozenset()
    since = policy.since.isoformat() if policy.since else None
    indexes = versions.record.older_labels(file.path, inputs.labels, file.dates, versions.current, since)
    return frozenset(inputs.due[index] for index in indexes)


def _apply_limit(draft: FilePlan, taken: set[Interval], limit: int | None, state: State,
                 now: datetime) -> FilePlan:
    """The file's plan once the per-run limit chose which of its intervals run now."""
    if draft.error is not None:
        return draft
    todo = tuple(interval for interval in draft.todo if interval in taken)
    later = tuple(interval for interval in draft.todo if interval not in taken)
    backing = set(draft.backing_off)
    later_set = set(later)
    why: list[tuple[Interval, str]] = []
    for interval in draft.missing:
        key = failure_key(draft.explode, interval.label)
        failure = state.failure(draft.report_key, key)
        since = state.waiting_since(draft.report_key, key)
        if interval in backing and failure is not None:
            why.append((interval, f"failed: {failure.error} ({failure.attempts} attempts, "
                                  f"next try after {failure.retry_after})"))
        elif interval in later_set:
            why.append((interval, f"left for a later run (at most {limit} intervals per run)"))
        elif interval not in taken:
            why.append((interval, "not computed yet"))
        elif since is not None:
            why.append((interval, f"waiting for data since {since:%Y-%m-%dT%H:%MZ}"))
        elif failure is not None:
            why.append((interval, f"failed: {failure.error} ({failure.attempts} attempts, "
                                  f"next try after {failure.retry_after})"))
        elif interval in draft.rerun:
            why.append((interval, "rerun requested (the next run recomputes it)"))
        elif interval in draft.stale:
            why.append((interval, "computed by an older version of the report (on_query_change: "
                                  "the next run recomputes it)"))
        else:
            why.append((interval, "not computed yet (the next run computes it)"))
    return FilePlan(draft.report_key, draft.explode, draft.path, None, draft.missing, draft.lookback,
                    draft.rerun, draft.backing_off, todo, later, _fold(why), draft.window_start, draft.stale)


def _fold(why: list[tuple[Interval, str]]) -> tuple[tuple[str, str], ...]:
    """Consecutive intervals with the same reason, as ('first..last', reason)."""
    folded: list[tuple[list[Interval], str]] = []
    for interval, reason in why:
        if folded and folded[-1][1] == reason and folded[-1][0][-1].end == interval.start:
            folded[-1][0].append(interval)
        else:
            folded.append(([interval], reason))
    return tuple((compress(group), reason) for group, reason in folded)


def ranges(found: Sequence[Interval]) -> list[tuple[Interval, Interval, int]]:
    """Consecutive intervals folded into (first, last, count)."""
    folded: list[tuple[Interval, Interval, int]] = []
    for interval in found:
        if folded and folded[-1][1].end == interval.start:
            first, _, count = folded[-1]
            folded[-1] = (first, interval, count + 1)
        else:
            folded.append((interval, interval, 1))
    return folded


def compress(found: Sequence[Interval]) -> str:
    """'2026-01-01..2026-01-31, 2026-02-03' for a list of intervals."""
    return ", ".join(first.label if count == 1 else f"{first.label}..{last.label}"
                     for first, last, count in ranges(found))


def next_due_time(report: ReportConfig, due: Sequence[Interval], now: datetime) -> datetime | None:
    """When the interval after the last due one can be computed (its end plus lag),
    moved to the next scheduled time for reports with a `schedule:`; None past
    the end of the calendar."""
    try:
        start = due[-1].end if due else intervals.truncate(
            intervals.in_zone(report.starts, report.zone), report.granularity)
        moment = intervals.step(start, report.granularity) + timedelta(seconds=report.lag)
        if report.schedule:
            moment = intervals.next_schedule_time(report.schedule, max(moment, now) - timedelta(seconds=1))
    except (OverflowError, ValueError):
        return None
    return moment.astimezone(UTC)
