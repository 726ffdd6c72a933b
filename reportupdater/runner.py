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

from . import config as config_stage
from . import intervals, publish, reruns, store
from .engines import Engine, EngineError, Job, SiteDefaults, engine_class
from .lock import FolderBusy, FolderLock, LockError

log = logging.getLogger("reportupdater")

# A crash loses at most this much work: files are written at least this often.
CHECKPOINT_SECONDS = 30.0
CHECKPOINT_INTERVALS = 1000
# After this many intervals in a row fail with the same error (a database
# down, a missing command), the rest of that combination waits for next run.
GIVE_UP_AFTER_SAME_ERRORS = 5


@dataclass
class RunOptions:
    query_folder: Path
    output_folder: Path
    config_path: Path | None = None
    now: datetime | None = None           # evaluate everything as if it were this time (UTC)
    only_reports: tuple[str, ...] = ()    # empty: every report
    graphite: bool = True                 # --no-graphite
    hive_url: str | None = None           # site-wide Hive server for folders that name none
    checkpoint_seconds: float = CHECKPOINT_SECONDS
    checkpoint_intervals: int = CHECKPOINT_INTERVALS


@dataclass
class ReportOutcome:
    computed: int = 0
    failed: int = 0
    failed_intervals: list[intervals.Interval] = field(default_factory=list)
    file_failed: bool = False     # an output file could not be read or written
    publish_failed: bool = False  # its Graphite points could not be built
    skipped: bool = False         # starts in the future

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.file_failed and not self.publish_failed


@dataclass
class RunSummary:
    config_errors: list[str] = field(default_factory=list)
    reports: dict[str, ReportOutcome] = field(default_factory=dict)
    busy: bool = False  # another run held the folder; nothing was touched
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
    engines = _Engines(folder, SiteDefaults(hive_url=options.hive_url))
    publisher = None
    if folder.graphite is not None and options.graphite:
        publisher = publish.Publisher(folder.graphite, options.output_folder)
        publisher.queue.remove_stale_temp()
        publisher.flush()  # what earlier runs could not deliver goes first
    try:
        for report in selected:
            report_reruns = [request.dates for request in requests
                             if report.key in request.reports or not request.reports]
            summary.reports[report.key] = _run_report(report, engines, publisher, options, now,
                                                      report_reruns)
    finally:
        engines.close()
        if publisher is not None:
            summary.graphite_queued = not publisher.flush()
    _consume_reruns(requests, folder, summary)
    for key, outcome in summary.reports.items():
        log.info("%s: %d computed, %d failed%s", key, outcome.computed, outcome.failed,
                 ", output file error" if outcome.file_failed else "")


def _run_report(report: config_stage.ReportConfig, engines: _Engines,
                publisher: publish.Publisher | None, options: RunOptions,
                now: datetime, report_reruns: list[intervals.DateRange]) -> ReportOutcome:
    outcome = ReportOutcome()
    due = intervals.due_intervals(report, now)
    if not due:
        log.warning("%s: starts %s, after its last due interval; skipped", report.key, report.starts)
        outcome.skipped = True
        return outcome
    if report.graphite is None:
        publisher = None
    for explode in report.combinations():
        _run_combination(report, explode, due, engines, publisher, options, report_reruns, outcome)
    return outcome


def _run_combination(report: config_stage.ReportConfig, explode: tuple[tuple[str, str], ...],
                     due: list[intervals.Interval], engines: _Engines,
                     publisher: publish.Publisher | None, options: RunOptions,
                     report_reruns: list[intervals.DateRange], outcome: ReportOutcome) -> None:
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
    if plan.missing:
        log.info("%s: %d of %d intervals to compute", name, len(plan.missing), len(plan.due))

    last_save = time.monotonic()
    since_save = 0
    fresh: set[str] = set()  # dates written since the last save: their points go to Graphite
    last_error, same_errors = "", 0
    for position, interval in enumerate(plan.missing):
        job = Job(report=report, interval=interval, explode=explode)
        started = time.monotonic()
        try:
            result = engines.get(report.type).run(job)
            output.merge(result, {interval.label})
        except (EngineError, store.StoreError) as exc:
            log.error("%s: failed: %s", job.describe(), exc)
            outcome.failed += 1
            outcome.failed_intervals.append(interval)
            same_errors = same_errors + 1 if str(exc) == last_error else 1
            last_error = str(exc)
            if same_errors >= GIVE_UP_AFTER_SAME_ERRORS:
                rest = plan.missing[position + 1:]
                if rest:
                    log.error("%s: %d intervals in a row failed with the same error; the other %d "
                              "wait for the next run", name, same_errors, len(rest))
                    outcome.failed += len(rest)
                    outcome.failed_intervals.extend(rest)
                break
            continue
        last_error, same_errors = "", 0
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

    if report.max_data_points and plan.window_start:
        output.trim_before(plan.window_start)
    _save(output, report, explode, name, publisher, fresh, outcome)


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
