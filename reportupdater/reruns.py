# Part of stage 2 (plan): rerun requests.
#
# A rerun request is a file in QUERY_FOLDER/.reruns/ whose lines are START,
# END (YYYY-MM-DD, END exclusive) and then one report key per line, the
# format the original rerun_reports.py wrote. The runner treats the covered
# intervals as not done. A request is spent per output folder: each output
# folder keeps its own progress (OUTPUT/.reportupdater-reruns.json: per
# request, the reports done and, per output file, the interval labels still
# to recompute), so a trial run into a scratch folder does not spend the
# production folder's rerun, and a run bounded by max_intervals_per_run
# resumes where the last one stopped. Request files are never rewritten;
# they and the progress file are written by atomic.write (no link
# followed). May touch: the .reruns/ folder and that one progress file.

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from . import atomic
from . import config as config_stage
from .datatypes import Interval
from .intervals import DateRange

log = logging.getLogger(__name__)

FOLDER_NAME = ".reruns"


@dataclass(frozen=True)
class RerunRequest:
    path: Path
    dates: DateRange
    reports: tuple[str, ...]
    digest: str = ""  # of the file's text: a request rewritten by hand is a new request

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.digest}"

    def names(self, report_key: str) -> bool:
        """Whether it asks for this report (a request naming none asks for all)."""
        return not self.reports or report_key in self.reports


def _parse_date(text: str) -> date:
    return datetime.strptime(text.strip(), "%Y-%m-%d").date()


def read_requests(query_folder: Path) -> list[RerunRequest]:
    """Every parseable request; one that cannot be parsed is skipped with a warning."""
    folder = query_folder / FOLDER_NAME
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("%s: cannot list rerun requests: %s", folder, exc.strerror)
        return []
    requests = []
    for name in names:
        path = folder / name
        if name.startswith("."):
            continue  # temp files of a request being written
        try:
            # A link or a FIFO there is skipped: a request is a plain file.
            text = atomic.read(path).decode("utf-8")
            lines = [line.strip() for line in text.splitlines()]
            lines = [line for line in lines if line]
            start, end = _parse_date(lines[0]), _parse_date(lines[1])
            if start >= end:
                raise ValueError("start is not before end")
            digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]
            requests.append(RerunRequest(path, DateRange(start, end), tuple(lines[2:]), digest))
        except (atomic.SymlinkRefused, atomic.NotRegularFile):
            log.warning("%s: rerun request skipped: not a regular file", path)
        except (OSError, UnicodeDecodeError, ValueError, IndexError) as exc:
            log.warning("%s: rerun request skipped, cannot parse it: %s", path, exc)
    return requests


def write_request(query_folder: Path, dates: DateRange, reports: list[str]) -> Path:
    """Write a request atomically (a run never sees half of one), under a new
    name: an existing request is never replaced. Raises RerunError (one line
    naming the file) when it cannot be written."""
    folder = query_folder / FOLDER_NAME
    lines = [dates.start.isoformat(), dates.end.isoformat(), *reports]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    number = int(time.time() * 1000)
    while True:
        path = folder / str(number)
        try:
            # .reruns/ itself is created when missing and may be a link (a
            # read-only checkout may point it at a writable place).
            atomic.write(path, data, replace=False)
            return path
        except atomic.TargetExists:
            number += 1  # taken (another request in the same millisecond)
        except OSError as exc:
            raise RerunError(f"{path}: cannot write the rerun request: {exc.strerror}") from None


def file_key(explode: tuple[tuple[str, str], ...]) -> str:
    """'wiki=enwiki' (or '' without explode_by): an output file in the progress file."""
    return " ".join(f"{name}={value}" for name, value in explode)


@dataclass(frozen=True)
class PendingRerun:
    """One request as it stands for one output folder."""

    request: RerunRequest
    done_reports: frozenset[str] = frozenset()
    # (report, file key) -> inclusive (first label, last label) ranges still to
    # recompute; a file not listed has its whole range still to recompute.
    left: dict[tuple[str, str], tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def names(self, report_key: str) -> bool:
        return self.request.names(report_key) and report_key not in self.done_reports

    def covers(self, report_key: str, key: str, interval: Interval) -> bool:
        if not self.names(report_key):
            return False
        spans = self.left.get((report_key, key))
        if spans is None:
            return self.request.dates.overlaps(interval)
        label = interval.label
        return any(first <= label <= last for first, last in spans)


PROGRESS_NAME = ".reportupdater-reruns.json"


class RerunProgress:
    """Which requests this output folder has spent, and how far (see the module header)."""

    def __init__(self, output_folder: Path, entries: dict[str, dict] | None = None):
        self.path = output_folder / PROGRESS_NAME
        self.entries: dict[str, dict] = entries or {}
        self.dirty = False

    @classmethod
    def load(cls, output_folder: Path) -> RerunProgress:
        """An unreadable progress file is ignored with a warning: the pending
        requests are then recomputed whole (more work, nothing missed)."""
        progress = cls(output_folder)
        try:
            raw = json.loads(atomic.read(progress.path))
            entries = raw["requests"]
            if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
                raise ValueError("'requests' is not a mapping of mappings")
            progress.entries = entries
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: rerun progress unreadable (%s); pending reruns start again",
                        progress.path, exc)
            progress.dirty = True
        return progress

    def pending(self, requests: Sequence[RerunRequest]) -> list[PendingRerun]:
        """The requests this output folder has not spent yet."""
        found = []
        for request in requests:
            entry = self.entries.get(request.id, {})
            if entry.get("done") is True:
                continue
            done = entry.get("done_reports", [])
            left: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
            raw_left = entry.get("left", {})
            try:
                for report_key, files in raw_left.items():
                    for key, spans in files.items():
                        left[(report_key, key)] = tuple((str(first), str(last)) for first, last in spans)
                done_reports = frozenset(str(key) for key in done)
            except (AttributeError, TypeError, ValueError):
                log.warning("%s: progress of %s unreadable; the request starts again", self.path,
                            request.path.name)
                left, done_reports = {}, frozenset()
            found.append(PendingRerun(request, done_reports, left))
        return found

    def record(self, rerun: PendingRerun, report_key: str,
               files: dict[str, list[Interval]] | None) -> None:
        """After a run: what is left of `rerun` for one report, per output
        file (ordered intervals still to recompute). None: the report is done."""
        entry = self.entries.setdefault(rerun.request.id, {"file": rerun.request.path.name})
        if files is None or not any(files.values()):
            done = set(entry.get("done_reports", [])) | {report_key}
            entry["done_reports"] = sorted(done)
            entry.get("left", {}).pop(report_key, None)
        else:
            entry.setdefault("left", {})[report_key] = {
                key: [[first.label, last.label] for first, last in _runs(found)]
                for key, found in sorted(files.items())}
        self.dirty = True

    def finish(self, rerun: PendingRerun, every_report: Iterable[str]) -> bool:
        """Mark the request spent when every report it asks for is done; True then."""
        entry = self.entries.get(rerun.request.id, {})
        done = set(entry.get("done_reports", []))
        # Reports no longer in the config are not waited for.
        every_report = set(every_report)
        wanted = set(rerun.request.reports) & every_report if rerun.request.reports else every_report
        if not wanted <= done:
            return False
        self.entries[rerun.request.id] = {"file": rerun.request.path.name, "done": True}
        self.dirty = True
        return True

    def forget_except(self, requests: Sequence[RerunRequest]) -> None:
        """Drop the progress of requests whose files are gone."""
        ids = {request.id for request in requests}
        for request_id in set(self.entries) - ids:
            del self.entries[request_id]
            self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        if not self.entries and not self.path.exists():
            self.dirty = False
            return
        text = json.dumps({"requests": self.entries}, indent=1, sort_keys=True) + "\n"
        atomic.write(self.path, text.encode("utf-8"))
        self.dirty = False


def _runs(found: list[Interval]) -> list[tuple[Interval, Interval]]:
    """Intervals, in order, folded into (first, last) runs of neighbours."""
    runs: list[tuple[Interval, Interval]] = []
    for interval in found:
        if runs and runs[-1][1].end == interval.start:
            runs[-1] = (runs[-1][0], interval)
        else:
            runs.append((interval, interval))
    return runs


class RerunError(Exception):
    """A rerun request that cannot be accepted; one line."""


def request_rerun(query_folder: Path, start: date, end: date, report_keys: list[str],
                  today: date, config_path: Path | None = None) -> RerunRequest:
    """Check a rerun request as the original rerun_reports.py did, then write it.

    END is exclusive and may not be after today; every named report must exist
    and start before END; no report named means all reports.
    """
    if start >= end:
        raise RerunError(f"start {start} is not before end {end}")
    if end > today:
        raise RerunError(f"end {end} is after today ({today})")
    folder = config_stage.load(query_folder, config_path)
    if not report_keys:
        # All reports: those that have data before END (broken ones are
        # named in the file too, and wait for their config to be fixed).
        keys = [key for key, report in folder.reports.items() if report.starts < end]
        keys += sorted(folder.broken_reports)
        if not keys:
            raise RerunError(f"no report of {folder.config_path} starts before {end}")
        dates = DateRange(start, end)
        path = write_request(query_folder, dates, keys)
        return RerunRequest(path, dates, tuple(keys))
    keys = report_keys
    for key in keys:
        try:
            report = config_stage.find_report(folder, key)
        except config_stage.ConfigError as exc:
            raise RerunError(str(exc)) from None
        if report.starts >= end:
            raise RerunError(f"report {key!r} starts {report.starts}, "
                             f"not before the end of the range {end}")
    dates = DateRange(start, end)
    path = write_request(query_folder, dates, keys)
    return RerunRequest(path, dates, tuple(keys))
