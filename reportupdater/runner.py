# The runner: composes the stages in one place.
#
#   config.load -> intervals.plan -> engines (execute) -> store (merge, save)
#   -> publish (Graphite points queued before each save, sent after)
#
# No stage calls the next; this module does. It holds the folder lock for the
# whole run, reads each output file once, writes it at checkpoints and at the
# end, and turns every failure into a log line and a count: one report,
# combination or interval failing never stops the others.

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import config as config_stage
from . import intervals, publish, reruns, store
from .state import State, failure_key
from .engines import Engine, EngineError, Job, SiteDefaults, engine_class
from .lock import FolderBusy, FolderLock, LockError

log = logging.getLogger("reportupdater")

# A crash loses at most this much work: files are written at least this often.
CHECKPOINT_SECONDS = 30.0
CHECKPOINT_INTERVALS = 1000


@dataclass
class RunOptions:
    query_folder: Path
    output_folder: Path
    config_path: Path | None = None
    now: datetime | None = None           # evaluate everything as if it were this time (UTC)
    only_reports: tuple[str, ...] = ()    # empty: every report
    graphite: bool = True                 # --no-graphite
    hive_url: str | None = None           # site-wide Hive server for folders that name none
    retry_failed_now: bool = False        # ignore the backoff of failed intervals
    # Called as progress(name, intervals done, intervals planned) for a terminal display.
    progress: Callable[[str, int, int], None] | None = None
    checkpoint_seconds: float = CHECKPOINT_SECONDS
    checkpoint_intervals: int = CHECKPOINT_INTERVALS


@dataclass
class ReportOutcome:
    computed: int = 0
    failed: int = 0
    failed_intervals: list[intervals.Interval] = field(default_factory=list)
    backing_off: int = 0          # failed before; not retried yet (1, 2, 4 ... hours)
    file_failed: bool = False     # an output file could not be read or written
    publish_failed: bool = False  # its Graphite points could not be built
    skipped: bool = False         # starts in the future
    not_scheduled: bool = False   # its `schedule:` says not now
    seconds: float = 0.0
    newest: str | None = None     # newest date in its outputs after the run

    @property
    def ok(self) -> bool:
        return (self.failed == 0 and self.backing_off == 0 and not self.file_failed
                and not self.publish_failed)


@dataclass
class RunSummary:
    config_errors: list[str] = field(default_factory=list)
    reports: dict[str, ReportOutcome] = field(default_factory=dict)
    busy: bool = False  # another run held the folder; nothing was touched
    folder: config_stage.FolderConfig | None = None
    graphite_queued: bool = False  # Graphite was unreachable: points wait in the queue

    @property
    def exit_code(self) -> int:
        """0: all due work done or skipped; 1: something failed; 2: config errors."""
        if self.busy:
            return 0
        if self.config_errors:
            return 2
        return 0 if all(outcome.ok for outcome in self.reports.values()) else 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Engines:
    """One engine per report type for the whole run, created on first use."""

    def __init__(self, folder: config_stage.FolderConfig, site: SiteDefaults):
        self.folder = folder
        self.site = site
        self._engines: dict[str, Engine] = {}

    def get(self, report_type: str) -> Engine:
        if report_type not in self._engines:
            self._engines[report_type] = engine_class(report_type)(self.folder, self.site)
        return self._engines[report_type]

    def close(self) -> None:
        for engine in self._engines.values():
            try:
                engine.close()
            except Exception as exc:  # closing must not hide the run's outcome
                log.warning("closing %s engine: %s", engine.type, exc)


def run(options: RunOptions) -> RunSummary:
    """One run over a query folder. Raises ConfigError for folder-level config errors."""
    now = options.now or utcnow()
    if not Path(options.query_folder).is_dir():
        raise config_stage.ConfigError(f"{options.query_folder}: query folder does not exist")
    summary = RunSummary()
    try:
        with FolderLock(Path(options.query_folder)):
            folder = config_stage.load(options.query_folder, options.config_path)
            summary.folder = folder
            for warning in folder.warnings:
                log.warning("%s", warning)
            summary.config_errors = [str(error) for error in folder.errors]
            for error in summary.config_errors:
                log.error("%s", error)
            selected = select_reports(folder, options.only_reports)
            _run_locked(folder, selected, options, now, summary)
    except FolderBusy as exc:
        log.warning("%s; exiting without touching anything", exc)
        summary.busy = True
    except LockError as exc:
        raise config_stage.ConfigError(str(exc)) from None
    return summary


def select_reports(folder: config_stage.FolderConfig,
                   only: tuple[str, ...]) -> list[config_stage.ReportConfig]:
    if not only:
        return list(folder.reports.values())
    known = set(folder.reports) | folder.broken_reports
    for key in only:
        if key not in known:
            raise config_stage.ConfigError(f"{folder.config_path}: report {key!r} is not in 'reports'")
    return [folder.reports[key] for key in only if key in folder.reports]


def _run_locked(folder: config_stage.FolderConfig, selected: list[config_stage.ReportConfig],
                options: RunOptions, now: datetime, summary: RunSummary) -> None:
    requests = reruns.read_requests(folder.query_folder)
    state = State.load(options.output_folder)
    engines = _Engines(folder, SiteDefaults(hive_url=options.hive_url))
    publisher = None
    if folder.graphite is not None and options.graphite:
        publisher = publish.Publisher(folder.graphite, options.output_folder, folder.query_folder)
        publisher.queue.remove_stale_temp()
        publisher.flush()  # what earlier runs could not deliver goes first
    try:
        for report in selected:
            report_reruns = [request.dates for request in requests
                             if report.key in request.reports or not request.reports]
            started = time.monotonic()
            outcome = _run_report(report, engines, publisher, state, options, now, report_reruns)
            outcome.seconds = time.monotonic() - started
            summary.reports[report.key] = outcome
            _save_state(state)
    finally:
        engines.close()
        if publisher is not None:
            summary.graphite_queued = not publisher.flush()
    state.forget_reports(set(folder.reports) | folder.broken_reports)
    _save_state(state)
    _consume_reruns(requests, folder, summary)
    _log_summary(summary)


def _save_state(state: State) -> None:
    try:
        state.save()
    except OSError as exc:
        log.warning("%s: cannot write the run state: %s", state.path, exc.strerror)


def _log_summary(summary: RunSummary) -> None:
    for key, outcome in summary.reports.items():
        notes = [note for flag, note in ((outcome.skipped, "starts in the future"),
                                         (outcome.not_scheduled, "not scheduled now"),
                                         (outcome.file_failed, "output file error"),
                                         (outcome.publish_failed, "Graphite step failed")) if flag]
        log.info("report %s: %d computed, %d failed, %d waiting to retry, %.1f s%s", key,
                 outcome.computed, outcome.failed, outcome.backing_off, outcome.seconds,
                 f" ({', '.join(notes)})" if notes else "")
    outcomes = summary.reports.values()
    log.info("run: %d reports, %d intervals computed, %d failed, %d waiting to retry, %.1f s",
             len(summary.reports), sum(o.computed for o in outcomes), sum(o.failed for o in outcomes),
             sum(o.backing_off for o in outcomes), sum(o.seconds for o in outcomes))


def _run_report(report: config_stage.ReportConfig, engines: _Engines,
                publisher: publish.Publisher | None, state: State, options: RunOptions,
                now: datetime, report_reruns: list[intervals.DateRange]) -> ReportOutcome:
    outcome = ReportOutcome()
    due = intervals.due_intervals(report, now)
    if not due:
        log.warning("%s: starts %s, after its last due interval; skipped", report.key, report.starts)
        outcome.skipped = True
        return outcome
    if report.schedule and not intervals.schedule_due(report.schedule, now,
                                                      state.last_started(report.key)):
        log.info("%s: not scheduled now (schedule %r, next %s)", report.key, report.schedule,
                 intervals.next_schedule_time(report.schedule, now).strftime("%Y-%m-%dT%H:%MZ"))
        outcome.not_scheduled = True
        return outcome
    if report.schedule:
        state.started(report.key, now)
    if report.graphite is None:
        publisher = None
    for explode in report.combinations():
        _run_combination(report, explode, due, engines, publisher, state, options, now,
                         report_reruns, outcome)
    return outcome


def _run_combination(report: config_stage.ReportConfig, explode: tuple[tuple[str, str], ...],
                     due: list[intervals.Interval], engines: _Engines,
                     publisher: publish.Publisher | None, state: State, options: RunOptions,
                     now: datetime, report_reruns: list[intervals.DateRange],
                     outcome: ReportOutcome) -> None:
    path = store.output_path(options.output_folder, report.key, explode)
    name = " ".join([report.key] + [f"{key}={value}" for key, value in explode])
    try:
        output = store.OutputFile.load(path)
    except store.StoreError as exc:
        log.error("%s: %s", name, exc)
        outcome.file_failed = True
        return
    output.remove_stale_temp()
    plan = intervals.plan(due, output.dates, report_reruns)
    todo, waiting = state.split_retries(report.key, explode, plan.missing, now,
                                        options.retry_failed_now)
    if waiting:  # failed before: let the source recover
        outcome.backing_off += len(waiting)
        log.info("%s: %d failed intervals wait for their retry time (--retry-failed-now to force)",
                 name, len(waiting))
    if todo:
        log.info("%s: %d of %d intervals to compute", name, len(todo), len(plan.due))

    last_save = time.monotonic()
    since_save = 0
    fresh: set[str] = set()  # dates written since the last save: their points go to Graphite
    for position, interval in enumerate(todo):
        if options.progress:
            options.progress(name, position, len(todo))
        job = Job(report=report, interval=interval, explode=explode)
        started = time.monotonic()
        try:
            result = engines.get(report.type).run(job)
            output.merge(result, {interval.label})
        except (EngineError, store.StoreError) as exc:
            failure = state.record_failure(report.key, failure_key(explode, interval.label), str(exc), now)
            log.error("%s: failed: %s", job.describe(), exc)
            if failure.attempts > 1:
                log.info("%s: failed %d times in a row; next try after %s", job.describe(),
                         failure.attempts, failure.retry_after)
            outcome.failed += 1
            outcome.failed_intervals.append(interval)
            continue
        state.clear_failure(report.key, failure_key(explode, interval.label))
        outcome.computed += 1
        since_save += 1
        fresh |= result.dates
        stray = result.dates - {interval.label}
        if stray:
            # Stored as the original did, but worth knowing: these rows
            # replace the rows of those dates, and if the interval's own date
            # is absent it will be computed again next run.
            log.warning("%s: result has rows dated outside the interval: %s",
                        job.describe(), ", ".join(sorted(stray)[:5]))
        log.info("%s: computed %d rows in %.2f s", job.describe(), len(result.rows),
                 time.monotonic() - started)
        if (since_save >= options.checkpoint_intervals
                or time.monotonic() - last_save >= options.checkpoint_seconds):
            if not _save(output, report, explode, name, publisher, fresh, outcome):
                return
            last_save, since_save, fresh = time.monotonic(), 0, set()

    if options.progress and todo:
        options.progress(name, len(todo), len(todo))
    if report.max_data_points and plan.window_start:
        output.trim_before(plan.window_start)
    _save(output, report, explode, name, publisher, fresh, outcome)
    if output.by_date:
        newest = max(output.by_date)
        outcome.newest = max(outcome.newest or newest, newest)


def _save(output: store.OutputFile, report: config_stage.ReportConfig,
          explode: tuple[tuple[str, str], ...], name: str, publisher: publish.Publisher | None,
          fresh: set[str], outcome: ReportOutcome) -> bool:
    """Queue the points of the fresh rows, then write the file: a crash in
    between sends points for rows not stored yet (harmless), never the reverse."""
    if publisher is not None and fresh and output.dirty:
        rows = [row for label in sorted(fresh & output.dates) for row in output.by_date[label]]
        try:
            publisher.enqueue(report, explode, output.header, rows)
        except publish.PublishError as exc:
            log.error("%s: Graphite: %s", name, exc)
            outcome.publish_failed = True
        except OSError as exc:
            log.error("%s: Graphite queue %s: %s", name, publisher.queue.folder, exc.strerror)
            outcome.publish_failed = True
    try:
        output.save(group=report.group)
        return True
    except store.StoreError as exc:
        log.error("%s: %s", name, exc)
        outcome.file_failed = True
        return False


def _consume_reruns(requests: list[reruns.RerunRequest], folder: config_stage.FolderConfig,
                    summary: RunSummary) -> None:
    """Delete a request once every report it names has recomputed its range."""
    for request in requests:
        done = True
        for key in request.reports or tuple(folder.reports) + tuple(folder.broken_reports):
            if key in folder.broken_reports:
                done = False  # keep it until the report's config is fixed
            elif key not in folder.reports:
                log.warning("%s: report %r is not in the config; ignored", request.path, key)
            elif key not in summary.reports:
                done = False  # not part of this run (-r)
            else:
                outcome = summary.reports[key]
                if outcome.file_failed or any(request.dates.overlaps(interval)
                                              for interval in outcome.failed_intervals):
                    done = False
        if done:
            reruns.consume(request)
            log.info("%s: rerun %s..%s done", request.path.name, request.dates.start, request.dates.end)
