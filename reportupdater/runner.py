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
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from . import config as config_stage
from . import intervals, publish, reruns, store
from .state import State, failure_key
from .engines import Engine, EngineError, Job, Result, SiteDefaults, engine_class, split_result
from .engines.script import kill_running_commands
from .lock import FolderBusy, FolderLock, LockError
from .pivot import pivot_result

log = logging.getLogger("reportupdater")

# Jobs in parallel by default: queries and scripts mostly wait on others.
DEFAULT_JOBS = min(8, 2 * (os.cpu_count() or 1))
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
    jobs: int = 0                         # parallel jobs; 0: DEFAULT_JOBS
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
    queries: int = 0              # queries or scripts run (a batch is one)
    engine_seconds: float = 0.0   # time spent inside them (summed over jobs)
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
    """Runs jobs on a pool of `jobs` threads: one engine per report type for
    the whole run, at most `max_connections` jobs at a time per database, one
    at a time for a report with `parallel: false`."""

    def __init__(self, folder: config_stage.FolderConfig, site: SiteDefaults):
        self.folder = folder
        self.site = site
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self._limits: dict[str, threading.Semaphore] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, site.jobs),
                                        thread_name_prefix="reportupdater")

    def get(self, report_type: str) -> Engine:
        with self._lock:
            if report_type not in self._engines:
                self._engines[report_type] = engine_class(report_type)(self.folder, self.site)
            return self._engines[report_type]

    def _limit(self, key: str, size: int) -> threading.Semaphore:
        with self._lock:
            return self._limits.setdefault(key, threading.Semaphore(size))

    def _run(self, job: Job) -> tuple[Result | None, Exception | None, float]:
        started = time.monotonic()
        held: list[threading.Semaphore] = []
        database = self.folder.databases.get(job.report.db or "")
        if database is not None and database.max_connections:
            held.append(self._limit(f"db:{database.key}", database.max_connections))
        if not job.report.parallel:
            held.append(self._limit(f"report:{job.report.key}", 1))
        for semaphore in held:
            semaphore.acquire()
        try:
            return self.get(job.report.type).run(job), None, time.monotonic() - started
        except EngineError as exc:
            return None, exc, time.monotonic() - started
        finally:
            for semaphore in reversed(held):
                semaphore.release()

    def execute(self, jobs: list[Job]) -> Iterator[tuple[Job, Result | None, Exception | None, float]]:
        """Run jobs concurrently; yield (job, result, error, seconds) in the
        order of `jobs`, so that merging (and header evolution) happens
        exactly as in a serial run.

        Only as many jobs as threads are in flight, so a million-interval
        backfill does not hold a million futures."""
        running: deque[tuple[Job, Future]] = deque()
        try:
            for job in jobs:
                running.append((job, self._pool.submit(self._run, job)))
                if len(running) >= self.site.jobs:
                    done, future = running.popleft()
                    yield (done, *future.result())
            while running:
                done, future = running.popleft()
                yield (done, *future.result())
        except BaseException:
            # Stopped (SIGTERM, Ctrl-C, a bug): kill what the workers wait for.
            for _, future in running:
                future.cancel()
            kill_running_commands()
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
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
    engines = _Engines(folder, SiteDefaults(hive_url=options.hive_url,
                                            jobs=options.jobs or DEFAULT_JOBS))
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
    log.info("run: %d reports, %d intervals computed, %d failed, %d waiting to retry, "
             "%d queries (%.1f s inside them), %.1f s", len(summary.reports),
             sum(o.computed for o in outcomes), sum(o.failed for o in outcomes),
             sum(o.backing_off for o in outcomes), sum(o.queries for o in outcomes),
             sum(o.engine_seconds for o in outcomes), sum(o.seconds for o in outcomes))


def _run_report(report: config_stage.ReportConfig, engines: _Engines,
                publisher: publish.Publisher | None, state: State, options: RunOptions,
                now: datetime, report_reruns: list[intervals.DateRange]) -> ReportOutcome:
    outcome = ReportOutcome()
    due = intervals.due_intervals(report, now)
    if not due:
        log.warning("%s: starts %s, after its last due interval; skipped", report.key, report.starts)
        outcome.skipped = True
        return outcome
    # A report named with -r runs now: the operator asked for it.
    if (report.schedule and report.key not in options.only_reports
            and not intervals.schedule_due(report.schedule, now, state.last_started(report.key))):
        log.info("%s: not scheduled now (schedule %r, next %s)", report.key, report.schedule,
                 intervals.next_schedule_time(report.schedule, now).strftime("%Y-%m-%dT%H:%MZ"))
        outcome.not_scheduled = True
        return outcome
    if report.schedule:
        state.started(report.key, now)
    if report.graphite is None:
        publisher = None

    files: list[_File] = []
    jobs: list[Job] = []
    for explode in report.combinations():
        target = _plan_file(report, explode, due, state, options, now, report_reruns, outcome)
        if target is not None:
            files.append(target)
            jobs += [Job(report=report, interval=batch[0].span(batch[-1]), explode=explode,
                         parts=tuple(batch))
                     for batch in intervals.batches(target.todo, report.batch)]
    total = sum(len(job.parts) for job in jobs)
    checkpoint = _Checkpoint(options)
    done = 0
    for job, result, error, seconds in engines.execute(jobs):
        target = next(f for f in files if f.explode == job.explode) if len(files) > 1 else files[0]
        done += len(job.parts)
        _take_result(job, result, error, seconds, target, state, now, outcome)
        if options.progress:
            options.progress(report.key, done, total)
        if checkpoint.due(len(job.parts)):
            for each in files:
                _save(each, publisher, outcome)
    for each in files:
        if report.max_data_points and each.window_start:
            each.output.trim_before(each.window_start)
        _save(each, publisher, outcome)
        if each.output.by_date:
            newest = max(each.output.by_date)
            outcome.newest = max(outcome.newest or newest, newest)
    return outcome


@dataclass
class _File:
    """One output file during a run: what it holds, what it lacks, what is new."""

    report: config_stage.ReportConfig
    explode: tuple[tuple[str, str], ...]
    output: store.OutputFile
    todo: list[intervals.Interval]
    window_start: str | None
    fresh: set[str] = field(default_factory=set)  # dates written since the last save

    @property
    def name(self) -> str:
        return " ".join([self.report.key] + [f"{key}={value}" for key, value in self.explode])


class _Checkpoint:
    """Files are written every so many seconds or intervals, never per interval."""

    def __init__(self, options: RunOptions):
        self.options = options
        self.last = time.monotonic()
        self.count = 0

    def due(self, intervals_done: int) -> bool:
        self.count += intervals_done
        if (self.count >= self.options.checkpoint_intervals
                or time.monotonic() - self.last >= self.options.checkpoint_seconds):
            self.last, self.count = time.monotonic(), 0
            return True
        return False


def _plan_file(report: config_stage.ReportConfig, explode: tuple[tuple[str, str], ...],
               due: list[intervals.Interval], state: State, options: RunOptions, now: datetime,
               report_reruns: list[intervals.DateRange], outcome: ReportOutcome) -> _File | None:
    name = " ".join([report.key] + [f"{key}={value}" for key, value in explode])
    try:
        output = store.OutputFile.load(store.output_path(options.output_folder, report.key, explode))
    except store.StoreError as exc:
        log.error("%s: %s", name, exc)
        outcome.file_failed = True
        return None
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
    return _File(report, explode, output, todo, plan.window_start)


def _take_result(job: Job, result: Result | None, error: Exception | None, seconds: float,
                 target: _File, state: State, now: datetime, outcome: ReportOutcome) -> None:
    """Merge one job's result into its file (or record its failure), in the main thread."""
    report, explode = job.report, job.explode
    outcome.queries += 1
    outcome.engine_seconds += seconds
    if result is not None:
        try:
            fill = report.pivot.fill if report.pivot else ""
            for part, piece in split_result(result, job.parts):
                if report.pivot:
                    piece = pivot_result(piece, report.pivot)
                target.output.merge(piece, {part.label}, fill, keep_column_order=bool(report.pivot))
        except (EngineError, store.StoreError) as exc:
            error = exc
    if error is not None:
        for part in job.parts:
            failure = state.record_failure(report.key, failure_key(explode, part.label), str(error), now)
            if failure.attempts > 1:
                log.info("%s %s: failed %d times in a row; next try after %s", target.name, part.label,
                         failure.attempts, failure.retry_after)
        log.error("%s: failed: %s", job.describe(), error)
        outcome.failed += len(job.parts)
        outcome.failed_intervals.extend(job.parts)
        return
    assert result is not None
    for part in job.parts:
        state.clear_failure(report.key, failure_key(explode, part.label))
    outcome.computed += len(job.parts)
    target.fresh |= result.dates
    stray = result.dates - {part.label for part in job.parts}
    if stray:
        # Stored as the original did, but worth knowing: these rows replace
        # the rows of those dates, and if an interval's own date is absent it
        # will be computed again next run.
        log.warning("%s: result has rows dated outside the interval: %s",
                    job.describe(), ", ".join(sorted(stray)[:5]))
    log.info("%s: computed %d rows in %.2f s", job.describe(), len(result.rows), seconds)


def _save(target: _File, publisher: publish.Publisher | None, outcome: ReportOutcome) -> None:
    """Queue the points of the fresh rows, then write the file: a crash in
    between sends points for rows not stored yet (harmless), never the reverse."""
    output = target.output
    if not output.dirty:
        return
    if publisher is not None and target.fresh:
        rows = [row for label in sorted(target.fresh & output.dates) for row in output.by_date[label]]
        try:
            publisher.enqueue(target.report, target.explode, output.header, rows)
        except publish.PublishError as exc:
            log.error("%s: Graphite: %s", target.name, exc)
            outcome.publish_failed = True
        except OSError as exc:
            log.error("%s: Graphite queue %s: %s", target.name, publisher.queue.folder, exc.strerror)
            outcome.publish_failed = True
    try:
        output.save(group=target.report.group)
        target.fresh = set()
    except store.StoreError as exc:
        log.error("%s: %s", target.name, exc)
        outcome.file_failed = True


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
