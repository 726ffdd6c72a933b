# Operating views: the plan of a run (`run --dry-run`) and the state of a
# folder (`status`), computed from the config, the output files, the rerun
# requests and the run state, without executing anything. May read: those;
# writes nothing, connects to nothing.

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from . import intervals, reruns, store
from .config import FolderConfig, ReportConfig
from .state import Failure, State, failure_key


@dataclass
class CombinationView:
    explode: tuple[tuple[str, str], ...]
    path: Path
    first: str | None = None          # oldest date in the file
    last: str | None = None           # newest date in the file
    missing: list[intervals.Interval] = field(default_factory=list)
    backing_off: list[intervals.Interval] = field(default_factory=list)  # failed, waiting to retry
    failures: dict[str, Failure] = field(default_factory=dict)           # date -> failure
    waiting: dict[str, datetime] = field(default_factory=dict)           # date -> waiting for data since
    reasons: list[tuple[str, str]] = field(default_factory=list)         # (date range, why missing)
    error: str | None = None          # the output file cannot be read

    @property
    def name(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.explode)


@dataclass
class ReportView:
    report: ReportConfig
    combinations: list[CombinationView]
    due: int                          # intervals that should exist now (per combination)
    pending_reruns: int
    next_due: datetime | None         # when the next interval becomes computable
    schedule_due: bool = True

    @property
    def missing(self) -> int:
        return sum(len(c.missing) for c in self.combinations)

    @property
    def failing(self) -> int:
        return sum(len(c.failures) for c in self.combinations) + sum(
            1 for c in self.combinations if c.error)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.failing == 0

    def last_failure(self) -> tuple[str, Failure] | None:
        found = [(f"{c.name} {label}".strip(), failure) for c in self.combinations
                 for label, failure in c.failures.items()]
        return max(found, key=lambda item: item[1].last_failed) if found else None


def _ranges(found: list[intervals.Interval]) -> list[tuple[intervals.Interval, intervals.Interval, int]]:
    """Consecutive intervals folded into (first, last, count)."""
    folded: list[tuple[intervals.Interval, intervals.Interval, int]] = []
    for interval in found:
        if folded and folded[-1][1].end == interval.start:
            first, _, count = folded[-1]
            folded[-1] = (first, interval, count + 1)
        else:
            folded.append((interval, interval, 1))
    return folded


def _fold_reasons(why: list[tuple[intervals.Interval, str]]) -> list[tuple[str, str]]:
    """Consecutive intervals with the same reason, as ('first..last', reason)."""
    folded: list[tuple[list[intervals.Interval], str]] = []
    for interval, reason in why:
        if folded and folded[-1][1] == reason and folded[-1][0][-1].end == interval.start:
            folded[-1][0].append(interval)
        else:
            folded.append(([interval], reason))
    return [(compress(group), reason) for group, reason in folded]


def report_notes(view: "ReportView") -> list[str]:
    """Why intervals a reader might expect are not there at all."""
    report, notes = view.report, []
    if view.next_due is not None:
        notes.append(f"next interval due at {view.next_due.astimezone(timezone.utc):%Y-%m-%dT%H:%MZ}"
                     + (f" (lag {report.lag} s)" if report.lag else ""))
    if report.max_data_points:
        notes.append(f"only the newest {report.max_data_points} intervals are kept (max_data_points)")
    if view.due == 0:
        notes.append(f"starts {report.starts}: nothing is due yet")
    return notes


def compress(found: list[intervals.Interval]) -> str:
    """'2026-01-01..2026-01-31, 2026-02-03' for a list of intervals."""
    return ", ".join(first.label if count == 1 else f"{first.label}..{last.label}"
                     for first, last, count in _ranges(found))


def next_due_time(report: ReportConfig, due: list[intervals.Interval], now: datetime) -> datetime:
    """When the interval after the last due one can be computed (its end plus lag),
    moved to the next scheduled time for reports with a `schedule:`."""
    start = due[-1].end if due else intervals.truncate(intervals.in_zone(report.starts, report.zone),
                                                       report.granularity)
    moment = intervals.step(start, report.granularity) + timedelta(seconds=report.lag)
    if report.schedule:
        moment = intervals.next_schedule_time(report.schedule, max(moment, now) - timedelta(seconds=1))
    return moment


def survey(folder: FolderConfig, output_folder: Path, now: datetime,
           only_reports: tuple[str, ...] = (), retry_failed_now: bool = False) -> list[ReportView]:
    state = State.load(output_folder)
    requests = reruns.read_requests(folder.query_folder)
    views = []
    for report in folder.reports.values():
        if only_reports and report.key not in only_reports:
            continue
        due = intervals.due_intervals(report, now)
        report_reruns = [r.dates for r in requests if report.key in r.reports or not r.reports]
        view = ReportView(report=report, combinations=[], due=len(due),
                          pending_reruns=len(report_reruns), next_due=next_due_time(report, due, now))
        if report.schedule:
            view.schedule_due = intervals.schedule_due(report.schedule, now,
                                                       state.last_started(report.key))
        for explode in report.combinations():
            combination = CombinationView(explode=explode, path=output_folder / report.key)
            view.combinations.append(combination)
            try:
                combination.path = store.output_path(output_folder, report.key, explode)
                output = store.OutputFile.load(combination.path)
            except store.StoreError as exc:
                combination.error = str(exc)
                continue
            if output.by_date:
                combination.first, combination.last = min(output.by_date), max(output.by_date)
            plan = intervals.plan(due, output.dates, report_reruns)
            combination.missing = list(plan.missing)
            _, combination.backing_off = state.split_retries(report.key, explode, plan.missing, now,
                                                             retry_failed_now)
            why: list[tuple[intervals.Interval, str]] = []
            for interval in plan.missing:
                key = failure_key(explode, interval.label)
                failure = state.failure(report.key, key)
                since = state.waiting_since(report.key, key)
                if failure:
                    combination.failures[interval.label] = failure
                    why.append((interval, f"failed: {failure.error} ({failure.attempts} attempts, "
                                          f"next try after {failure.retry_after})"))
                elif since:
                    combination.waiting[interval.label] = since
                    why.append((interval, f"waiting for data since {since:%Y-%m-%dT%H:%MZ}"))
                elif not view.schedule_due and report.schedule:
                    upcoming = intervals.next_schedule_time(report.schedule, now)
                    why.append((interval, f"not scheduled now (next {upcoming:%Y-%m-%dT%H:%MZ})"))
                else:
                    why.append((interval, "not computed yet (the next run computes it)"))
            combination.reasons = _fold_reasons(why)
        views.append(view)
    return views


def status_json(folder: FolderConfig, views: list[ReportView], verbose: bool) -> dict[str, Any]:
    def failure_json(failure: Failure) -> dict[str, Any]:
        return {"error": failure.error, "attempts": failure.attempts,
                "first_failed": failure.first_failed, "last_failed": failure.last_failed,
                "retry_after": failure.retry_after}

    reports = []
    for view in views:
        dates = [c for c in view.combinations if c.first]
        last = view.last_failure()
        entry: dict[str, Any] = {
            "report": view.report.key,
            "granularity": view.report.granularity.value,
            "first": min((c.first for c in dates), default=None),
            "last": max((c.last for c in dates), default=None),
            "due": view.due * len(view.combinations),
            "missing": view.missing,
            "failing": view.failing,
            "pending_reruns": view.pending_reruns,
            "last_failure": ({"where": last[0], **failure_json(last[1])} if last else None),
            "next_due": (view.next_due.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                         if view.next_due else None),
            "schedule": view.report.schedule,
            "waiting": sum(len(c.waiting) for c in view.combinations),
            "ok": view.ok,
        }
        errors = [c.error for c in view.combinations if c.error]
        if errors:
            entry["file_errors"] = errors
        if verbose:
            entry["combinations"] = [{
                "explode": dict(c.explode), "file": str(c.path), "first": c.first, "last": c.last,
                "missing": len(c.missing), "missing_ranges": compress(c.missing),
                "failures": {label: failure_json(f) for label, f in sorted(c.failures.items())},
                "waiting": {label: f"{since:%Y-%m-%dT%H:%M:%SZ}" for label, since in sorted(c.waiting.items())},
                "why_missing": [{"intervals": span, "reason": reason} for span, reason in c.reasons],
                "error": c.error,
            } for c in view.combinations]
            entry["notes"] = report_notes(view)
        reports.append(entry)
    return {
        "query_folder": str(folder.query_folder),
        "config_errors": [str(error) for error in folder.errors],
        "reports": reports,
        "ok": all(view.ok for view in views) and not folder.errors,
    }
