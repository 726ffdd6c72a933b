# Between execute and store: reshaping a result (`pivot:`).
#
# Turns a long result (date, category, value) into one row per date with one
# column per category, with pandas; the store then merges it with the usual
# header evolution, filling missing categories with `fill`. Values stay the
# exact text the engine returned. Pure: touches no file or database.

from __future__ import annotations

from .config import Pivot, ReportConfig
from .engines import EngineError, Result
from .store import OutputFile


def pivot_result(result: Result, pivot: Pivot) -> Result:
    """The result with `pivot.columns` categories as columns of `pivot.values`."""
    header = list(result.header)
    for role, name in (("index", pivot.index), ("columns", pivot.columns), ("values", pivot.values)):
        if name not in header:
            raise EngineError(f"pivot {role} {name!r} is not a column of the result ({', '.join(header)})")
    if header[0] != pivot.index:
        raise EngineError(f"pivot index {pivot.index!r} must be the first (date) column, not {header[0]!r}")
    import pandas as pd  # only pivot reports pay for importing pandas (~0.5 s per run)

    category = header.index(pivot.columns)
    rows = [row for row in result.rows if row[category] != ""]  # the empty-result row has none
    if not rows:
        return Result((pivot.index,), tuple((row[0],) for row in result.rows))
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    twice = frame.duplicated([pivot.index, pivot.columns])
    if twice.any():
        first = frame[twice].iloc[0]
        raise EngineError(f"pivot: several rows for {pivot.index} {first[pivot.index]!r} and "
                          f"{pivot.columns} {first[pivot.columns]!r}")
    if (frame[pivot.columns] == pivot.index).any():
        raise EngineError(f"pivot: a category is named like the index column {pivot.index!r}")
    wide = frame.pivot(index=pivot.index, columns=pivot.columns, values=pivot.values)
    wide = wide.reindex(sorted(wide.columns, key=str), axis=1).fillna(pivot.fill).reset_index()
    return Result(tuple(str(name) for name in wide.columns),
                  tuple(tuple(str(value) for value in row) for row in wide.itertuples(index=False)))


def merge_shaped(output: OutputFile, result: Result, label: str, report: ReportConfig):
    """Pivot the result if the report asks for it, then merge it for `label`.
    Returns (the result as merged, {date: (old rows, new rows)} that changed)."""
    if report.pivot is None:
        return result, output.merge(result, {label})
    result = pivot_result(result, report.pivot)
    return result, output.merge(result, {label}, report.pivot.fill, keep_column_order=True)
