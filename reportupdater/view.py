# Operating views, for people: one self-contained HTML page of a folder's
# coverage, series and next run (`reportupdater view`, `run --view`).
#
# Built from the same plan `status` prints (overview.survey -> plan_report),
# the output files and the run state; touches nothing else, connects to
# nothing. The page needs no server and no network: the charting library
# (uPlot, vendored in reportupdater/static/ with its licence) and the page's
# own script and style are inlined. Everything that comes from a folder
# (names, values, messages) goes into the page as JSON inside a
# <script type="application/json"> element, with `<`, `>`, `&` and
# U+2028/U+2029 escaped, and the page's script puts it into the DOM with
# textContent only: a folder's text is data, never markup.
#
# Compact data, so that 200 reports x 20 files x 730 days still load: a
# coverage strip is run-length encoded ([state, reason, count] triples, one
# reasons table per report), labels and chart x values are delta-run-length
# encoded, and charts are drawn lazily once the folder is large.

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from . import atomic, intervals, overview
from . import plan as planning
from .config import FolderConfig, Granularity, ReportConfig
from .runner import read_outputs

# Cell states of a coverage strip, as numbers in the page's data.
COMPUTED, MISSING, FAILING, WAITING, RERUN, UNREADABLE = range(6)
STATE_NAMES = ("computed", "missing", "failing", "waiting for data", "rerun requested",
               "file cannot be read")
FAILURES_SHOWN = 50       # per report; the page says how many more there are
EAGER_VALUES = 300_000    # chart values up to which every chart is drawn at load
_INTEGER = re.compile(r"[-+]?\d{1,15}\Z", re.ASCII)
_FIELD = re.compile(r"\{(\w+)")


def build_page(folder: FolderConfig, output_folder: Path, now: datetime,
               only_reports: Sequence[str] = ()) -> str:
    """The HTML page (text) of the folder's reports as a run at `now` would see them."""
    return render(page_data(folder, output_folder, now, only_reports))


def write_page(path: Path, text: str) -> None:
    """Replace the page atomically (a browser or a copy never sees half of it).
    Raises OSError (a link at PATH is refused, never written through)."""
    atomic.write(path, text.encode("utf-8"))


# ------------------------------------------------------------------ data


def page_data(folder: FolderConfig, output_folder: Path, now: datetime,
              only_reports: Sequence[str] = ()) -> dict[str, Any]:
    views = overview.survey(folder, output_folder, now, tuple(only_reports))
    status = overview.status_json(folder, views, verbose=False)
    reports = []
    values = 0
    for view, summary in zip(views, status["reports"], strict=True):
        entry = _report_data(view, summary, output_folder)
        values += entry.pop("_values")
        reports.append(entry)
    return {
        "query_folder": str(folder.query_folder),
        "output_folder": str(output_folder),
        "generated": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config_errors": status["config_errors"],
        "ok": status["ok"],
        "states": STATE_NAMES,
        "lazy": values > EAGER_VALUES,
        "reports": reports,
    }


def _report_data(view: overview.ReportView, summary: dict[str, Any],
                 output_folder: Path) -> dict[str, Any]:
    plan = view.plan
    report = plan.report
    reasons = _Reasons()
    labels = [interval.label for interval in plan.due]
    files = [_file_coverage(combination, labels, reasons) for combination in view.combinations]
    series, values = _series(report, output_folder)
    next_run = [{"name": c.name or report.key,
                 "todo": planning.compress(c.plan.todo), "todo_count": len(c.plan.todo),
                 "later": planning.compress(c.plan.later), "later_count": len(c.plan.later),
                 "backing_off": planning.compress(c.plan.backing_off),
                 "backing_off_count": len(c.plan.backing_off)}
                for c in view.combinations
                if c.plan.todo or c.plan.later or c.plan.backing_off]
    failures = sorted(((c.name, label, failure) for c in view.combinations
                       for label, failure in c.failures.items()),
                      key=lambda item: (item[2].last_failed, item[0], item[1]), reverse=True)
    return {
        "key": report.key,
        "granularity": report.granularity.value,
        "hourly": report.granularity is Granularity.HOURS,
        "summary": summary,
        "verdict": plan.verdict.value,
        "notes": overview.report_notes(view),
        "labels": delta_runs([_label_number(label) for label in labels]),
        "reasons": reasons.texts,
        "files": files,
        "next_run": next_run,
        "failures": [{"where": name, "interval": label, "error": failure.error,
                      "attempts": failure.attempts, "first_failed": failure.first_failed,
                      "last_failed": failure.last_failed, "retry_after": failure.retry_after}
                     for name, label, failure in failures[:FAILURES_SHOWN]],
        "failures_more": max(0, len(failures) - FAILURES_SHOWN),
        "file_errors": [{"name": c.name or report.key, "error": c.error}
                        for c in view.combinations if c.error],
        "series": series,
        "_values": values,
    }


class _Reasons:
    """A report's reason texts, each stored once; cells name them by index."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        if text not in self._index:
            self._index[text] = len(self.texts)
            self.texts.append(text)
        return self._index[text]


def _file_coverage(combination: overview.CombinationView, labels: list[str],
                   reasons: _Reasons) -> dict[str, Any]:
    """One strip: a cell per due interval, run-length encoded as [state, reason, count]..."""
    file_plan = combination.plan
    name = combination.name
    if file_plan.error is not None:
        return {"name": name, "runs": [UNREADABLE, reasons(file_plan.error), len(labels)]
                if labels else []}
    if not file_plan.missing and not file_plan.lookback:  # the common case: complete
        return {"name": name, "runs": [COMPUTED, reasons("computed"), len(labels)] if labels else []}
    position = {label: index for index, label in enumerate(labels)}
    cells = [(COMPUTED, reasons("computed"))] * len(labels)
    again = reasons("computed; the next run computes it again (lookback)")
    for interval in file_plan.lookback:
        if interval in file_plan.todo and interval.label in position:
            cells[position[interval.label]] = (COMPUTED, again)
    why = _reason_by_label(file_plan.reasons, position)
    for interval in file_plan.missing:
        index = position.get(interval.label)
        if index is None:
            continue
        if interval.label in combination.failures:
            state = FAILING
        elif interval.label in combination.waiting:
            state = WAITING
        elif interval in file_plan.rerun:
            state = RERUN
        else:
            state = MISSING
        cells[index] = (state, reasons(why.get(index, STATE_NAMES[state])))
    return {"name": name, "runs": run_lengths(cells)}


def _reason_by_label(folded: Sequence[tuple[str, str]], position: dict[str, int]) -> dict[int, str]:
    """plan.reasons ('first..last' or 'label', why) as cell index -> why."""
    found: dict[int, str] = {}
    for span, why in folded:
        first, _, last = span.partition("..")
        start, end = position.get(first), position.get(last or first)
        if start is None or end is None:
            continue
        for index in range(start, end + 1):
            found[index] = why
    return found


def run_lengths(cells: Sequence[tuple[int, int]]) -> list[int]:
    """[(state, reason), ...] as a flat [state, reason, count, state, reason, count, ...]."""
    flat: list[int] = []
    for state, reason in cells:
        if flat and flat[-3] == state and flat[-2] == reason:
            flat[-1] += 1
        else:
            flat += [state, reason, 1]
    return flat


def delta_runs(numbers: Sequence[int]) -> list[int]:
    """[first, delta, count, delta, count, ...]: a regular calendar in a few numbers."""
    if not numbers:
        return []
    flat = [numbers[0]]
    for previous, number in zip(numbers, numbers[1:], strict=False):
        delta = number - previous
        if len(flat) > 1 and flat[-2] == delta:
            flat[-1] += 1
        else:
            flat += [delta, 1]
    return flat


def _label_number(label: str) -> int:
    """Days (or hours, for hourly labels) since 1970-01-01 of the label as written:
    the page turns it back into the same text without any time zone."""
    days = date.fromisoformat(label[:10]).toordinal() - _EPOCH_ORDINAL
    return days * 24 + int(label[11:13]) if "T" in label else days


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


# ---------------------------------------------------------------- series


def _number(text: str) -> int | float | None:
    """A cell as a chart value: None when empty or not a finite number."""
    if _INTEGER.match(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# A column's cells joined by newlines: all whole numbers (or empty), all decimals (or empty).
_INTEGER_LINES = re.compile(r"(?:[-+]?\d{1,15})?(?:\n(?:[-+]?\d{1,15})?)*\Z", re.ASCII)
_DECIMAL_LINES = re.compile(r"(?:[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)?"
                            r"(?:\n(?:[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)?)*\Z", re.ASCII)


def numbers(cells: Sequence[str]) -> list[int | float | None] | None:
    """A column's cells as chart values (None for an empty cell); None when a
    cell is not a finite number. Whole columns at a time: a big folder has
    millions of cells."""
    joined = "\n".join(cells)
    for pattern, kind in ((_INTEGER_LINES, int), (_DECIMAL_LINES, float)):
        if pattern.match(joined):
            values: list[Any] = list(map(kind, cells)) if all(cells) else \
                [kind(cell) if cell else None for cell in cells]
            if kind is int or all(math.isfinite(value) for value in values if value is not None):
                return values
            return None
    found = []
    for cell in cells:
        value = _number(cell) if cell else None
        if cell and value is None:
            return None
        found.append(value)
    return found


def dimension_columns(report: ReportConfig, header: Sequence[str], columns: Sequence[Sequence[str]],
                      parsed: Sequence[list[Any] | None] | None = None) -> list[str]:
    """The columns that tell the rows of one date apart, as the Graphite path
    does: the path's placeholders that are columns; without a graphite
    section, the columns holding anything but numbers. `columns`: the
    file's cells, column by column; `parsed`: numbers() of each, if known."""
    if report.graphite is not None:
        named = set(_FIELD.findall(report.graphite.path))
        return [column for column in header[1:] if column in named]
    if parsed is None:
        parsed = [None] + [numbers(cells) for cells in columns[1:]]
    return [column for column, values in zip(header[1:], parsed[1:], strict=True) if values is None]


def _series(report: ReportConfig, output_folder: Path) -> tuple[dict[str, Any], int]:
    """The report's chart data: one chart per numeric column, one line per
    explode combination and dimension values (a Graphite path); and the
    number of values in it."""
    _, outputs = read_outputs(report, output_folder)
    tables = []  # (explode, header, the cells column by column)
    for explode, output in outputs.items():
        if not output.dates:
            continue
        header, by_date = output.header, output.by_date
        width = len(header)
        rows = list(itertools.chain.from_iterable(map(by_date.__getitem__, sorted(by_date))))
        if set(map(len, rows)) != {width}:
            rows = [(list(row) + [""] * width)[:width] for row in rows]
        tables.append((explode, header, list(zip(*rows, strict=True))))
    dims: list[str] = []
    parsed: dict[tuple[int, int], list[Any] | None] = {}  # (file, column index) -> numbers()
    for file, (_, header, columns) in enumerate(tables):
        if report.graphite is None:
            for index in range(1, len(header)):
                parsed[file, index] = numbers(columns[index])
        for column in dimension_columns(report, header, columns,
                                        [parsed.get((file, index)) for index in range(len(header))]):
            if column not in dims:
                dims.append(column)
    labels = sorted({label for _, _, columns in tables for label in columns[0]})
    column_of = {label: index for index, label in enumerate(labels)}
    names: list[str] = []
    name_index: dict[str, int] = {}
    dates_of: dict[int, set[int]] = {}    # line -> the labels it has (for collisions)
    lines: dict[str, dict[int, list[Any]]] = {}  # column -> line -> value per label
    not_numeric: set[str] = set()
    collisions = 0
    for file, (explode, header, columns) in enumerate(tables):
        positions = {column: index for index, column in enumerate(header)}
        dim_positions = [(column, positions[column]) for column in dims if column in positions]
        keys = list(zip(*(columns[index] for _, index in dim_positions), strict=True)) \
            if dim_positions else [()] * len(columns[0])
        groups: dict[tuple[str, ...], list[int]] = {}
        if len(set(keys)) == 1:  # the common case: one line per file
            groups[keys[0]] = []
        else:
            for row, key in enumerate(keys):
                groups.setdefault(key, []).append(row)
        for key, members in groups.items():
            parts = dict(explode)
            parts.update(zip((column for column, _ in dim_positions), key, strict=True))
            name = " ".join(f"{part}={value}" for part, value in parts.items()) or report.key
            line = name_index.setdefault(name, len(names))
            if line == len(names):
                names.append(name)
            whole = len(groups) == 1
            where = [column_of[label] for label in
                     (columns[0] if whole else [columns[0][row] for row in members])]
            seen = dates_of.setdefault(line, set())
            collisions += len(where) - len(set(where)) + len(seen.intersection(where))
            # Rows are sorted by date: all labels once each means cell i is label i.
            every = not seen and len(where) == len(labels) == len(set(where))
            seen.update(where)
            for column, index in positions.items():
                if index == 0 or column in dims or column in not_numeric:
                    continue
                values = (parsed[file, index] if (file, index) in parsed else numbers(columns[index])) \
                    if whole else numbers([columns[index][row] for row in members])
                if values is None:
                    not_numeric.add(column)
                    continue
                by_line = lines.setdefault(column, {})
                if every:
                    by_line[line] = values
                    continue
                aligned = by_line.setdefault(line, [None] * len(labels))
                for at, value in zip(where, values, strict=True):
                    if value is not None:
                        aligned[at] = value  # the last row wins, as in Graphite
    charts = []
    count = 0
    for column, by_line in lines.items():
        if column in not_numeric:
            continue
        series: list[list[Any] | None] = [None] * len(names)
        totals = [0.0] * len(names)
        for line, aligned in by_line.items():
            if aligned.count(None) == len(aligned):
                continue
            series[line] = aligned
            totals[line] = sum(map(abs, filter(None, aligned)))
            count += len(labels)
        order = sorted((line for line in range(len(names)) if series[line] is not None),
                       key=lambda line: (-totals[line], names[line]))
        if order:
            charts.append({"column": column, "values": series, "order": order})
    notes = []
    if collisions:
        notes.append(f"{collisions} rows share their line and date with an earlier row: each "
                     "line shows the last one, as Graphite would keep it"
                     + (" (add the column that tells them apart to graphite.path)"
                        if report.graphite is not None else ""))
    return {"names": names, "dimensions": dims, "x": delta_runs(_x_values(report, labels)),
            "charts": charts, "notes": notes}, count


def _x_values(report: ReportConfig, labels: Sequence[str]) -> list[int]:
    """UTC epoch seconds of each label's interval start (the Graphite timestamp)."""
    if report.granularity is Granularity.HOURS:
        return [_label_number(label) * 3600 for label in labels]
    if report.timezone == "UTC":
        return [_label_number(label) * 86400 for label in labels]
    return [int(intervals.label_start(label, report).timestamp()) for label in labels]


# ------------------------------------------------------------------ page


def embed_json(data: Any) -> str:
    """JSON that can stand inside a <script> element whatever its strings hold:
    no `<`, `>` or `&` (so no `</script>` or `<!--`), and no U+2028/U+2029."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _static(name: str) -> str:
    return (resources.files(__package__) / "static" / name).read_text(encoding="utf-8")


def _inline_script(code: str) -> str:
    # The vendored and our own scripts hold no `</script`; a future update
    # that does must not silently end the element early.
    if re.search(r"</script|<!--", code, re.IGNORECASE):
        raise ValueError("an inlined script holds '</script' or '<!--'")
    return f"<script>{code}</script>"


def render(data: dict[str, Any]) -> str:
    """The page: static markup, the data as JSON, the inlined scripts and styles."""
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>reportupdater view</title>",
        f"<style>{_static('uPlot.min.css')}</style>",
        f"<style>{_static('view.css')}</style>",
        "</head><body><main id=\"page\"><noscript>This page draws its content with "
        "JavaScript.</noscript></main><div id=\"tip\" hidden></div>\n",
        f"<script type=\"application/json\" id=\"data\">{embed_json(data)}</script>\n",
        _inline_script(_static("uPlot.iife.min.js")), "\n",
        _inline_script(_static("view.js")), "\n",
        "</body></html>\n",
    ])
