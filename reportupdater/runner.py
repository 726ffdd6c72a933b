# The runner: composes the stages in one place.
#
#   config.load -> plan.plan_report -> engines (execute) -> store (merge, save)
#   -> publish (each destination's items queued before each save, sent after)
#
# No stage calls the next; this module does. It holds the output folder's
# lock for the whole run, replays the journal a killed run left (before
# planning), reads each output file once, appends every merged interval to
# the journal (one fsync per checkpoint), writes each file once when its
# report is done, and turns every failure into a log line and a count: one
# report, combination or interval failing never stops the others. Each
# computed interval carries the report's version (versions.py) into the
# journal, and the version record is written after the files, before the
# journal goes.

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, UTC
from pathlib import Path
from collections.abc import Callable, Generator, Iterable

from . import config as config_stage
from . import intervals, journal, reruns, store, versions
from .publishers import Publisher, PublishError
from .publishers import destinations
from . import plan as planning
from .state import State, failure_key
from .datatypes import EngineError, Explode, Interval, Job, Result
from .engines import Engine, SiteDefaults, Started, engine_class, split_result
from .processes import allow_commands, kill_running_commands
from .lock import FolderBusy, FolderLock, LockError
from .pivot import merge_shaped

log = logging.getLogger("reportupdater")

# Jobs in parallel by default: queries and scripts mostly wait on others.
DEFAULT_JOBS = min(8, 2 * (os.cpu_count() or 1))
# A crash loses at most this much work: the journal is made durable at least this often.
CHECKPOINT_SECONDS = 30.0
CHECKPOINT_INTERVALS = 1000
# With --jobs 1 a result of at most this many rows is merged while the next
# job's command runs; a larger one takes long enough to merge that the
# command may have exited meanwhile (see _Engines._execute_serially).
OVERLAP_ROWS = 100


@dataclass
class RunOptions:
    query_folder: Path
    output_folder: Path
    config_path: Path | None = None
    now: datetime | None = None           # evaluate everything as if it were this time (UTC)
    only_reports: tuple[str, ...] = ()    # empty: every report
    graphite: bool = True                 # --no-graphite
    publish: bool = True                  # --no-publish: no destination at all
    hive_url: str | None = None           # site-wide Hive server for folders that name none
    retry_failed_now: bool = False        # ignore the backoff of failed intervals
    jobs: int = 0                         # parallel jobs; 0: DEFAULT_JOBS
    max_intervals: int | None = None      # per report and run (--max-intervals)
    # Called with a readable diff for every stored date a recomputation changed (--diff).
    diff: Callable[[str], None] | None = None
    # Called as progress(name, intervals done, intervals planned) for a terminal display.
    progress: Callable[[str, int, int], None] | None = None
    checkpoint_seconds: float = CHECKPOINT_SECONDS
    checkpoint_intervals: int = CHECKPOINT_INTERVALS


@dataclass(frozen=True)
class _Run:
    """What every report of one run shares."""

    options: RunOptions
    now: datetime
    state: State
    progress: reruns.RerunProgress
    engines: _Engines
    lock: FolderLock


@dataclass(frozen=True)
class ReportOutcome:
    computed: int = 0
    failed: int = 0
    backing_off: int = 0          # failed before; not retried yet (1, 2, 4 ... hours)
    file_failed: bool = False     # an output file could not be read or written
    publish_failed: bool = False  # its Graphite points (or rows, samples) could not be built
    crashed: bool = False         # an internal error stopped it (logged); the others ran
    skipped: bool = False         # starts in the future
    not_scheduled: bool = False   # its `schedule:` says not now
    waiting: int = 0              # intervals whose data is not ready yet (not failures)
    reopened: bool = False        # backfill_new_columns asked for older intervals again
    seconds: float = 0.0
    queries: int = 0              # queries or scripts run (a batch is one)
    engine_seconds: float = 0.0   # time spent inside them (summed over jobs)
    newest: str | None = None     # newest date in its outputs after the run

    @property
    def ok(self) -> bool:
        return (self.failed == 0 and self.backing_off == 0 and not self.file_failed
                and not self.publish_failed and not self.crashed)

    def plus(self, tally: Tally) -> ReportOutcome:
        """This outcome with one job's or one save's tally added."""
        return replace(self, computed=self.computed + tally.computed, failed=self.failed + tally.failed,
                       waiting=self.waiting + tally.waiting, queries=self.queries + tally.queries,
                       engine_seconds=self.engine_seconds + tally.engine_seconds,
                       reopened=self.reopened or tally.reopened,
                       file_failed=self.file_failed or tally.file_failed,
                       publish_failed=self.publish_failed or tally.publish_failed)


@dataclass(frozen=True)
class Tally:
    """What one job, or one save of a file, adds to its report's outcome."""

    computed: int = 0
    failed: int = 0
    waiting: int = 0
    queries: int = 0
    engine_seconds: float = 0.0
    reopened: bool = False
    file_failed: bool = False
    publish_failed: bool = False

    def plus(self, other: Tally) -> Tally:
        return Tally(self.computed + other.computed, self.failed + other.failed,
                     self.waiting + other.waiting, self.queries + other.queries,
                     self.engine_seconds + other.engine_seconds, self.reopened or other.reopened,
                     self.file_failed or other.file_failed, self.publish_failed or other.publish_failed)


@dataclass
class PartOutcome:
    """What became of one interval of a job: a result, an error, or its data not there yet."""

    part: Interval
    result: Result | None = None
    error: Exception | None = None
    waiting: bool = False


@dataclass
class RunSummary:
    config_errors: list[str] = field(default_factory=list)
    reports: dict[str, ReportOutcome] = field(default_factory=dict)
    busy: bool = False  # another run held the folder; nothing was touched
    folder: config_stage.FolderConfig | None = None
    graphite_queued: bool = False  # Graphite was unreachable: points wait in the queue
    publish_refused: list[str] = field(default_factory=list)  # a store refused for good: exit 1
    publish_queued: dict[str, int] = field(default_factory=dict)  # destination -> items waiting

    @property
    def exit_code(self) -> int:
        """0: all due work done or skipped; 1: something failed; 2: config errors."""
        if self.busy:
            return 0
        if self.config_errors:
            return 2
        if self.publish_refused:
            return 1
        return 0 if all(outcome.ok for outcome in self.reports.values()) else 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class RunRefused(Exception):
    """A run that must not start (nothing was touched); one line."""


# --now may be this far ahead of the machine's clock (a timer firing early,
# clocks of two machines a little apart); more is a typo that would store
# future intervals as computed and trim real rows.
NOW_TOLERANCE = timedelta(minutes=15)


def check_now(now: datetime, clock: datetime) -> None:
    """Raise RunRefused when `now` is later than the machine's clock allows."""
    if intervals.as_utc(now) > clock + NOW_TOLERANCE:
        raise RunRefused(f"--now {intervals.as_utc(now):%Y-%m-%dT%H:%MZ} is later than this machine's "
                         f"clock ({clock:%Y-%m-%dT%H:%MZ}): a run computes only what is due by now; "
                         "nothing was written (status and run --dry-run accept a later --now)")


class _Engines:
    """Runs jobs on a pool of `jobs` threads (in the calling thread when
    `jobs` is 1): one engine per report type for the whole run, at most
    `max_connections` jobs at a time per database, one at a time for a
    report with `parallel: false`."""

    def __init__(self, folder: config_stage.FolderConfig, site: SiteDefaults):
        self.folder = folder
        self.site = site
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self._limits: dict[str, threading.Semaphore] = {}
        allow_commands()
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

    def _run(self, job: Job) -> tuple[list[PartOutcome], float]:
        """Run one job in a worker thread, within the limits of its database
        and report."""
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
            pending = self._start(job)
            pending.wait()
            return pending.outcomes(), time.monotonic() - started
        finally:
            for semaphore in reversed(held):
                semaphore.release()

    def _start(self, job: Job) -> _Pending:
        """Check readiness and start the job (or, when only some of a
        batch's intervals are ready, run each ready one alone)."""
        engine = self.get(job.report.type)
        if job.report.ready_when is not None:
            ready, outcomes = [], []
            for part in job.parts:
                try:
                    if engine.is_ready(Job(job.report, part, job.explode)):
                        ready.append(part)
                    else:
                        outcomes.append(PartOutcome(part, waiting=True))
                except EngineError as exc:  # a broken check is a failure, not a wait
                    outcomes.append(PartOutcome(part, error=EngineError(f"ready_when: {exc}")))
            if len(ready) < len(job.parts):
                for part in ready:
                    alone = _Pending(Job(job.report, part, job.explode), engine.start)
                    alone.wait()
                    outcomes += alone.outcomes()
                return _Pending(job, done=sorted(outcomes, key=lambda outcome: outcome.part))
        return _Pending(job, engine.start)

    def execute(self, jobs: Iterable[Job], merge_alone: Callable[[Job], bool] | None = None
                ) -> Generator[tuple[Job, list[PartOutcome], float], None, None]:
        """Run jobs concurrently; yield (job, outcome per interval, seconds) in
        the order of `jobs` (one report's), so that merging (and header
        evolution) happens exactly as in a serial run.

        One job more than threads is in flight (a worker that finishes one
        finds the next waiting while this thread merges), not more: a
        million-interval backfill does not hold a million futures. With one job at a time,
        or jobs of an engine that works inside this process (SQLite), they
        run in this thread: handing each to a worker costs two context
        switches per interval, and such jobs hold the GIL anyway.

        merge_alone(job), asked in a serial run before the next job starts:
        whether the caller's work after merging `job` is long (a
        checkpoint), so that the next job starts only after it."""
        jobs = iter(jobs)
        first = next(jobs, None)
        if first is None:
            return
        jobs = itertools.chain((first,), jobs)
        if self.site.jobs <= 1 or self.get(first.report.type).in_process(first):
            yield from self._execute_serially(jobs, merge_alone or (lambda job: False))
            return
        running: deque[tuple[Job, Future]] = deque()
        try:
            for job in jobs:
                running.append((job, self._pool.submit(self._run, job)))
                if len(running) > self.site.jobs:
                    done, future = running.popleft()
                    yield (done, *_result(future))
            while running:
                done, future = running.popleft()
                yield (done, *_result(future))
        except BaseException:
            # Stopped (SIGTERM, Ctrl-C, a bug): kill what the workers wait for.
            for _, future in running:
                future.cancel()
            kill_running_commands()
            raise

    def _execute_serially(self, jobs: Iterable[Job], merge_alone: Callable[[Job], bool]
                          ) -> Generator[tuple[Job, list[PartOutcome], float], None, None]:
        """One job at a time, in this thread (no limit to take: nothing else
        runs). A job starts once the one before it is done, and that one's
        result is built and merged while this one runs (a script runs in a
        process of its own, on another core): the caller calls
        wait_in_flight() once it has merged it, before anything else.

        While the caller merges, nobody reads the running command's pipes,
        so output a process it left running writes after its exit cannot
        be told from its own until they are read (see processes.py). The
        overlap is therefore kept to the merge of a small result: a larger
        one (OVERLAP_ROWS) is merged after this job's command is done, and
        one after which the caller checkpoints (merge_alone) before this job
        starts, so that a checkpoint is as durable as without the overlap.
        A job's seconds run from its start to the end of its command."""
        previous: tuple[Job, _Pending, float] | None = None  # done; its result not built yet
        current: _Pending | None = None                       # started, not waited for
        try:
            for job in jobs:
                if previous is not None and merge_alone(previous[0]):
                    yield _built(*previous)
                    previous = None
                started = time.monotonic()
                current = self._start(job)
                if previous is not None:
                    built = _built(*previous)
                    if sum(len(part.result.rows) for part in built[1] if part.result) <= OVERLAP_ROWS:
                        self._in_flight = current
                    else:
                        current.wait()
                    yield built
                    self._in_flight = None
                current.wait()
                previous, current = (job, current, current.waited_at - started), None
            if previous is not None:
                yield _built(*previous)
        except BaseException:
            self._in_flight = None
            kill_running_commands()
            if current is not None:  # started, and killed now: reap it
                with contextlib.suppress(Exception):
                    current.wait()
            raise

    _in_flight: _Pending | None = None

    def wait_in_flight(self) -> None:
        """The job started while the caller merges (serial runs): wait for
        its command now, right after the merge."""
        if self._in_flight is not None:
            self._in_flight.wait()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for engine in self._engines.values():
            try:
                engine.close()
            except Exception as exc:  # closing must not hide the run's outcome
                log.warning("closing %s engine: %s", engine.type, exc)


class _Pending:
    """A job started (or, with `done`, already cut by interval)."""

    def __init__(self, job: Job, start: Callable[[Job], Started] | None = None,
                 done: list[PartOutcome] | None = None):
        self.job = job
        self.done = done
        self.started: Started | None = None
        if start is not None:
            try:
                self.started = start(job)
            except EngineError as exc:
                self.done = [PartOutcome(part, error=exc) for part in job.parts]

    waited_at = 0.0  # when wait() first returned (time.monotonic)

    def wait(self) -> None:
        """Until the job's work is done (its command has exited)."""
        if not self.waited_at:
            if self.started is not None:
                self.started.wait()
            self.waited_at = time.monotonic()

    def outcomes(self) -> list[PartOutcome]:
        """Its result cut by interval (after wait)."""
        if self.done is None:
            assert self.started is not None
            job = self.job
            try:
                result = self.started.result()
                _check_dates(result, job)
            except EngineError as exc:
                self.done = [PartOutcome(part, error=exc) for part in job.parts]
            else:
                self.done = [PartOutcome(part, result=piece)
                             for part, piece in split_result(result, job.parts)]
            self.started = None
        return self.done


def _built(job: Job, pending: _Pending, seconds: float) -> tuple[Job, list[PartOutcome], float]:
    return job, pending.outcomes(), seconds


def _check_dates(result: Result, job: Job) -> None:
    """Every row must be dated in one of the job's intervals. A result dated
    a day early would otherwise be stored under another interval's date
    (replacing its rows) while its own interval stayed missing for ever."""
    labels = {part.label for part in job.parts}
    stray = result.dates - labels
    if stray:
        wanted = (job.parts[0].label if len(job.parts) == 1
                  else f"{job.parts[0].label}..{job.parts[-1].label}")
        shown = ", ".join(sorted(stray)[:3]) + (f" and {len(stray) - 3} more" if len(stray) > 3 else "")
        raise EngineError(f"result has rows dated {shown}, outside the interval {wanted}; "
                          "nothing stored (the first column must be the interval's date)")


_SIGNAL_CHECK_SECONDS = 0.25


def _result(future: Future):
    """The future's result, waited for in slices: the kernel may hand SIGTERM
    or Ctrl-C to a worker thread, and Python runs the handler only when the
    main thread wakes up, which a plain result() would not do until the job
    ends. (Blocking the signals in the workers instead would block them in
    the scripts they start too: a child inherits its thread's signal mask.)"""
    while True:
        try:
            return future.result(timeout=_SIGNAL_CHECK_SECONDS)
        except TimeoutError:
            if future.done():  # done just after the wait gave up, or the job's own TimeoutError
                return future.result()


def run(options: RunOptions) -> RunSummary:
    """One run over a query folder. Raises ConfigError for folder-level config
    errors, RunRefused for a --now later than the machine's clock."""
    now = options.now or utcnow()
    check_now(now, utcnow())
    if not Path(options.query_folder).is_dir():
        raise config_stage.ConfigError(f"{options.query_folder}: query folder does not exist")
    summary = RunSummary()
    try:
        with FolderLock(Path(options.output_folder)) as lock:  # one run per output folder
            folder = config_stage.load(options.query_folder, options.config_path)
            summary.folder = folder
            for warning in folder.warnings:
                log.warning("%s", warning)
            summary.config_errors = [str(error) for error in folder.errors]
            for error in summary.config_errors:
                log.error("%s", error)
            selected = select_reports(folder, options.only_reports)
            _replay_journal(lock, folder)
            _run_locked(folder, selected, options, now, summary, lock)
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
    config_stage.check_known_reports(folder, only)
    return [folder.reports[key] for key in only if key in folder.reports]


def _replay_journal(lock: FolderLock, folder: config_stage.FolderConfig) -> None:
    """Write the results a killed run journaled into their files, before
    anything is planned from them. Raises ConfigError (one line) when the
    journal cannot be read or removed: planning from files that lack its
    results would compute them again, and a later replay would put the
    older results back over the newer ones."""
    def group_of(report: str) -> str | None:
        return folder.reports[report].group if report in folder.reports else None
    try:
        journal.replay_into(lock, group_of)
    except journal.JournalError as exc:
        raise config_stage.ConfigError(f"{exc}; nothing was run") from None


def _run_locked(folder: config_stage.FolderConfig, selected: list[config_stage.ReportConfig],
                options: RunOptions, now: datetime, summary: RunSummary, lock: FolderLock) -> None:
    requests = reruns.read_requests(folder.query_folder)
    progress = reruns.RerunProgress.load(options.output_folder)
    progress.forget_except(requests)
    pending = progress.pending(requests)
    state = State.load(options.output_folder)
    engines = _Engines(folder, SiteDefaults(hive_url=options.hive_url,
                                            jobs=options.jobs or DEFAULT_JOBS))
    publishers = _start_publishers(folder, options, summary)
    run_context = _Run(options, now, state, progress, engines, lock)
    try:
        for report in selected:
            started = time.monotonic()
            try:
                outcome = _run_report(report, run_context, publishers,
                                      [rerun for rerun in pending if rerun.names(report.key)])
            except Exception as exc:  # a bug, or input nothing checked: this report only
                log.error("report %s: internal error: %s: %s", report.key, type(exc).__name__, exc,
                          exc_info=log.isEnabledFor(logging.DEBUG))
                outcome = ReportOutcome(crashed=True)
                # Its commands were killed on the way out, which also refuses
                # new ones (as a signal must): the next reports still run theirs.
                allow_commands()
            summary.reports[report.key] = replace(outcome, seconds=time.monotonic() - started)
            _save_state(state)
    finally:
        engines.close()
        _flush(publishers, summary)
        for publisher in publishers:
            publisher.close()
    state.forget_reports(set(folder.reports) | folder.broken_reports)
    _save_state(state)
    every_report = set(folder.reports) | folder.broken_reports
    for rerun in pending:
        for key in rerun.request.reports:
            if key not in every_report:
                log.warning("%s: report %r is not in the config; ignored", rerun.request.path, key)
        if progress.finish(rerun, every_report):
            log.info("%s: rerun %s..%s done for %s", rerun.request.path.name, rerun.request.dates.start,
                     rerun.request.dates.end, options.output_folder)
    _save_progress(progress)
    _log_summary(summary)


def _start_publishers(folder: config_stage.FolderConfig, options: RunOptions,
                      summary: RunSummary) -> list[Publisher]:
    """The run's destinations (none with --no-publish, no Graphite with
    --no-graphite), each queue's leftovers sent first."""
    if not options.publish:
        return []
    names = [name for name in destinations.NAMES if options.graphite or name != "graphite"]
    built = destinations.build(folder, options.output_folder, names)
    for error in built.errors:
        log.error("%s", error)
        summary.publish_refused.append(error)
    for publisher in built.publishers:
        publisher.queue.remove_stale_temp()
    _flush(built.publishers, summary)  # what earlier runs could not deliver goes first
    return built.publishers


def _flush(publishers: list[Publisher], summary: RunSummary) -> None:
    """Deliver every queue; an outage waits for the next run, a refusal fails the run."""
    for publisher in publishers:
        result = publisher.flush()
        summary.publish_queued[publisher.name] = result.waiting
        if publisher.name == "graphite":
            summary.graphite_queued = not result.ok
        if result.refused and result.error:
            line = f"{publisher.name}: {result.error}"
            if line not in summary.publish_refused:  # once a run, not again at its end
                log.error("%s; the batch stays queued in %s", line, publisher.queue.folder)
                summary.publish_refused.append(line)


def _label(publisher: Publisher) -> str:
    """The destination as the log names it (Graphite's messages as they always were)."""
    return "Graphite" if publisher.name == "graphite" else publisher.name


def _save_progress(progress: reruns.RerunProgress) -> None:
    if not progress.dirty:
        return
    try:
        progress.save()
    except OSError as exc:
        # Not fatal: without it the pending reruns are recomputed whole next time.
        log.warning("%s: cannot write the rerun progress: %s", progress.path, exc.strerror)


def _save_versions(record: versions.ReportRecord) -> bool:
    try:
        record.save()
    except (OSError, ValueError) as exc:
        log.error("%s: cannot write the version record: %s", record.path,
                  getattr(exc, "strerror", None) or exc)
        return False
    return True


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
                                         (outcome.crashed, "internal error"),
                                         (outcome.publish_failed, "publish step failed")) if flag]
        log.info("report %s: %d computed, %d failed, %d waiting to retry, %d waiting for data, "
                 "%.1f s%s", key, outcome.computed, outcome.failed, outcome.backing_off,
                 outcome.waiting, outcome.seconds,
                 f" ({', '.join(notes)})" if notes else "")
    outcomes = summary.reports.values()
    log.info("run: %d reports, %d intervals computed, %d failed, %d waiting to retry, "
             "%d queries (%.1f s inside them), %.1f s", len(summary.reports),
             sum(o.computed for o in outcomes), sum(o.failed for o in outcomes),
             sum(o.backing_off for o in outcomes), sum(o.queries for o in outcomes),
             sum(o.engine_seconds for o in outcomes), sum(o.seconds for o in outcomes))


def _run_report(report: config_stage.ReportConfig, run: _Run, publishers: list[Publisher],
                pending: list[reruns.PendingRerun]) -> ReportOutcome:
    """Plan the report, execute the plan, store and publish what it computed."""
    inputs, outputs = read_outputs(report, run.options.output_folder)
    for output in outputs.values():
        output.remove_stale_temp()
    limits = planning.Limits(max_intervals=run.options.max_intervals,
                             retry_failed_now=run.options.retry_failed_now,
                             forced=report.key in run.options.only_reports)
    version = versions.fingerprint(report, run.options.query_folder)
    record = versions.load(run.options.output_folder, report.key)
    plan = planning.plan_report(report, inputs, run.state, pending, run.now, limits,
                                versions.PlanVersions(record, version.id))
    if plan.verdict is not planning.Verdict.DUE:
        return _not_due(plan, run, pending)
    if report.schedule:
        run.state.started(report.key, run.now)
    if plan.todo and record.use(version, run.now):
        _save_versions(record)  # its texts are kept before anything it computes is stored
    publishers = [each for each in publishers if destinations.publishes(each, report.key)]
    files, unreadable = _open_files(plan, outputs, version.id)
    outcome = ReportOutcome(file_failed=unreadable,
                            backing_off=sum(len(file.backing_off) for file in plan.files))
    if plan.later:
        log.info("%s: %d intervals left for later runs (max %d per run)", report.key, plan.later,
                 plan.limit)
    entry = journal.Journal.open(run.lock)
    try:
        outcome = _execute(plan, files, publishers, run, outcome, entry)
        outcome = _finish_files(plan, files, publishers, outcome, entry, run.lock, record, version.id)
    except Exception:
        # A bug stopped the report: what the journal holds goes into the
        # files now, so that the next report (which needs the journal's
        # place) and the next run plan from them.
        entry.close()
        journal.replay_into(run.lock, lambda key: report.group if key == report.key else None)
        raise
    finally:
        entry.close()
    _record_reruns(plan, files, pending, run.progress)
    return outcome


def _not_due(plan: planning.ReportPlan, run: _Run, pending: list[reruns.PendingRerun]) -> ReportOutcome:
    """A report that starts in the future, or whose schedule says not now."""
    report = plan.report
    if plan.verdict is planning.Verdict.NOTHING_DUE:
        log.warning("%s: starts %s, after its last due interval; skipped", report.key, report.starts)
        for rerun in pending:  # nothing is due, so nothing is left to recompute
            run.progress.record(rerun, report.key, None)
        return ReportOutcome(skipped=True)
    log.info("%s: not scheduled now (schedule %r, next %s)", report.key, report.schedule,
             f"{plan.next_schedule:%Y-%m-%dT%H:%MZ}")
    run.state.seen_not_due(report.key, run.now)
    return ReportOutcome(not_scheduled=True)


def _open_files(plan: planning.ReportPlan, outputs: dict[Explode, store.OutputFile], version: str
                ) -> tuple[dict[Explode, _File], bool]:
    """The plan's output files that could be read, and whether one could not."""
    files: dict[Explode, _File] = {}
    unreadable = False
    for file_plan in plan.files:
        if file_plan.error is not None:
            log.error("%s: %s", file_plan.name, file_plan.error)
            unreadable = True
            continue
        files[file_plan.explode] = _File(plan.report, file_plan, outputs[file_plan.explode], version)
        _log_file_plan(file_plan, len(plan.due))
    return files, unreadable


def _execute(plan: planning.ReportPlan, files: dict[Explode, _File],
             publishers: list[Publisher], run: _Run, outcome: ReportOutcome,
             entry: journal.Journal) -> ReportOutcome:
    """Run the plan's jobs, merging each result as it comes and journaling
    it; make the journal durable at checkpoints (the files are written once,
    by _finish_files)."""
    checkpoint = _Checkpoint(run.options)
    done = 0
    # Closed at once when this stops (a signal, a bug): a job may be running
    # while its predecessor is merged here, and closing kills it.
    with contextlib.closing(run.engines.execute(plan.jobs, checkpoint.decide)) as results:
        for job, parts, seconds in results:
            done += len(job.parts)
            outcome = outcome.plus(_take_result(job, parts, seconds, files[job.explode], run,
                                                outcome.reopened, entry))
            run.engines.wait_in_flight()  # before anything that may take long (see there)
            if run.options.progress:
                run.options.progress(plan.report.key, done, plan.todo)
            if checkpoint.due_after(job):
                outcome = outcome.plus(_checkpoint(files, publishers, entry))
    return outcome


def _checkpoint(files: dict[Explode, _File], publishers: list[Publisher],
                entry: journal.Journal) -> Tally:
    """Queue the intervals merged since the last checkpoint for every
    destination, then write them to the journal in one frame and fsync it: a
    crash in between publishes rows not stored yet (harmless, the next run
    replaces them), never the reverse."""
    queued, tally = _enqueue_all(files, publishers)
    if not queued:  # the items cannot be recorded: journaling the rows would lose them
        return tally
    try:
        entry.checkpoint()
    except journal.JournalError as exc:
        # Records stay pending: the next checkpoint, or the files at the end, store them.
        log.error("%s", exc)
        return tally.plus(Tally(file_failed=True))
    return tally


def _finish_files(plan: planning.ReportPlan, files: dict[Explode, _File],
                  publishers: list[Publisher], outcome: ReportOutcome,
                  entry: journal.Journal, lock: FolderLock, record: versions.ReportRecord,
                  version: str) -> ReportOutcome:
    """Make the journal durable, trim to the window, write every file once,
    note the newest date they hold, label what they computed with `version`
    in the version record, then remove the journal. A file that cannot be
    written is not counted as computed (its reruns stay pending); its
    intervals are missing from it, so the next run computes them."""
    outcome = outcome.plus(_checkpoint(files, publishers, entry))
    due_labels = [interval.label for interval in plan.due]
    for each in files.values():
        if plan.report.max_data_points and each.plan.window_start:
            each.output.trim_before(each.plan.window_start)
        tally = _save(each, publishers)
        if tally.file_failed:
            each.computed = set()
        outcome = outcome.plus(tally)
        newest = _newest_date(each.output.dates, due_labels)
        if newest is not None:
            outcome = replace(outcome, newest=max(outcome.newest or newest, newest))
    computed = [each for each in files.values() if each.computed]
    for each in computed:
        dates = each.output.dates
        # A complete file holds the due dates, sorted already.
        complete = len(dates) == len(due_labels) and dates.issuperset(due_labels)
        record.computed(each.output.path, {interval.label for interval in each.computed}, dates, version,
                        due_labels if complete else None)
    recorded = not computed or _save_versions(record)
    try:
        if not recorded or any(each.output.dirty for each in files.values()):
            # A file (or the version record) could not be written: what the
            # journal made durable (its points are queued) goes in by a
            # replay, which names the files it cannot write either and
            # keeps the journal when the version record still cannot be
            # written; the rest is computed next run.
            entry.close()
            journal.replay_into(lock, lambda key: plan.report.group)
        else:
            entry.discard()
    except journal.JournalError as exc:
        log.error("%s", exc)
        outcome = replace(outcome, file_failed=True)
    return outcome


def _newest_date(dates: set[str] | frozenset[str], due_labels: list[str]) -> str | None:
    if not dates:
        return None
    # Most files hold exactly the due dates (a C-level check, where max()
    # would compare them all).
    complete = len(dates) == len(due_labels) and dates.issuperset(due_labels)
    return due_labels[-1] if complete else max(dates)


def read_outputs(report: config_stage.ReportConfig, output_folder: Path
                 ) -> tuple[list[planning.FileInput], dict[tuple[tuple[str, str], ...], store.OutputFile]]:
    """Read every output file of a report once, for planning (run, status,
    dry-run alike): what the plan needs of each, and the files themselves."""
    inputs, outputs = [], {}
    for explode in report.combinations():
        try:
            path = store.output_path(output_folder, report.key, explode)
        except store.StoreError as exc:
            inputs.append(planning.FileInput(explode, output_folder / report.key, error=str(exc)))
            continue
        try:
            output = store.OutputFile.load(path, root=output_folder)
        except store.StoreError as exc:
            inputs.append(planning.FileInput(explode, path, error=str(exc)))
            continue
        outputs[explode] = output
        inputs.append(planning.FileInput(explode, path, output.dates))
    return inputs, outputs


def _log_file_plan(file_plan: planning.FilePlan, due: int) -> None:
    if file_plan.backing_off:
        log.info("%s: %d failed intervals wait for their retry time (--retry-failed-now to force)",
                 file_plan.name, len(file_plan.backing_off))
    if file_plan.todo:
        log.info("%s: %d of %d intervals to compute", file_plan.name, len(file_plan.todo), due)


def _record_reruns(plan: planning.ReportPlan, files: dict[Explode, _File], pending: list[reruns.PendingRerun],
                   progress: reruns.RerunProgress) -> None:
    """What each pending rerun still needs of this report in this output
    folder: its covered intervals that were not computed this run."""
    if any(file_plan.error is not None for file_plan in plan.files):
        return  # a file that could not be read was not recomputed: all of it stays
    key = plan.report.key
    for rerun in pending:
        left: dict[str, list[Interval]] = {}
        for file_plan in plan.files:
            covered = [interval for interval in plan.due
                       if rerun.covers(key, reruns.file_key(file_plan.explode), interval)]
            computed = files[file_plan.explode].computed
            left[reruns.file_key(file_plan.explode)] = [i for i in covered if i not in computed]
        progress.record(rerun, key, left)


@dataclass
class _File:
    """One output file during a run: its plan, what it holds, what is new."""

    report: config_stage.ReportConfig
    plan: planning.FilePlan
    output: store.OutputFile
    version: str | None = None  # the fingerprint computing it (versions.py)
    fresh: set[str] = field(default_factory=set)  # dates to publish since the last save
    replaced: set[str] = field(default_factory=set)  # dates whose rows changed this run
    computed: set[Interval] = field(default_factory=set)  # merged this run

    @property
    def explode(self) -> tuple[tuple[str, str], ...]:
        return self.plan.explode

    @property
    def name(self) -> str:
        return self.plan.name


class _Checkpoint:
    """Files are written every so many seconds or intervals, never per interval."""

    def __init__(self, options: RunOptions):
        self.options = options
        self.last = time.monotonic()
        self.count = 0

    _decided: tuple[Job, bool] | None = None

    def due(self, intervals_done: int) -> bool:
        self.count += intervals_done
        if (self.count >= self.options.checkpoint_intervals
                or time.monotonic() - self.last >= self.options.checkpoint_seconds):
            self.last, self.count = time.monotonic(), 0
            return True
        return False

    def decide(self, job: Job) -> bool:
        """Whether a checkpoint follows the merge of `job`, decided before
        its result is handed over (serial runs; see _Engines.execute)."""
        due = self.due(len(job.parts))
        self._decided = (job, due)
        return due

    def due_after(self, job: Job) -> bool:
        """Whether to checkpoint now that `job` is merged: as decided, or now."""
        decided, self._decided = self._decided, None
        if decided is not None and decided[0] is job:
            return decided[1]
        return self.due(len(job.parts))


def _take_result(job: Job, parts: list[PartOutcome], seconds: float, target: _File, run: _Run,
                 reopened: bool, entry: journal.Journal) -> Tally:
    """Merge one job's results into its file (or record failures and
    waiting), in the main thread. `reopened`: whether the report already
    asked for its history again this run (backfill_new_columns)."""
    report = job.report
    computed = failed = waiting = rows = 0
    reopened_now = file_failed = False
    for item in parts:
        key = failure_key(job.explode, item.part.label)
        error = item.error
        if item.waiting:
            error = _waited_too_long(report, item.part, key, target, run)
            if error is None:
                waiting += 1
                continue
        if item.result is not None:
            try:
                merged, new_columns = _merge(report, item.part, item.result, key, target, run)
            except (EngineError, store.StoreError) as exc:
                error = exc
            else:
                entry.append(report.key, target.output.path, item.part.label, merged.header,
                             merged.rows, fill=report.pivot.fill if report.pivot else "",
                             keep_column_order=report.pivot is not None, version=target.version)
                computed += 1
                rows += len(merged.rows)
                if new_columns and not (reopened or reopened_now):
                    reopened_now = True
                    file_failed = not _reopen_history(report, item.part, new_columns, run.options)
                continue
        _record_failure(report, item.part, key, error, target, run)
        failed += 1
    if computed and log.isEnabledFor(logging.INFO):
        log.info("%s: computed %d rows in %.2f s", job.describe(), rows, seconds)
    return Tally(computed=computed, failed=failed, waiting=waiting, queries=1, engine_seconds=seconds,
                 reopened=reopened_now, file_failed=file_failed)


def _waited_too_long(report: config_stage.ReportConfig, part: Interval, key: str, target: _File,
                     run: _Run) -> EngineError | None:
    """An interval whose data is not ready: still waiting (None, logged), or
    waiting longer than its ready_timeout (the error it fails with)."""
    since = run.state.record_waiting(report.key, key, run.now)
    if report.ready_timeout and (run.now - since).total_seconds() > report.ready_timeout:
        return EngineError(f"data not ready since {since:%Y-%m-%dT%H:%MZ} "
                           f"(ready_timeout {report.ready_timeout:g} s)")
    log.info("%s %s: waiting for its data (since %s)", target.name, part.label,
             f"{since:%Y-%m-%dT%H:%MZ}")
    return None


def _merge(report: config_stage.ReportConfig, part: Interval, result: Result, key: str, target: _File,
           run: _Run) -> tuple[Result, set[str]]:
    """Merge one interval's result into its file: the rows merged, and the
    columns it added that backfill_new_columns asks history for (else none).
    Raises EngineError or StoreError when the result does not fit."""
    columns_before = set(target.output.header)
    merged, changes = merge_shaped(target.output, result, part.label, report)
    run.state.clear_failure(report.key, key)
    target.computed.add(part)
    target.fresh |= set(changes)  # lookback: only changed rows go to Graphite again
    target.replaced |= {label for label, (old, _) in changes.items() if old}
    if part in target.plan.rerun:
        # An explicit rerun re-sends, changed or not: the operator
        # reruns because a graph is wrong or a whisper file was lost.
        target.fresh.add(part.label)
    _report_changes(target, part, changes, run.options)
    new_columns = set(merged.header) - columns_before
    return merged, (new_columns if columns_before and report.backfill_new_columns else set())


def _record_failure(report: config_stage.ReportConfig, part: Interval, key: str,
                    error: Exception | None, target: _File, run: _Run) -> None:
    failure = run.state.record_failure(report.key, key, str(error), run.now)
    log.error("%s %s: failed: %s", target.name, part.label, error)
    if failure.attempts > 1:
        log.info("%s %s: failed %d times in a row; next try after %s", target.name,
                 part.label, failure.attempts, failure.retry_after)


def _report_changes(target: _File, part: Interval,
                    changes: dict[str, tuple[list[list[str]], list[list[str]]]],
                    options: RunOptions) -> None:
    """A recomputation (rerun, lookback) that changed stored rows: say how much."""
    for label, (old, new) in sorted(changes.items()):
        if not old:
            continue  # a new date, not a change
        changed_rows = sum(1 for a, b in itertools.zip_longest(old, new) if a != b)
        changed_cells = sum(sum(1 for x, y in itertools.zip_longest(a or [], b or []) if x != y)
                            for a, b in itertools.zip_longest(old, new))
        log.info("%s %s: recomputed: %d rows and %d cells changed", target.name, label,
                 changed_rows, changed_cells)
        if options.diff is not None:
            header = target.output.header
            lines = [f"--- {target.name} {label} (stored)", f"+++ {target.name} {label} (recomputed)",
                     "  " + "\t".join(header)]
            lines += ["- " + "\t".join(row) for row in old if row not in new]
            lines += ["+ " + "\t".join(row) for row in new if row not in old]
            options.diff("\n".join(lines))


def _reopen_history(report: config_stage.ReportConfig, part: Interval, new_columns: set[str],
                    options: RunOptions) -> bool:
    """backfill_new_columns: a column appeared; older intervals are computed
    again (through a rerun request, bounded like any backfill). False when
    the request could not be written."""
    dates = intervals.DateRange(report.starts, part.start.date())
    if dates.start >= dates.end:
        return True
    try:
        reruns.write_request(options.query_folder, dates, [report.key])
    except reruns.RerunError as exc:
        log.error("%s: new columns %s: cannot ask for the history to be recomputed: %s",
                  report.key, ", ".join(sorted(new_columns)), exc)
        return False
    log.info("%s: new columns %s: intervals before %s will be computed again", report.key,
             ", ".join(sorted(new_columns)), part.label)
    return True


def _enqueue_all(files: dict[Explode, _File], publishers: list[Publisher]
                 ) -> tuple[bool, Tally]:
    """Queue the fresh intervals of every file for every destination as one
    batch per destination (one queue file per checkpoint, not one per file).
    (False, ...) when a queue cannot be written: see _enqueue."""
    fresh = [each for each in files.values() if each.fresh]
    if not publishers or not fresh:
        for each in fresh:
            each.fresh = set()
        return True, Tally()
    # Fresh dates a file no longer holds are intervals without rows: a table
    # deletes what it held for them.
    stored = [item for each in fresh
              for item in destinations.stored_intervals(each.report, each.explode, each.output, each.fresh,
                                                          each.replaced)]
    publish_failed = False
    for publisher in publishers:
        try:
            publisher.enqueue(stored)
        except PublishError:
            # One file's rows spoil the batch: queue file by file, so that
            # the others still go and the error names the file.
            for each in fresh:
                queued, tally = _enqueue(each, [publisher])
                if not queued:
                    return False, tally
                publish_failed = publish_failed or tally.publish_failed
        except OSError as exc:
            log.error("%s queue %s: %s; the rows computed since the last checkpoint are not "
                      "stored yet", _label(publisher), publisher.queue.folder, exc.strerror)
            return False, Tally(file_failed=True)
    for each in fresh:
        each.fresh = set()
    return True, Tally(publish_failed=publish_failed)


def _enqueue(target: _File, publishers: list[Publisher]) -> tuple[bool, Tally]:
    """Queue the file's fresh intervals for every destination. (False, ...)
    when a queue cannot be written: storing the rows then would lose them for
    good, so the caller stores nothing and the next run redoes them."""
    output = target.output
    if not publishers or not target.fresh:
        return True, Tally()
    stored = destinations.stored_intervals(target.report, target.explode, output, target.fresh,
                                           target.replaced)
    publish_failed = False
    for publisher in publishers:
        try:
            publisher.enqueue(stored)
        except PublishError as exc:
            log.error("%s: %s: %s", target.name, _label(publisher), exc)
            publish_failed = True
        except OSError as exc:
            log.error("%s: %s queue %s: %s; %s left as it was", target.name, _label(publisher),
                      publisher.queue.folder, exc.strerror, output.path)
            return False, Tally(file_failed=True)
    return True, Tally(publish_failed=publish_failed)


def _save(target: _File, publishers: list[Publisher]) -> Tally:
    """Queue the fresh intervals for every destination, then write the file:
    a crash in between publishes rows not stored yet (harmless, the next run
    replaces them), never the reverse."""
    output = target.output
    if not output.dirty:
        return Tally()
    queued, tally = _enqueue(target, publishers)
    if not queued:
        return tally
    target.fresh = set()
    try:
        output.save(group=target.report.group)
    except store.StoreError as exc:
        log.error("%s: %s", target.name, exc)
        return tally.plus(Tally(file_failed=True))
    return tally
