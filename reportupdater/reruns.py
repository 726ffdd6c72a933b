# Part of stage 2 (plan): rerun requests.
#
# A rerun request is a file in QUERY_FOLDER/.reruns/ whose lines are START,
# END (YYYY-MM-DD, END exclusive) and then one report key per line, the
# format the original rerun_reports.py wrote. The runner treats the covered
# intervals as not done and deletes a request once all of it was recomputed.
# Requests are written by atomic.write (no link followed, none overwritten
# by a new one). May touch: the .reruns/ folder only.

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from . import atomic
from . import config as config_stage
from .intervals import DateRange

log = logging.getLogger(__name__)

FOLDER_NAME = ".reruns"


@dataclass(frozen=True)
class RerunRequest:
    path: Path
    dates: DateRange
    reports: tuple[str, ...]


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
        if name.startswith(".") or not path.is_file():
            continue  # temp files of a request being written
        try:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            lines = [line for line in lines if line]
            start, end = _parse_date(lines[0]), _parse_date(lines[1])
            if start >= end:
                raise ValueError("start is not before end")
            requests.append(RerunRequest(path, DateRange(start, end), tuple(lines[2:])))
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


def keep_only(request: RerunRequest, report_keys: list[str], dates: DateRange) -> None:
    """Rewrite a request (atomically, same name) for what is still to do."""
    lines = [dates.start.isoformat(), dates.end.isoformat(), *report_keys]
    try:
        atomic.write(request.path, ("\n".join(lines) + "\n").encode("utf-8"))
    except OSError as exc:
        log.warning("%s: cannot rewrite rerun request: %s", request.path, exc.strerror)


def consume(request: RerunRequest) -> None:
    """Delete a request that is done (unlink: a link there is removed, never followed)."""
    try:
        request.path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("%s: cannot delete consumed rerun request: %s", request.path, exc.strerror)


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
        if key in folder.broken_reports:
            errors = [str(error) for error in folder.errors if f"report '{key}'" in str(error)]
            raise RerunError(errors[0] if errors else f"report {key!r} has config errors")
        if key not in folder.reports:
            raise RerunError(f"{folder.config_path}: report {key!r} is not in 'reports'")
        if folder.reports[key].starts >= end:
            raise RerunError(f"report {key!r} starts {folder.reports[key].starts}, "
                             f"not before the end of the range {end}")
    dates = DateRange(start, end)
    path = write_request(query_folder, dates, keys)
    return RerunRequest(path, dates, tuple(keys))
