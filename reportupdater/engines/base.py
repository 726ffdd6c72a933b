# Stage 3 of 5: execution (config -> plan -> execute -> store -> publish).
#
# The small interface every engine implements, and the one place where raw
# rows from any engine become a Result: text cells, a date first column, the
# same number of fields as the header, each column named once, an empty row
# for an empty result. A value that a TSV cell cannot hold exactly (a tab, a
# NUL, bytes that are not UTF-8, a first-column time a date would drop) fails
# the interval instead of being changed. Touches nothing itself (a
# `ready_when` script runs through processes.run_command); engines touch
# their databases or scripts.

from __future__ import annotations

import abc
import logging
import os
import re
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta, UTC
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from collections.abc import Iterable, Sequence

from .. import templates
from ..config_keys import DEFAULT_TIMEOUT_SECONDS
from ..config import FolderConfig
from ..datatypes import DAY_LABEL, HOUR_LABEL, EngineError, Interval, Job, Result
from ..processes import run_command

log = logging.getLogger(__name__)


def truthy(value: Any) -> bool:
    """A readiness query's answer: NULL, 0, '', 'false', 'no' mean not ready."""
    if value is None:
        return False
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "f", "no", "n", "null")
    return bool(value)


_HOUR = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})(?::(\d{2}))?$")
# What a TSV cell cannot hold: field and line separators, and NUL (a file
# holding one is refused as binary when it is read again).
_NOT_IN_A_CELL = re.compile("[\t\r\n\x00]")
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?))?$")
_MIDNIGHT = re.compile(r"^00:00(?::00(?:\.0+)?)?$")


def cell_text(value: Any) -> str:
    """A database value as a MySQL client would print it; NULL is empty.
    Raises EngineError for bytes that are not UTF-8 (they would be changed)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EngineError(f"value is not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                              f"offset {exc.start}); convert it in the query") from None
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        # isoformat, not strftime: %Y drops the leading zeros of years before
        # 1000; and it keeps a time zone's offset (+01:00), which the value needs.
        return value.isoformat(sep=" ", timespec="microseconds" if value.microsecond else "seconds")
    if isinstance(value, timedelta):  # MySQL TIME, with its fraction of a second
        micros = value // timedelta(microseconds=1)  # exact, unlike total_seconds()
        sign, micros = ("-", -micros) if micros < 0 else ("", micros)
        seconds, fraction = divmod(micros, 1_000_000)
        text = f"{sign}{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        return f"{text}.{fraction:06d}" if fraction else text
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def date_label(value: Any, hourly: bool = False) -> str:
    """The first column as YYYY-MM-DD (hourly: YYYY-MM-DDTHH:MM:SS); raises
    EngineError for anything else, and for a time it would have to drop (a
    daily label of 13:45, an hourly one of 05:00:00.5)."""
    if hourly:
        if isinstance(value, datetime):
            if value.utcoffset() is not None:  # hourly labels are UTC
                value = value.astimezone(UTC).replace(tzinfo=None)
            if value.microsecond:
                raise EngineError(f"first column must be a date and hour YYYY-MM-DDTHH:00:00, "
                                  f"got {cell_text(value)!r} (a fraction of a second)")
            return value.isoformat(timespec="seconds")
        text = cell_text(value)
        match = _HOUR.match(text)
        if match:
            try:  # the regex fixed the shape; fromisoformat checks the values (fast, unlike strptime)
                moment = datetime.fromisoformat(f"{match.group(1)}T{match.group(2)}")
                return moment.isoformat(timespec="minutes") + ":" + (match.group(3) or "00")
            except ValueError:
                pass
        raise EngineError(f"first column must be a date and hour YYYY-MM-DDTHH:00:00, got {text!r}")
    if isinstance(value, datetime):
        if value.time() != datetime.min.time():
            raise EngineError(f"first column must be a date YYYY-MM-DD, got {cell_text(value)!r}: "
                              "a time other than midnight would be dropped; use DATE(...) in the query")
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    text = cell_text(value)
    match = _DATE.match(text)
    if match:
        try:
            date.fromisoformat(match.group(1))
        except ValueError:
            pass
        else:
            if match.group(2) is None or _MIDNIGHT.match(match.group(2)):
                return match.group(1)
            raise EngineError(f"first column must be a date YYYY-MM-DD, got {text!r}: a time "
                              "other than midnight would be dropped; use DATE(...) in the query")
    raise EngineError(f"first column must be a date YYYY-MM-DD, got {text!r}")


def check_column_names(names: Sequence[str]) -> None:
    """Raises EngineError for a name a TSV header cannot hold, or for a column
    named twice: merged by name, one of the two would lose its history. Names
    that differ only in case count as the same: SQL names ignore case, and
    Hive returns them in lower case."""
    seen: dict[str, str] = {}
    for name in names:
        if name == "" or _NOT_IN_A_CELL.search(name):
            raise EngineError(f"column name {name!r} is empty or holds a tab, line break or NUL")
        first = seen.get(name.casefold())
        if first is not None:
            spelled = "" if first == name else f" (as {first!r} and {name!r})"
            raise EngineError(f"column {first!r} is named twice in the result{spelled}: "
                              "give each column its own name")
        seen[name.casefold()] = name


def build_result(header: Sequence[Any], rows: Iterable[Sequence[Any]], interval: Interval) -> Result:
    """Normalise raw engine output into a Result (see module header)."""
    names = tuple(cell_text(name) for name in header)
    if not names:
        raise EngineError("result has no columns (no header line)")
    check_column_names(names)
    normalised: list[tuple[str, ...]] = []
    for number, row in enumerate(rows, start=1):
        if len(row) != len(names):
            raise EngineError(f"row {number} has {len(row)} fields but the header has {len(names)}")
        # Interned: a wide backfill holds one label per stored row, and the
        # rows of a date in every file can share one string (10 % of its RSS).
        label = sys.intern(date_label(row[0], interval.hourly))  # its errors say "first column"
        try:
            cells = (label,) + tuple(cell_text(value) for value in row[1:])
        except EngineError:
            for name, value in zip(names[1:], row[1:], strict=True):
                try:
                    cell_text(value)
                except EngineError as exc:
                    raise EngineError(f"row {number} column {name!r}: {exc}") from None
            raise
        joined = "".join(cells)  # one check per row, not per cell: results can be large
        if _NOT_IN_A_CELL.search(joined):
            name, cell = next((name, cell) for name, cell in zip(names, cells, strict=True)
                              if _NOT_IN_A_CELL.search(cell))
            what = "a NUL character" if "\x00" in cell else "a tab or line break"
            raise EngineError(f"row {number} column {name!r} holds {what}, "
                              "which a TSV file cannot store; replace it in the query")
        if not joined.isascii() and not _encodes(joined):
            # A lone surrogate (from a driver): the file could not be written.
            name = next(name for name, cell in zip(names, cells, strict=True) if not _encodes(cell))
            raise EngineError(f"row {number} column {name!r} holds text that is not valid "
                              "Unicode (a lone surrogate)")
        normalised.append(cells)
    if not normalised:
        # Stored so that the interval counts as done and is not recomputed forever.
        return Result(names, ((interval.label,) + ("",) * (len(names) - 1),), empty=True)
    return Result(header=names, rows=tuple(normalised))


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def split_result(result: Result, parts: tuple[Interval, ...]) -> list[tuple[Interval, Result]]:
    """A batch's result cut into its intervals by the date column; an
    interval without rows gets the usual empty row. Rows dated outside every
    interval stay with the first one (and are reported by the runner)."""
    if len(parts) == 1:
        return [(parts[0], result)]
    by_label: dict[str, list[tuple[str, ...]]] = {part.label: [] for part in parts}
    if not result.empty:
        for row in result.rows:
            by_label.get(row[0], by_label[parts[0].label]).append(row)
    empty = ("",) * (len(result.header) - 1)
    return [(part, Result(result.header, tuple(by_label[part.label])) if by_label[part.label]
             else Result(result.header, ((part.label, *empty),), empty=True))
            for part in parts]


def render_query(job: Job, template: str | None = None) -> str:
    """The job's template (or another one, e.g. a readiness query) with its
    interval and explode placeholders filled in."""
    template = template if template is not None else job.report.template
    assert template is not None  # config guarantees it for templated reports
    values = templates.interval_values(job.interval.start, job.interval.end)
    values.update(job.explode)
    try:
        return templates.render(template, values)
    except templates.TemplateError as exc:
        raise EngineError(str(exc)) from None


def script_argv(script: Path, job: Job) -> list[str]:
    """SCRIPT START END [V1 V2 ...] FOLDER: dates local to the report's time
    zone (full hours for hourly reports), explode values by placeholder name."""
    shape = HOUR_LABEL if job.interval.hourly else DAY_LABEL
    # The start in that shape is the interval's label (formatted once).
    path = str(script)
    return ([path, job.interval.label, job.interval.end.strftime(shape)]
            + [value for _, value in job.explode]
            + [os.path.dirname(path)])


def script_ready(script: Path, job: Job, cwd: Path) -> bool:
    """A `ready_when: {script: ...}` check: exit 0 = ready, anything else = not yet."""
    try:
        run_command(script_argv(script, job), cwd, job.report.timeout or DEFAULT_TIMEOUT_SECONDS,
                    job.describe(), "ready_when script")
        return True
    except EngineError as exc:
        log.info("%s: not ready: %s", job.describe(), exc)
        return False



class Started:
    """A job Engine.start started: wait() returns once its work is done (its
    command has exited), result() then gives its result or raises
    EngineError. This one was done when it was made."""

    def __init__(self, result: Result | None = None, error: EngineError | None = None):
        self._result = result
        self._error = error

    def wait(self) -> None:
        pass

    def result(self) -> Result:
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


@dataclass(frozen=True)
class SiteDefaults:
    """Settings of the machine rather than of a query folder."""

    hive_url: str | None = None  # --hive-url / REPORTUPDATER_HIVE_URL
    jobs: int = 1                # jobs that may run at once (sizes connection pools)


class Engine(abc.ABC):
    """Runs jobs of one report type. One instance per run, shared by all reports
    of its type, so connections are opened once and reused across intervals."""

    type: ClassVar[str]

    def __init__(self, folder: FolderConfig, site: SiteDefaults = SiteDefaults()):
        self.folder = folder
        self.site = site

    @property
    def query_folder(self) -> Path:
        return self.folder.query_folder

    @abc.abstractmethod
    def run(self, job: Job) -> Result:
        """Compute one job. Raises EngineError when it fails."""

    def start(self, job: Job) -> Started:
        """Start one job. An engine whose work runs in another process
        returns while it runs: the runner, which runs one job at a time with
        --jobs 1, waits for it before it starts the next, and builds and
        merges its result while the next one runs. By default the job is
        computed here and now."""
        try:
            return Started(self.run(job))
        except EngineError as exc:
            return Started(error=exc)

    def is_ready(self, job: Job) -> bool:
        """Whether the job's data has landed (`ready_when:`). Scripts are
        checked here for every engine; engines add queries and partitions."""
        check = job.report.ready_when
        if check is None:
            return True
        if check.script_path is not None:
            return script_ready(check.script_path, job, self.query_folder)
        raise EngineError(f"{self.type} reports cannot check ready_when {check}")

    def in_process(self, job: Job) -> bool:
        """Whether the job's work runs inside this process (an embedded
        database), holding the GIL: the runner then runs it in the calling
        thread, since worker threads would only take turns."""
        return False

    def close(self) -> None:  # noqa: B027 (optional: most engines hold nothing)
        """Release connections; called once at the end of a run."""
