# Runner support: what the runner remembers between runs.
#
# A small JSON file beside the outputs (OUTPUT/.reportupdater-state.json)
# holds, per report, the intervals that failed (error, attempts, when to try
# again: next run, then 1, 2, 4 ... hours later, capped) and when the report was last
# started (for `schedule:`). The TSVs stay the source of truth for what is
# done; losing this file loses only backoff and schedule memory. Written
# atomically. May touch: that one file.

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

FILE_NAME = ".reportupdater-state.json"
BACKOFF_CAP = timedelta(hours=24)
# An hourly timer fires a little early now and then: a retry time this close
# counts as reached, so a 1-hour wait does not turn into 2.
RETRY_GRACE = timedelta(minutes=5)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


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
    failures: dict[str, Failure] = field(default_factory=dict)  # failure_key -> Failure
    waiting: dict[str, str] = field(default_factory=dict)       # failure_key -> waiting since


class State:
    def __init__(self, output_folder: Path):
        self.path = output_folder / FILE_NAME
        self.reports: dict[str, ReportState] = {}
        self.dirty = False

    @classmethod
    def load(cls, output_folder: Path) -> "State":
        state = cls(output_folder)
        try:
            raw = json.loads(state.path.read_text(encoding="utf-8"))
            for key, value in raw.get("reports", {}).items():
                failures = {name: Failure(**failure) for name, failure in value.get("failures", {}).items()}
                state.reports[key] = ReportState(value.get("last_started"), failures,
                                                 dict(value.get("waiting", {})))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, AttributeError):
            # Unreadable memory is no reason to stop: start afresh (the TSVs
            # still say what is done), and overwrite it at the end.
            state.reports = {}
            state.dirty = True
        return state

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
        wait = timedelta(0) if attempts == 1 else min(timedelta(hours=2 ** (attempts - 2)), BACKOFF_CAP)
        failure = Failure(error=error, attempts=attempts,
                          first_failed=previous.first_failed if previous else _iso(now),
                          last_failed=_iso(now), retry_after=_iso(now + wait))
        self.report(report).failures[key] = failure
        self.dirty = True
        return failure

    def split_retries(self, report: str, explode: tuple[tuple[str, str], ...], missing,
                      now: datetime, force: bool = False) -> tuple[list, list]:
        """Missing intervals split into (to compute now, waiting for their retry time)."""
        todo, waiting = [], []
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
        self.report(report).last_started = _iso(now)
        self.dirty = True

    def last_started(self, report: str) -> datetime | None:
        value = self.reports.get(report, ReportState()).last_started
        return _parse(value) if value else None

    # -- file

    def save(self) -> None:
        """Write the file when something changed (and never an empty new one)."""
        self.reports = {key: value for key, value in self.reports.items()
                        if value.failures or value.last_started or value.waiting}
        if not self.dirty or (not self.reports and not self.path.exists()):
            return
        data = {"reports": {key: {"last_started": value.last_started,
                                  "failures": {name: asdict(f) for name, f in sorted(value.failures.items())},
                                  **({"waiting": dict(sorted(value.waiting.items()))} if value.waiting else {})}
                            for key, value in sorted(self.reports.items())}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.tmp")
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        self.dirty = False
