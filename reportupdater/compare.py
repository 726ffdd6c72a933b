# Operating: `smoke --compare`, today's query beside the stored rows.
#
# Computes one interval as smoke.py does (every explode combination, or the
# ones asked for), then merges each result, in memory, into the output file
# as read from the output folder, through the store's own merge (header
# evolution, the pivot's fill): the new rows are compared exactly as `run`
# would write them. Rows of a date are paired by their key columns (the
# ones holding text), else by position. May touch: the report's database or
# script (to compute) and, read only, the output files. Writes no file (no
# TSV, state, queue or journal), takes no lock, sends nothing.

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from . import intervals, store
from .config import FolderConfig, ReportConfig, find_report
from .datatypes import Result
from .engines import SiteDefaults
from .pivot import merge_shaped
from .smoke import SmokeResult, interval_of, smoke

# How a cell with no value of its own is shown (an empty TSV cell is a value).
EMPTY = '""'


class CompareError(Exception):
    """Bad input for a comparison (a date outside the report's range, no
    output folder); one line, nothing computed."""


@dataclass
class RowPair:
    """One row of a date: as stored, as the new query gives it (None: none on
    that side), laid out in the comparison's columns."""

    stored: list[str] | None
    new: list[str] | None

    def differing(self) -> list[int]:
        """The positions of the cells that differ (both sides present)."""
        if self.stored is None or self.new is None:
            return []
        return [i for i, (a, b) in enumerate(zip(self.stored, self.new, strict=True)) if a != b]


@dataclass
class DateComparison:
    label: str
    pairs: list[RowPair]
    key_columns: list[str]          # rows paired by these; [] when paired by position
    note: str = ""                  # why rows are paired by position, when there are several

    @property
    def stored_rows(self) -> int:
        return sum(pair.stored is not None for pair in self.pairs)

    @property
    def differs(self) -> bool:
        return any(pair.stored != pair.new for pair in self.pairs)


@dataclass
class FileComparison:
    smoke: SmokeResult
    columns: list[str] = field(default_factory=list)   # the file's order, then new columns
    new_columns: list[str] = field(default_factory=list)
    gone_columns: list[str] = field(default_factory=list)  # in the file, not in the new result
    dates: list[DateComparison] = field(default_factory=list)
    fill: str = ""                  # what the store puts in a cell a row lacks (a pivot's fill)
    error: str | None = None

    @property
    def file(self) -> Path:
        return self.smoke.file

    pivot: bool = False             # columns are categories: one a date lacks holds the fill

    @property
    def differs(self) -> bool:
        """Some cell differs, or (outside pivots) the columns do. A pivot's new
        category differs only where its value is not the fill stored rows get."""
        columns_differ = not self.pivot and bool(self.new_columns or self.gone_columns)
        return columns_differ or any(each.differs for each in self.dates)


def check_in_range(report: ReportConfig, day: date, now: datetime) -> None:
    """Raise CompareError unless the interval holding `day` is one `run` would
    store at `now` (after the start, complete, within max_data_points)."""
    interval = interval_of(report, day)
    due = intervals.due_intervals(report, now)
    first_start = intervals.truncate(intervals.in_zone(report.starts, report.zone), report.granularity)
    if interval.start < first_start:
        raise CompareError(f"report '{report.key}': {day} is before the report starts "
                           f"({report.starts}); there is nothing stored to compare")
    if not due or interval.start > due[-1].start:
        newest = f"the newest is {due[-1].label}" if due else "none is due yet"
        raise CompareError(f"report '{report.key}': the interval {interval.label} holding {day} "
                           f"is not due at {intervals.as_utc(now):%Y-%m-%dT%H:%MZ} ({newest}); "
                           "there is nothing stored to compare")
    if interval.start < due[0].start:
        raise CompareError(f"report '{report.key}': {day} is older than the {report.max_data_points} "
                           f"intervals max_data_points keeps (the oldest is {due[0].label}); "
                           "there is nothing stored to compare")


def compare(folder: FolderConfig, report_key: str, day: date, wanted: dict[str, list[str]],
            output_folder: Path, now: datetime,
            site: SiteDefaults = SiteDefaults()) -> list[FileComparison]:
    """Compute the interval holding `day` and compare it, per output file,
    with what `output_folder` stores for it. Raises ConfigError (unknown
    report, bad explode) or CompareError before computing anything."""
    report = find_report(folder, report_key)
    check_in_range(report, day, now)
    if not output_folder.is_dir():
        raise CompareError(f"{output_folder}: output folder does not exist "
                           "(name the one 'run' writes with --output-folder)")
    label = interval_of(report, day).label
    comparisons = []
    for result in smoke(folder, report_key, day, wanted, site):
        comparison = FileComparison(result)
        comparisons.append(comparison)
        if result.error is not None or result.result is None:
            comparison.error = result.error or "no result"
            continue
        try:
            _compare_file(comparison, result.result, report, label, output_folder)
        except store.StoreError as exc:
            comparison.error = str(exc)
    return comparisons


def _compare_file(comparison: FileComparison, result: Result, report: ReportConfig, label: str,
                  output_folder: Path) -> None:
    output = store.OutputFile.load(output_folder / comparison.file, root=output_folder)
    stored_header = list(output.header)
    # (merge replaces a date's list of rows, never a row in place: a shallow copy keeps them)
    stored_by_date = dict(output.by_date)
    # The store's own merge, in memory (never saved): new rows as `run` writes them.
    shaped, _ = merge_shaped(output, result, label, report)
    merged_header = output.header
    fill = comparison.fill = report.pivot.fill if report.pivot is not None else ""
    comparison.pivot = report.pivot is not None
    if stored_header:
        known = set(stored_header)
        comparison.columns = stored_header + [c for c in merged_header[1:] if c not in known]
        comparison.new_columns = [c for c in merged_header[1:] if c not in known]
        if report.pivot is None:  # (a category a date lacks is no column gone)
            comparison.gone_columns = [c for c in stored_header[1:] if c not in shaped.header[1:]]
    else:  # no stored file, or an empty one
        comparison.columns = list(merged_header)
    stored_at = {name: index for index, name in enumerate(stored_header) if index > 0}
    merged_at = {name: index for index, name in enumerate(merged_header) if index > 0}

    def laid_out(row: list[str], at: dict[str, int]) -> list[str]:
        return [row[0], *(row[at[name]] if name in at else fill for name in comparison.columns[1:])]

    for day in sorted({label} | shaped.dates):
        stored = [laid_out(row, stored_at) for row in stored_by_date.get(day, [])]
        new = [laid_out(row, merged_at) for row in output.by_date.get(day, [])]
        comparison.dates.append(_pair_rows(day, comparison, stored, new))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _pair_rows(day: str, comparison: FileComparison, stored: list[list[str]],
               new: list[list[str]]) -> DateComparison:
    """Pair the stored and new rows of a date: by the columns that hold text
    (a report's dimensions: wiki, bucket, ...; the file's, not new or gone),
    when those tell the rows of each side apart; by position otherwise."""
    if len(stored) <= 1 and len(new) <= 1:
        return DateComparison(day, [RowPair(stored[0] if stored else None, new[0] if new else None)]
                              if stored or new else [], [])
    changing = set(comparison.new_columns) | set(comparison.gone_columns)
    keys = [index for index, name in enumerate(comparison.columns) if index > 0
            and name not in changing
            and any(row[index] != "" and not _is_number(row[index]) for row in stored + new)]
    names = [comparison.columns[index] for index in keys]

    def key(row: list[str]) -> tuple[str, ...]:
        return tuple(row[index] for index in keys)

    unique = all(len({key(row) for row in rows}) == len(rows) for rows in (stored, new))
    if not keys or not unique:
        note = ("rows paired by position: no column holds text to tell them apart" if not keys else
                f"rows paired by position: {', '.join(names)} do not tell them apart")
        pairs = [RowPair(stored[i] if i < len(stored) else None, new[i] if i < len(new) else None)
                 for i in range(max(len(stored), len(new)))]
        return DateComparison(day, pairs, [], note)
    new_by_key = {key(row): row for row in new}
    pairs = [RowPair(row, new_by_key.pop(key(row), None)) for row in stored]
    pairs += [RowPair(None, row) for row in new_by_key.values()]
    return DateComparison(day, pairs, names)


def render(comparison: FileComparison) -> str:
    """The comparison of one file as text: a line per date saying what
    differs, the rows (stored, new, or `same` once), carets under the new
    values that differ. New columns are marked +name, gone ones -name."""
    lines: list[str] = []
    header = [("+" if name in comparison.new_columns else "-" if name in comparison.gone_columns
               else "") + name for name in comparison.columns]
    for each in comparison.dates:
        lines.append(f"== {comparison.file} {each.label}: {_summary(comparison, each)}")
        table: list[tuple[str, list[str], str]] = [("", header, "")]
        carets: dict[int, dict[int, int]] = {}  # table row -> {column: caret count}
        for pair in each.pairs:
            if pair.stored == pair.new and pair.stored is not None:
                table.append(("same", pair.stored, ""))
                continue
            if pair.stored is not None:
                table.append(("stored", pair.stored, "" if pair.new is not None or not each.stored_rows
                              else "(not in the new result)"))
            if pair.new is not None:
                table.append(("new", pair.new, "(no stored row)" if pair.stored is None
                              and each.stored_rows else ""))
                stored = pair.stored or []
                # Each caret mark as wide as the wider of the two values.
                carets[len(table) - 1] = {i: max(len(_shown(stored[i])), len(_shown(pair.new[i])))
                                          for i in pair.differing()}
        shown = [(tag, [_shown(cell) for cell in cells], why) for tag, cells, why in table]
        widths = [max(len(cells[i]) for _, cells, _ in shown) for i in range(len(header))]
        tag_width = max(len(tag) for tag, _, _ in shown)
        for number, (tag, cells, why) in enumerate(shown):
            text = "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
            lines.append(f"  {tag.ljust(tag_width)}  {text}  {why}".rstrip())
            if carets.get(number):
                marks = "  ".join(("^" * carets[number].get(i, 0)).ljust(widths[i])
                                  for i in range(len(cells)))
                lines.append(f"  {''.ljust(tag_width)}  {marks}".rstrip())
        if each.note:
            lines.append(f"  ({each.note})")
    if comparison.new_columns or comparison.gone_columns:
        fill = comparison.fill or EMPTY
        notes = []
        if comparison.new_columns:
            notes.append(f"+ new column, {fill} in the stored rows")
        if comparison.gone_columns:
            notes.append(f"- not in the new result, kept in the file with {fill} for this date")
        lines.append(f"  ({'; '.join(notes)})")
    return "\n".join(lines) + "\n"


def _shown(cell: str) -> str:
    return cell if cell != "" else EMPTY


def _summary(comparison: FileComparison, each: DateComparison) -> str:
    if not each.stored_rows:
        return "no stored row for this date" + ("" if comparison.columns and any(
            pair.new is not None for pair in each.pairs) else " (and no new one)")
    parts = []
    values = sum(len(pair.differing()) for pair in each.pairs)
    if values:
        parts.append(f"{values} value{'s' if values != 1 else ''} differ{'s' if values == 1 else ''}")
    only_stored = sum(pair.new is None for pair in each.pairs)
    only_new = sum(pair.stored is None for pair in each.pairs)
    if only_stored:
        parts.append(f"{only_stored} stored row{'s' if only_stored != 1 else ''} not in the new result")
    if only_new:
        parts.append(f"{only_new} new row{'s' if only_new != 1 else ''} not stored")
    if comparison.new_columns:
        parts.append(f"new column{'s' if len(comparison.new_columns) != 1 else ''} "
                     + ", ".join(comparison.new_columns))
    if comparison.gone_columns:
        parts.append(f"column{'s' if len(comparison.gone_columns) != 1 else ''} gone "
                     + ", ".join(comparison.gone_columns))
    return "; ".join(parts) if parts else "same"
