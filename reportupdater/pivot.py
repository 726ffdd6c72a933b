# Between execute and store: reshaping a result (`pivot:`).
#
# Turns a long result (date, category, value) into one row per date with one
# column per category; the store then merges it with the usual header
# evolution, filling missing categories with `fill`. Values stay the exact
# text the engine returned (plain dicts, no pandas: no type is ever
# inferred), and no row is dropped: a NULL or empty category becomes the
# column NULL_CATEGORY; rows that would land in one cell fail the interval.
# Pure: touches no file or database.

from __future__ import annotations

from .config import Pivot, ReportConfig
from .datatypes import EngineError, Result
from .store import OutputFile

# The column of rows whose category is NULL or empty (documented in the
# pivot section of docs/reference.md and in config.example.yaml).
NULL_CATEGORY = "(null)"


def pivot_result(result: Result, pivot: Pivot) -> Result:
    """The result with `pivot.columns` categories as columns of `pivot.values`."""
    header = list(result.header)
    for role, name in (("index", pivot.index), ("columns", pivot.columns), ("values", pivot.values)):
        if name not in header:
            raise EngineError(f"pivot {role} {name!r} is not a column of the result ({', '.join(header)})")
    if header[0] != pivot.index:
        raise EngineError(f"pivot index {pivot.index!r} must be the first (date) column, not {header[0]!r}")
    if pivot.columns == pivot.index:
        raise EngineError(f"pivot columns {pivot.columns!r} is the index column; name the "
                          "column whose values become column names")
    if result.empty:  # no rows at all: every category of the date gets `fill`
        return Result((pivot.index,), tuple((row[0],) for row in result.rows), empty=True)
    category_at, value_at = header.index(pivot.columns), header.index(pivot.values)
    cells_by_date: dict[str, dict[str, str]] = {}
    for row in result.rows:
        category = row[category_at] or NULL_CATEGORY
        cells = cells_by_date.setdefault(row[0], {})
        if category in cells:
            shown = (f"{category!r} (a NULL or empty {pivot.columns} is stored as {NULL_CATEGORY!r})"
                     if category == NULL_CATEGORY else repr(category))
            raise EngineError(f"pivot: several rows for {pivot.index} {row[0]!r} and "
                              f"{pivot.columns} {shown}")
        cells[category] = row[value_at]
    categories = sorted({category for cells in cells_by_date.values() for category in cells})
    if pivot.index in categories:
        raise EngineError(f"pivot: a category is named like the index column {pivot.index!r}")
    return Result((pivot.index, *categories),
                  tuple((label, *(cells.get(category, pivot.fill) for category in categories))
                        for label, cells in sorted(cells_by_date.items())))


def merge_shaped(output: OutputFile, result: Result, label: str, report: ReportConfig):
    """Pivot the result if the report asks for it, then merge it for `label`.
    Returns (the result as merged, {date: (old rows, new rows)} that changed)."""
    if report.pivot is None:
        return result, output.merge(result, {label})
    result = pivot_result(result, report.pivot)
    return result, output.merge(result, {label}, report.pivot.fill, keep_column_order=True)
