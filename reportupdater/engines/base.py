# Stage 3 of 5: execution (config -> plan -> execute -> store -> publish).
#
# The small interface every engine implements, and the one place where raw
# rows from any engine become a Result: text cells, a date first column, the
# same number of fields as the header, an empty row for an empty result.
# Touches nothing itself; engines touch their databases or scripts.

from __future__ import annotations

import abc
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

from .. import templates
from ..config import FolderConfig, ReportConfig
from ..intervals import Interval


class EngineError(Exception):
    """A query or script that failed for one interval; one line, no secrets."""


def truthy(value: Any) -> bool:
    """A readiness query's answer: NULL, 0, '', 'false', 'no' mean not ready."""
    if value is None:
        return False
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "f", "no", "n", "null")
    return bool(value)


@dataclass(frozen=True)
class Job:
    """One interval (or, batched, a run of consecutive intervals) of one
    explode combination of one report. `interval` is what the query covers."""

    report: ReportConfig
    interval: Interval
    explode: tuple[tuple[str, str], ...]  # (placeholder, value), sorted by placeholder
    parts: tuple[Interval, ...] = ()      # the intervals a batch covers; () = just `interval`

    def __post_init__(self) -> None:
        if not self.parts:
            object.__setattr__(self, "parts", (self.interval,))

    @property
    def explode_values(self) -> dict[str, str]:
        return dict(self.explode)

    def describe(self) -> str:
        parts = [self.report.key] + [f"{name}={value}" for name, value in self.explode]
        if len(self.parts) > 1:
            return f"{' '.join(parts)} {self.parts[0].label}..{self.parts[-1].label}"
        return f"{' '.join(parts)} {self.interval.label}"


@dataclass(frozen=True)
class Result:
    """What one job produced: a header and rows of text, first column a date."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    @property
    def dates(self) -> set[str]:
        return {row[0] for row in self.rows}


_HOUR = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})(?::(\d{2}))?$")
_TAB_OR_LINE_BREAK = re.compile("[\t\r\n]")
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$")


def cell_text(value: Any) -> str:
    """A database value as a MySQL client would print it; NULL is empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        return f"{text}.{value.microsecond:06d}" if value.microsecond else text
    if isinstance(value, timedelta):  # MySQL TIME
        seconds = int(value.total_seconds())
        sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
        return f"{sign}{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def date_label(value: Any, hourly: bool = False) -> str:
    """The first column as YYYY-MM-DD (hourly: YYYY-MM-DDTHH:MM:SS); raises
    EngineError for anything else."""
    if hourly:
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%dT%H:%M:%S")
        text = cell_text(value)
        match = _HOUR.match(text)
        if match:
            try:  # the regex fixed the shape; fromisoformat checks the values (fast, unlike strptime)
                moment = datetime.fromisoformat(f"{match.group(1)}T{match.group(2)}")
                return moment.strftime("%Y-%m-%dT%H:%M:") + (match.group(3) or "00")
            except ValueError:
                pass
        raise EngineError(f"first column must be a date and hour YYYY-MM-DDTHH:00:00, got {text!r}")
    if isinstance(value, (datetime, date)):
        return value.strftime("%Y-%m-%d")
    text = cell_text(value)
    match = _DATE.match(text)
    if match:
        try:
            date.fromisoformat(match.group(1))
            return match.group(1)
        except ValueError:
            pass
    raise EngineError(f"first column must be a date YYYY-MM-DD, got {text!r}")


def build_result(header: Sequence[Any], rows: Iterable[Sequence[Any]], interval: Interval) -> Result:
    """Normalise raw engine output into a Result (see module header)."""
    names = tuple(cell_text(name) for name in header)
    if not names:
        raise EngineError("result has no columns (no header line)")
    for name in names:
        if any(ch in name for ch in "\t\r\n") or name == "":
            raise EngineError(f"column name {name!r} is empty or holds a tab or line break")
    normalised: list[tuple[str, ...]] = []
    for number, row in enumerate(rows, start=1):
        if len(row) != len(names):
            raise EngineError(f"row {number} has {len(row)} fields but the header has {len(names)}")
        cells = (date_label(row[0], interval.hourly),) + tuple(cell_text(value) for value in row[1:])
        if _TAB_OR_LINE_BREAK.search("".join(cells)):  # one search per row: results can be large
            name, _ = next((name, cell) for name, cell in zip(names, cells)
                           if _TAB_OR_LINE_BREAK.search(cell))
            raise EngineError(f"row {number} column {name!r} holds a tab or line break, "
                              "which a TSV file cannot store; replace it in the query")
        normalised.append(cells)
    if not normalised:
        # Stored so that the interval counts as done and is not recomputed forever.
        normalised.append((interval.label,) + ("",) * (len(names) - 1))
    return Result(header=names, rows=tuple(normalised))


def split_result(result: Result, parts: tuple[Interval, ...]) -> list[tuple[Interval, Result]]:
    """A batch's result cut into its intervals by the date column; an
    interval without rows gets the usual empty row. Rows dated outside every
    interval stay with the first one (and are reported by the runner)."""
    if len(parts) == 1:
        return [(parts[0], result)]
    by_label: dict[str, list[tuple[str, ...]]] = {part.label: [] for part in parts}
    for row in result.rows:
        by_label.get(row[0], by_label[parts[0].label]).append(row)
    empty = ("",) * (len(result.header) - 1)
    return [(part, Result(result.header, tuple(by_label[part.label]) or ((part.label, *empty),)))
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

    def is_ready(self, job: Job) -> bool:
        """Whether the job's data has landed (`ready_when:`). Scripts are
        checked here for every engine; engines add queries and partitions."""
        check = job.report.ready_when
        if check is None:
            return True
        if check.script_path is not None:
            from .script import script_ready  # the one place that runs processes
            return script_ready(check.script_path, job, self.query_folder)
        raise EngineError(f"{self.type} reports cannot check ready_when {check}")

    def close(self) -> None:
        """Release connections; called once at the end of a run."""
