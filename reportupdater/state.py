# Runner support: what the runner remembers between runs.
#
# A small JSON file beside the outputs (OUTPUT/.reportupdater-state.json)
# holds, per report, the intervals that failed (error, attempts, when to try
# again: next run, then 1, 2, 4 ... hours later, capped) and when the report was last
# started (for `schedule:`). The TSVs stay the source of truth for what is
# done; losing this file loses only backoff and schedule memory, so a file
# that cannot be read (or an entry of it) is ignored with one warning. Written
# by atomic.write. May touch: that one file.

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, UTC
from pathlib import Path

from . import atomic

log = logging.getLogger(__name__)

FILE_NAME = ".reportupdater-state.json"
BACKOFF_CAP = timedelta(hours=24)
# An hourly timer fires a little early now and then: a retry time this close
# counts as reached, so a 1-hour wait does not turn into 2.
RETRY_GRACE = timedelta(minutes=5)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@dataclass
class Failure:
    error: str
    attempts: int
    first_failed: str  # ISO UTC
    last_failed: str
    retry_after: str

    @property
    def retry_time(self) -> datetime:
        return _parse(self.retry_after)


def failure_key(explode: tuple[tuple[str, str], ...], label: str) -> str:
    """'wiki=enwiki 2026-01-02', or just the date for reports without explode_by."""
    return " ".join([f"{name}={value}" for name, value in explode] + [label])


@dataclass
class ReportState:
    last_started: str | None = None
    # A scheduled report never started: when a run first saw it not due. Its
    # next cron time after that starts it, even when no run falls within the
    # hour after a cron time (a timer firing less often than hourly).
    first_seen: str | None = None
    failures: dict[str, Failure] = field(default_factory=dict)  # failure_key -> Failure
    waiting: dict[str, str] = field(default_factory=dict)       # failure_key -> waiting since


class State:
    def __init__(self, output_folder: Path):
        self.path = output_folder / FILE_NAME
        self.reports: dict[str, ReportState] = {}
        self.dirty = False

    @classmethod
    def load(cls, output_folder: Path) -> State:
        """The state as the file holds it. Unreadable memory is no reason to
        stop (the TSVs still say what is done): a file that cannot be read is
        ignored, an entry that is not valid is dropped and the others kept,
        with one warning naming the file; the next save writes it afresh."""
        state = cls(output_folder)
        try:
            raw = json.loads(atomic.read(state.path, inside=output_folder).decode("utf-8"))
        except FileNotFoundError:
            return state
        except OSError as exc:
            return state._ignore(exc.strerror or str(exc))
        except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deep
            return state._ignore(f"not valid JSON ({_short(exc)})")
        reports = raw.get("reports") if isinstance(raw, dict) else None
        if not isinstance(reports, dict):
            return state._ignore("not an object with 'reports'")
        dropped: list[str] = []
        for key, value in reports.items():
            report = _report_state(value, f"reports.{_name(key)}", dropped)
            if report is not None:
                state.reports[key] = report
        if dropped:
            state.dirty = True
            more = f" and {len(dropped) - 1} more" if len(dropped) > 1 else ""
            log.warning("%s: run state entries ignored (not valid): %s%s", state.path,
                        dropped[0], more)
        return state

    def _ignore(self, reason: str) -> State:
        log.warning("%s: run state ignored: %s; failed intervals are retried now and "
                    "schedules start afresh", self.path, reason)
        self.reports = {}
        self.dirty = True
        return self

    def report(self, key: str) -> ReportState:
        return self.reports.setdefault(key, ReportState())

    # -- failures

    def failure(self, report: str, key: str) -> Failure | None:
        return self.reports.get(report, ReportState()).failures.get(key)

    def record_failure(self, report: str, key: str, error: str, now: datetime) -> Failure:
        previous = self.failure(report, key)
        attempts = previous.attempts + 1 if previous else 1
        # The next run retries a first failure; one that keeps failing waits
        # 1, 2, 4 ... hours (capped) so a broken source is not hammered.
        # (The exponent is bounded: a state file may hold any count.)
        wait = timedelta(0) if attempts == 1 else min(timedelta(hours=2 ** min(attempts - 2, 16)),
                                                      BACKOFF_CAP)
        failure = Failure(error=error, attempts=attempts,
                          first_failed=previous.first_failed if previous else _iso(now),
                          last_failed=_iso(now), retry_after=_iso(now + wait))
        self.report(report).failures[key] = failure
        self.dirty = True
        return failure

    def split_retries(self, report: str, explode: tuple[tuple[str, str], ...], missing,
                      now: datetime, force: bool = False) -> tuple[list, list]:
        """Missing intervals split into (to compute now, waiting for their retry time)."""
        todo: list = []
        waiting: list = []
        for interval in missing:
            failure = self.failure(report, failure_key(explode, interval.label))
            late = failure is not None and failure.retry_time > now + RETRY_GRACE and not force
            (waiting if late else todo).append(interval)
        return todo, waiting

    def clear_failure(self, report: str, key: str) -> None:
        """The interval was computed: forget its failures and its waiting."""
        memory = self.reports.get(report)
        if memory:
            failed = memory.failures.pop(key, None) is not None
            waited = memory.waiting.pop(key, None) is not None
            if failed or waited:
                self.dirty = True

    def record_waiting(self, report: str, key: str, now: datetime) -> datetime:
        """The interval's data is not ready; returns since when it waits."""
        memory = self.report(report)
        if key not in memory.waiting:
            memory.waiting[key] = _iso(now)
            self.dirty = True
        return _parse(memory.waiting[key])

    def waiting_since(self, report: str, key: str) -> datetime | None:
        value = self.reports.get(report, ReportState()).waiting.get(key)
        return _parse(value) if value else None

    def forget_reports(self, keep: set[str]) -> None:
        """Drop the memory of reports no longer in the config."""
        for key in set(self.reports) - keep:
            del self.reports[key]
            self.dirty = True

    # -- schedules

    def started(self, report: str, now: datetime) -> None:
        memory = self.report(report)
        memory.last_started, memory.first_seen = _iso(now), None
        self.dirty = True

    def last_started(self, report: str) -> datetime | None:
        value = self.reports.get(report, ReportState()).last_started
        return _parse(value) if value else None

    def seen_not_due(self, report: str, now: datetime) -> None:
        memory = self.report(report)
        if memory.last_started is None and memory.first_seen is None:
            memory.first_seen = _iso(now)
            self.dirty = True

    def first_seen(self, report: str) -> datetime | None:
        value = self.reports.get(report, ReportState()).first_seen
        return _parse(value) if value else None

    # -- file

    def save(self) -> None:
        """Write the file when something changed (and never an empty new one)."""
        self.reports = {key: value for key, value in self.reports.items()
                        if value.failures or value.last_started or value.waiting or value.first_seen}
        if not self.dirty or (not self.reports and not self.path.exists()):
            return
        data = {"reports": {key: {"last_started": value.last_started,
                                  **({"first_seen": value.first_seen} if value.first_seen else {}),
                                  "failures": {name: asdict(f) for name, f in sorted(value.failures.items())},
                                  **({"waiting": dict(sorted(value.waiting.items()))}
                                     if value.waiting else {})}
                            for key, value in sorted(self.reports.items())}}
        text = json.dumps(data, indent=1)
        atomic.write(self.path, text.encode("utf-8"))  # raises OSError
        self.dirty = False


def _short(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _name(key: str) -> str:
    """A key of the file as it goes into the one-line warning."""
    return _short(key if key.isprintable() else repr(key))


def _valid_time(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        _parse(value)
    except ValueError:
        return False
    return True


def _report_state(value: object, where: str, dropped: list[str]) -> ReportState | None:
    """One report's memory as read from the file: what is valid of it."""
    if not isinstance(value, dict):
        dropped.append(f"{where}: not an object")
        return None
    report = ReportState()
    last_started = value.get("last_started")
    if last_started is None or _valid_time(last_started):
        report.last_started = last_started
    else:
        dropped.append(f"{where}.last_started: {_short(repr(last_started))} is not YYYY-MM-DDTHH:MM:SSZ")
    first_seen = value.get("first_seen")
    if first_seen is None or _valid_time(first_seen):
        report.first_seen = first_seen
    else:
        dropped.append(f"{where}.first_seen: {_short(repr(first_seen))} is not YYYY-MM-DDTHH:MM:SSZ")
    for section in ("failures", "waiting"):
        entries = value.get(section, {})
        if not isinstance(entries, dict):
            dropped.append(f"{where}.{section}: not an object")
            continue
        for name, entry in entries.items():
            if section == "waiting":
                if _valid_time(entry):
                    report.waiting[name] = entry
                else:
                    dropped.append(f"{where}.waiting.{_name(name)}: {_short(repr(entry))} is not "
                                   "YYYY-MM-DDTHH:MM:SSZ")
                continue
            problem = _failure_problem(entry)
            if problem:
                dropped.append(f"{where}.failures.{_name(name)}: {problem}")
            else:
                report.failures[name] = Failure(**{key: entry[key] for key in _FAILURE_FIELDS})
    return report


_FAILURE_FIELDS = ("error", "attempts", "first_failed", "last_failed", "retry_after")


def _failure_problem(entry: object) -> str | None:
    if not isinstance(entry, dict):
        return "not an object"
    for key in _FAILURE_FIELDS:
        if key not in entry:
            return f"no {key!r}"
    if not isinstance(entry["error"], str):
        return "'error' is not a string"
    attempts = entry["attempts"]
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
        return f"'attempts' {_short(repr(attempts))} is not a whole number from 1"
    for key in ("first_failed", "last_failed", "retry_after"):
        if not _valid_time(entry[key]):
            return f"{key!r} {_short(repr(entry[key]))} is not YYYY-MM-DDTHH:MM:SSZ"
    return None
