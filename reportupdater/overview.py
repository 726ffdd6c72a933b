# Operating views: the plan of a run (`run --dry-run`) and the state of a
# folder (`status`), computed from the config, the output files, the rerun
# requests, the run state and the version records (which version computed
# which stored dates), without executing anything. May read: those, the
# templates and scripts (for today's version), and the journal a killed run
# left (read only: replaying it needs the folder's lock, which only a run
# takes); writes nothing, connects to nothing.

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

from . import journal, reruns, versions
from . import plan as planning
from .config import FolderConfig, ReportConfig
from .datatypes import Interval
from .runner import read_outputs
from .state import Failure, State, failure_key


@dataclass
class CombinationView:
    plan: planning.FilePlan
    first: str | None = None          # oldest date in the file
    last: str | None = None           # newest date in the file
    failures: dict[str, Failure] = field(default_factory=dict)           # date -> failure
    waiting: dict[str, datetime] = field(default_factory=dict)           # date -> waiting for data since
    by_version: versions.FileCount = versions.FileCount()                # its dates by version

    @property
    def explode(self) -> tuple[tuple[str, str], ...]:
        return self.plan.explode

    @property
    def path(self) -> Path:
        return self.plan.path

    @property
    def error(self) -> str | None:
        return self.plan.error

    @property
    def missing(self) -> tuple[Interval, ...]:
        return self.plan.missing

    @property
    def name(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.explode)


@dataclass
class ReportView:
    plan: planning.ReportPlan
    combinations: list[CombinationView]
    pending_reruns: int
    version: versions.Version | None = None        # today's
    record: versions.ReportRecord | None = None    # which version computed which dates

    @property
    def version_count(self) -> versions.FileCount:
        total = versions.FileCount()
        for combination in self.combinations:
            total = total.plus(combination.by_version)
        return total

    @property
    def in_use_since(self) -> str | None:
        """When today's version became the one computing (None: it has computed nothing yet)."""
        if self.record is None or self.version is None or self.record.current != self.version.id:
            return None
        return self.record.current_since

    @property
    def used_before(self) -> str | None:
        """When today's version, not the one computing now, was last used (a change back)."""
        if self.record is None or self.version is None or self.in_use_since is not None:
            return None
        entry = self.record.versions.get(self.version.id)
        return entry.last_used if entry is not None else None

    @property
    def recompute_stale(self) -> int:
        """Dates an older version computed that the next run recomputes (on_query_change)."""
        return sum(len(set(c.plan.stale) & set(c.plan.todo)) for c in self.combinations)

    @property
    def report(self) -> ReportConfig:
        return self.plan.report

    @property
    def due(self) -> int:
        """Intervals that should exist now (per combination)."""
        return len(self.plan.due)

    @property
    def next_due(self) -> datetime | None:
        return self.plan.next_due

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


def report_notes(view: ReportView) -> list[str]:
    """Why intervals a reader might expect are not there at all."""
    report, notes = view.report, []
    if view.next_due is not None:
        notes.append(f"next interval due at {view.next_due:%Y-%m-%dT%H:%MZ}"
                     + (f" (lag {report.lag} s)" if report.lag else ""))
    if report.max_data_points:
        notes.append(f"only the newest {report.max_data_points} intervals are kept (max_data_points)")
    if view.due == 0:
        notes.append(f"starts {report.starts}: nothing is due yet")
    if view.plan.later:
        notes.append(f"the next run computes {view.plan.todo} intervals and leaves {view.plan.later} "
                     f"for later runs (at most {view.plan.limit} per run)")
    return notes


def survey(folder: FolderConfig, output_folder: Path, now: datetime,
           only_reports: tuple[str, ...] = (), limits: planning.Limits = planning.Limits(),
           forced: bool = False) -> list[ReportView]:
    """The plan of every (selected) report as a run into `output_folder` at
    `now` would make it: the same plan_report call the runner makes.
    `forced`: the selected reports run whatever their schedule (run -r)."""
    state = State.load(output_folder)
    requests = reruns.read_requests(folder.query_folder)
    pending = reruns.RerunProgress.load(output_folder).pending(requests)
    views = []
    for report in folder.reports.values():
        if only_reports and report.key not in only_reports:
            continue
        inputs, outputs = read_outputs(report, output_folder)
        report_pending = [rerun for rerun in pending if rerun.names(report.key)]
        report_limits = replace(limits, forced=forced and report.key in only_reports)
        version = versions.fingerprint(report, folder.query_folder)
        record = versions.load(output_folder, report.key)
        plan = planning.plan_report(report, inputs, state, report_pending, now, report_limits,
                                    versions.PlanVersions(record, version.id))
        view = ReportView(plan=plan, combinations=[], pending_reruns=len(report_pending),
                          version=version, record=record)
        due_labels = [interval.label for interval in plan.due]
        for file_plan in plan.files:
            combination = CombinationView(plan=file_plan)
            output = outputs.get(file_plan.explode)
            if output is not None and output.dates:
                combination.first, combination.last = min(output.dates), max(output.dates)
                # A complete file holds the due dates, sorted already.
                complete = len(output.dates) == len(due_labels) and not file_plan.missing
                combination.by_version = record.count(file_plan.path, output.dates, version.id,
                                                      due_labels if complete else None)
            for interval in file_plan.missing:
                key = failure_key(file_plan.explode, interval.label)
                failure = state.failure(report.key, key)
                since = state.waiting_since(report.key, key)
                if failure:
                    combination.failures[interval.label] = failure
                elif since:
                    combination.waiting[interval.label] = since
            view.combinations.append(combination)
        views.append(view)
    return views


@dataclass(frozen=True)
class JournalWaiting:
    """A journal a killed run left: its intervals are computed but not yet in
    the files, so status and dry-run count them as missing until the next
    run replays them (before it plans anything)."""

    path: Path
    intervals: int  # records of its whole frames
    damage: str | None = None

    def line(self) -> str:
        if self.damage is not None:
            return (f"journal: {self.damage}; the next run applies nothing of it, moves it aside "
                    "and computes its intervals again")
        return (f"journal: {self.path} holds {self.intervals} computed intervals of an interrupted "
                "run; the next run writes them into the files first")


def journal_waiting(output_folder: Path) -> JournalWaiting | None:
    """The journal of the output folder, read without the lock, or None."""
    path = journal.journal_path(Path(output_folder))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return JournalWaiting(path, 0, f"{path}: cannot be read: {exc.strerror}")
    read = journal.read_journal(data, str(path))
    return JournalWaiting(path, len(read.records), read.damage)


def status_json(folder: FolderConfig, views: list[ReportView], verbose: bool,
                waiting: JournalWaiting | None = None) -> dict[str, Any]:
    def failure_json(failure: Failure) -> dict[str, Any]:
        return {"error": failure.error, "attempts": failure.attempts,
                "first_failed": failure.first_failed, "last_failed": failure.last_failed,
                "retry_after": failure.retry_after}

    reports = []
    for view in views:
        firsts = [c.first for c in view.combinations if c.first is not None]
        lasts = [c.last for c in view.combinations if c.last is not None]
        last = view.last_failure()
        entry: dict[str, Any] = {
            "report": view.report.key,
            "granularity": view.report.granularity.value,
            "first": min(firsts, default=None),
            "last": max(lasts, default=None),
            "due": view.due * len(view.combinations),
            "missing": view.missing,
            "failing": view.failing,
            "pending_reruns": view.pending_reruns,
            "last_failure": ({"where": last[0], **failure_json(last[1])} if last else None),
            "next_due": (view.next_due.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                         if view.next_due else None),
            "next_run": {"compute": view.plan.todo, "later": view.plan.later,
                         "verdict": view.plan.verdict.value},
            "schedule": view.report.schedule,
            "waiting": sum(len(c.waiting) for c in view.combinations),
            "ok": view.ok,
        }
        count = view.version_count
        entry["versions"] = {"current": view.version.id if view.version else None,
                             "in_use_since": view.in_use_since, "used_before": view.used_before,
                             "older": count.older, "unknown": count.unknown,
                             "on_query_change": str(view.report.on_query_change),
                             "recompute_next_run": view.recompute_stale}
        errors = [c.error for c in view.combinations if c.error]
        if errors:
            entry["file_errors"] = errors
        if verbose:
            entry["combinations"] = [{
                "explode": dict(c.explode), "file": str(c.path), "first": c.first, "last": c.last,
                "missing": len(c.missing), "missing_ranges": planning.compress(c.missing),
                "next_run": planning.compress(c.plan.todo),
                "failures": {label: failure_json(f) for label, f in sorted(c.failures.items())},
                "waiting": {label: f"{since:%Y-%m-%dT%H:%M:%SZ}"
                            for label, since in sorted(c.waiting.items())},
                "why_missing": [{"intervals": span, "reason": reason} for span, reason in c.plan.reasons],
                "versions": {"older": c.by_version.older, "unknown": c.by_version.unknown,
                             "older_ranges": ", ".join(first if first == last else f"{first}..{last}"
                                                       for first, last in c.by_version.older_ranges)},
                "error": c.error,
            } for c in view.combinations]
            entry["notes"] = report_notes(view)
        reports.append(entry)
    return {
        "query_folder": str(folder.query_folder),
        "config_errors": [str(error) for error in folder.errors],
        "reports": reports,
        "journal": ({"path": str(waiting.path), "intervals": waiting.intervals,
                     **({"damage": waiting.damage} if waiting.damage else {})} if waiting else None),
        "ok": all(view.ok for view in views) and not folder.errors,
    }


def version_lines(entry: dict[str, Any], verbose: bool) -> list[str]:
    """What `status` says of one report's versions (from its status_json entry):
    the dates an older version computed, since when today's is in use and,
    with verbose, the dates of unknown version and each file's older ranges."""
    found = entry.get("versions")
    if not found:
        return []
    key, lines = entry["report"], []
    since = (f"the current version {found['current']} is in use since {found['in_use_since']}"
             if found["in_use_since"] else
             f"the current version {found['current']} was in use until {found['used_before']} and "
             "computes again from the next run" if found.get("used_before") else
             f"the current version {found['current']} has computed nothing yet")
    if found["older"]:
        policy = found["on_query_change"]
        then = (f"the next run recomputes {found['recompute_next_run']} of them"
                if found["recompute_next_run"] else
                "kept as they are" if policy == "keep" else "recomputed by later runs")
        lines.append(f"{key}: {found['older']} intervals computed by an older version "
                     f"(on_query_change: {policy}: {then}; 'reportupdater changes' shows the diff); {since}")
    if verbose and found["unknown"]:
        lines.append(f"{key}: {found['unknown']} intervals of unknown version (written before versions "
                     "were recorded, or by the original tool)")
    for combination in entry.get("combinations", []) if verbose else []:
        file_versions = combination.get("versions", {})
        if file_versions.get("older"):
            name = " ".join(f"{k}={v}" for k, v in combination["explode"].items()) or combination["file"]
            lines.append(f"{key} {name}: {file_versions['older']} intervals by an older version: "
                         f"{file_versions['older_ranges']}")
    return lines
