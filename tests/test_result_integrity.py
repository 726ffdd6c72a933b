"""Between an engine's raw rows and the TSV file, no value is quietly changed
or dropped: a column named twice, a pivot category that is NULL, bytes that
are not UTF-8, a first-column time a date label would drop, a merge that
would put a file's history in the wrong column. Each either keeps the value
exactly or fails its interval with a one-line error naming the column, and
the file is left as it was."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, UTC
from decimal import Decimal
from pathlib import Path

import pytest
from testkit import NOW, assert_failed, make_db, make_folder, read, run_cli, tsv

from reportupdater.config import Pivot
from reportupdater.datatypes import EngineError, Interval, Result
from reportupdater.engines.base import build_result, cell_text, date_label, split_result
from reportupdater.pivot import NULL_CATEGORY, pivot_result
from reportupdater.store import OutputFile, StoreError

UTC = UTC
DAY = "2026-01-04"  # the one interval due at NOW for a report starting then


def day(label: str) -> Interval:
    start = datetime.fromisoformat(label).replace(tzinfo=UTC)
    return Interval(start, start + timedelta(days=1))


def hour(label: str) -> Interval:
    start = datetime.fromisoformat(label).replace(tzinfo=UTC)
    return Interval(start, start + timedelta(hours=1), hourly=True)


def sql_folder(tmp_path: Path, query: str, extra: str = "", data: str = "") -> Path:
    folder = make_folder(tmp_path, f"""\
databases:
  db: {{url: "sqlite:///data.db"}}
reports:
  r:
    db: db
    granularity: days
    starts: {DAY}
{extra}""", {"r.sql": query})
    make_db(folder / "data.db", data or "CREATE TABLE t (x INTEGER);")
    return folder


def script_folder(tmp_path: Path, script: str, extra: str = "", starts: str = DAY) -> Path:
    return make_folder(tmp_path, f"""\
reports:
  r:
    type: script
    granularity: days
    starts: {starts}
{extra}""", scripts={"r": script})


def run(folder: Path, out: Path, now: str = NOW) -> tuple[int, str]:
    code, _, stderr = run_cli("run", folder, out, "--now", now)
    return code, stderr


# ------------------------------------------------- item 5: a column named twice

def test_sql_result_naming_a_column_twice_fails_naming_the_column(tmp_path):
    folder = sql_folder(tmp_path, "SELECT '{from_date}' AS date, COUNT(*) AS n, SUM(x) AS n FROM t\n")
    out = tmp_path / "out"
    code, stderr = run(folder, out)
    assert code == 1
    assert_failed(stderr, f"r {DAY}", "column 'n' is named twice in the result")
    assert not (out / "r.tsv").exists()


def test_names_that_differ_only_in_case_are_the_same_column(tmp_path):
    # MySQL and SQLite return aliases as written; the database (and Hive,
    # which lower-cases them) sees one name.
    folder = sql_folder(tmp_path, "SELECT '{from_date}' AS date, 1 AS edits, 2 AS Edits\n")
    out = tmp_path / "out"
    code, stderr = run(folder, out)
    assert code == 1
    assert_failed(stderr, f"r {DAY}", "column 'edits' is named twice in the result "
                                      "(as 'edits' and 'Edits')")
    assert not (out / "r.tsv").exists()


def test_script_header_naming_a_column_twice_fails(tmp_path):
    folder = script_folder(tmp_path, """\
        #!/bin/sh
        printf 'date\\tn\\tn\\n%s\\t1\\t2\\n' "$1"
        """)
    code, stderr = run(folder, tmp_path / "out")
    assert code == 1
    assert_failed(stderr, f"r {DAY}", "column 'n' is named twice in the result")


def test_hive_command_columns_that_lose_their_table_prefix_to_one_name_fail(tmp_path):
    # `SELECT a.n, b.n`: Hive prints `a.n b.n`, the engine keeps what follows
    # the last dot. The hive CLI is stood in for by a real command printing
    # what it would.
    folder = make_folder(tmp_path, f"""
        databases:
          cli: {{engine: hive-cli, command: "./fake-hive"}}
        reports:
          r: {{type: hive, db: cli, granularity: days, starts: {DAY}}}
        """, {"r.hql": "SELECT '{from_date}' AS date, a.n, b.n FROM a JOIN b\n"},
        scripts={"fake-hive": "#!/bin/sh\nprintf 'date\\ta.n\\tb.n\\n2026-01-04\\t1\\t2\\n'\n"})
    out = tmp_path / "out"
    code, stderr = run(folder, out)
    assert code == 1
    assert_failed(stderr, f"r {DAY}", "column 'n' is named twice in the result")
    assert not (out / "r.tsv").exists()


def test_a_file_whose_header_names_a_column_twice_is_not_merged_over(tmp_path):
    # A file written before the check, `date n n`; then the alias is fixed.
    # Merging by name would keep one of the two n columns only.
    folder = sql_folder(tmp_path, "SELECT '{from_date}' AS date, 1 AS n, 2 AS total\n")
    out = tmp_path / "out"
    out.mkdir()
    before = tsv("date\tn\tn", "2026-01-03\t1\t2")
    (out / "r.tsv").write_text(before)
    code, stderr = run(folder, out)
    assert code == 1
    assert_failed(stderr, f"r {DAY}", f"{out / 'r.tsv'}: the file's header has duplicate "
                                      "column names: 'n' is named twice")
    assert read(out / "r.tsv") == before


def test_a_pivot_category_that_is_null_and_one_spelled_like_its_column_collide(tmp_path):
    folder = script_folder(tmp_path, """\
        #!/bin/sh
        printf 'date\\tb\\tv\\n%s\\t(null)\\t1\\n%s\\t\\t2\\n' "$1" "$1"
        """, extra="    pivot: {index: date, columns: b, values: v}\n")
    out = tmp_path / "out"
    code, stderr = run(folder, out)
    assert code == 1
    assert_failed(stderr, f"r {DAY}", "pivot: several rows for date '2026-01-04' and b '(null)' "
                                      "(a NULL or empty b is stored as '(null)')")
    assert not (out / "r.tsv").exists()


def test_pivot_columns_naming_the_index_is_an_error_not_a_crash():
    result = Result(("date", "v"), (("2026-01-04", "1"),))
    with pytest.raises(EngineError, match="pivot columns 'date' is the index column"):
        pivot_result(result, Pivot(index="date", columns="date", values="v"))


def test_a_pivot_category_named_like_the_files_date_column_is_refused(tmp_path):
    # The query renamed its index (date -> day), and a category is 'date':
    # the file's date column and that category would share one name.
    output = OutputFile.load(_write(tmp_path / "r.tsv", tsv("date\tx", "2026-01-03\t1")))
    pivoted = pivot_result(Result(("day", "b", "v"), (("2026-01-04", "date", "5"),)),
                           Pivot(index="day", columns="b", values="v"))
    with pytest.raises(StoreError, match="both be named 'date'"):
        output.merge(pivoted, {"2026-01-04"}, keep_column_order=True)
    assert output.header == ["date", "x"] and output.rows == [["2026-01-03", "1"]]


def test_a_result_date_column_named_like_a_file_column_is_refused(tmp_path):
    # Old code: the file's `day` column vanished (the new header named the
    # date `day`, and the old column's values were dropped as unknown).
    output = OutputFile.load(_write(tmp_path / "r.tsv", tsv("date\tday", "2026-01-03\tmon")))
    with pytest.raises(StoreError, match="both be named 'day'"):
        output.merge(Result(("day", "x"), (("2026-01-04", "1"),)), {"2026-01-04"})
    assert output.rows == [["2026-01-03", "mon"]]


def test_a_column_respelled_in_another_case_is_refused_not_split(tmp_path):
    # A query moved from MySQL to Hive gets its names lower-cased: the
    # history would stay in `editCount`, new values go to `editcount`.
    path = _write(tmp_path / "r.tsv", tsv("date\teditCount", "2026-01-03\t7"))
    output = OutputFile.load(path)
    with pytest.raises(StoreError, match="the result's column 'editcount' differs only in case "
                                         "from the file's column 'editCount'"):
        output.merge(Result(("date", "editcount"), (("2026-01-04", "8"),)), {"2026-01-04"})
    assert output.header == ["date", "editCount"] and output.dirty is False
    # Renamed in the file (as the message says), the merge goes on.
    path.write_text(tsv("date\teditcount", "2026-01-03\t7"))
    output = OutputFile.load(path)
    output.merge(Result(("date", "editcount"), (("2026-01-04", "8"),)), {"2026-01-04"})
    assert output.rows == [["2026-01-03", "7"], ["2026-01-04", "8"]]


def test_header_evolution_still_keeps_renamed_and_dropped_columns(tmp_path):
    # Guard: what the checks above refuse is narrow; a rename to another
    # name keeps the old column (and its history) last.
    output = OutputFile.load(_write(tmp_path / "r.tsv", tsv("date\ta\tb", "2026-01-03\t1\t2")))
    output.merge(Result(("date", "a", "c"), (("2026-01-04", "3", "4"),)), {"2026-01-04"})
    assert output.header == ["date", "a", "c", "b"]
    assert output.rows == [["2026-01-03", "1", "", "2"], ["2026-01-04", "3", "4", ""]]


def test_a_ragged_result_is_never_merged(tmp_path):
    output = OutputFile.load(tmp_path / "r.tsv")
    with pytest.raises(StoreError, match="does not have the 2 fields"):
        output.merge(Result(("date", "a"), (("2026-01-04", "1", "2"),)), {"2026-01-04"})
    assert output.dirty is False


# ---------------------------------------------- item 8: NULL pivot categories

def test_pivot_keeps_rows_whose_category_is_null_or_empty(tmp_path):
    folder = sql_folder(tmp_path, "SELECT '{from_date}' AS date, browser, COUNT(*) AS views "
                                  "FROM hits GROUP BY browser\n",
                        extra="    pivot: {index: date, columns: browser, values: views, fill: 0}\n",
                        data="CREATE TABLE hits (browser TEXT);"
                             "INSERT INTO hits VALUES ('Chrome'), (NULL), (NULL), ('');")
    out = tmp_path / "out"
    code, stderr = run(folder, out)
    # NULL and '' are one category to a TSV cell: both go to (null), once each.
    assert code == 1
    assert "several rows for date '2026-01-04' and browser '(null)'" in stderr
    (folder / "data.db").unlink()
    make_db(folder / "data.db", "CREATE TABLE hits (browser TEXT);"
                                "INSERT INTO hits VALUES ('Chrome'), (NULL), (NULL);")
    code, stderr = run(folder, out)
    assert code == 0, stderr
    assert read(out / "r.tsv") == tsv("date\t(null)\tChrome", "2026-01-04\t2\t1")


def test_pivot_of_a_single_row_whose_category_is_null(tmp_path):
    # Old code took it for the empty-result row and stored only fill.
    folder = script_folder(tmp_path, """\
        #!/bin/sh
        printf 'date\\tb\\tv\\n%s\\t\\t5\\n' "$1"
        """, extra="    pivot: {index: date, columns: b, values: v, fill: 0}\n")
    out = tmp_path / "out"
    code, stderr = run(folder, out)
    assert code == 0, stderr
    assert read(out / "r.tsv") == tsv("date\t(null)", "2026-01-04\t5")


def test_pivot_of_an_empty_result_still_stores_the_date(tmp_path):
    # Guard: the empty-result row must not become a (null) category.
    folder = script_folder(tmp_path, """\
        #!/bin/sh
        printf 'date\\tb\\tv\\n'
        [ "$1" = 2026-01-03 ] && printf '%s\\tx\\t1\\n' "$1"
        exit 0
        """, extra="    pivot: {index: date, columns: b, values: v, fill: 0}\n", starts="2026-01-03")
    out = tmp_path / "out"
    code, stderr = run(folder, out)
    assert code == 0, stderr
    assert read(out / "r.tsv") == tsv("date\tx", "2026-01-03\t1", "2026-01-04\t0")
    code, stderr = run(folder, out)  # done: nothing recomputed, nothing changed
    assert code == 0 and read(out / "r.tsv") == tsv("date\tx", "2026-01-03\t1", "2026-01-04\t0")


def test_pivot_in_a_batch_keeps_null_categories_and_fills_empty_days(tmp_path):
    folder = script_folder(tmp_path, """\
        #!/bin/sh
        # One query for the batch: rows for the 2nd only, one of them NULL.
        printf 'date\\tb\\tv\\n2026-01-02\\tx\\t1\\n2026-01-02\\t\\t3\\n'
        """, extra="    batch: 3\n    pivot: {index: date, columns: b, values: v, fill: 0}\n",
        starts="2026-01-02")
    out = tmp_path / "out"
    code, stderr = run(folder, out)
    assert code == 0, stderr
    assert read(out / "r.tsv") == tsv("date\t(null)\tx", "2026-01-02\t3\t1", "2026-01-03\t0\t0",
                                      "2026-01-04\t0\t0")


def test_pivot_value_that_is_null_stays_empty_not_fill():
    # Guard: a NULL value is not a missing category.
    result = build_result(["date", "b", "v"], [["2026-01-04", "x", None], ["2026-01-04", "y", 2]],
                          day("2026-01-04"))
    pivoted = pivot_result(result, Pivot(index="date", columns="b", values="v", fill="0"))
    assert pivoted.rows == (("2026-01-04", "", "2"),)


def test_pivot_and_split_know_the_empty_result_row_from_a_row_of_nulls():
    empty = build_result(["date", "b", "v"], [], day("2026-01-04"))
    nulls = build_result(["date", "b", "v"], [["2026-01-04", None, None]], day("2026-01-04"))
    assert empty.rows == nulls.rows and empty.empty and not nulls.empty
    pivot = Pivot(index="date", columns="b", values="v", fill="0")
    assert pivot_result(empty, pivot).header == ("date",)
    assert pivot_result(nulls, pivot).header == ("date", NULL_CATEGORY)
    parts = (day("2026-01-04"), day("2026-01-05"))
    pieces = split_result(build_result(["date", "v"], [], parts[0]), parts)
    assert [(piece.rows, piece.empty) for _, piece in pieces] == [
        ((("2026-01-04", ""),), True), ((("2026-01-05", ""),), True)]


# --------------------------------------- cells: kept exactly, or a loud failure

def test_bytes_that_are_not_utf8_fail_naming_the_column(tmp_path):
    # Old code stored U+FFFD in place of each bad byte.
    folder = sql_folder(tmp_path, "SELECT '{from_date}' AS date, X'41FF42' AS title\n")
    out = tmp_path / "out"
    code, stderr = run(folder, out)
    assert code == 1
    assert_failed(stderr, f"r {DAY}", "row 1 column 'title': value is not UTF-8 text "
                                      "(byte 0xff at offset 1); convert it in the query")
    assert not (out / "r.tsv").exists()


def test_bytes_that_are_utf8_are_text():
    # Guard.
    assert cell_text(b"caf\xc3\xa9") == "café"
    assert cell_text(memoryview(b"x")) == "x"


def test_a_nul_in_a_cell_fails_instead_of_writing_a_file_no_run_can_read(tmp_path):
    folder = sql_folder(tmp_path, "SELECT '{from_date}' AS date, 'a' || char(0) || 'b' AS name\n")
    out = tmp_path / "out"
    code, stderr = run(folder, out)
    assert code == 1
    assert_failed(stderr, f"r {DAY}", "row 1 column 'name' holds a NUL character")
    assert not (out / "r.tsv").exists()


def test_a_lone_surrogate_fails_before_the_file_cannot_be_written():
    with pytest.raises(EngineError, match="row 1 column 'name' holds text that is not valid Unicode"):
        build_result(["date", "name"], [["2026-01-04", "a\ud800"]], day("2026-01-04"))


@pytest.mark.parametrize("value, text", [
    (timedelta(hours=1, seconds=2, microseconds=500000), "01:00:02.500000"),  # TIME(6)
    (timedelta(microseconds=-500000), "-00:00:00.500000"),  # was "00:00:00": sign and all lost
    (datetime(999, 1, 2, 3, 4, 5), "0999-01-02 03:04:05"),  # was "999-01-02 ...": %Y
    (datetime(2026, 1, 4, 5, tzinfo=timezone(timedelta(hours=1))), "2026-01-04 05:00:00+01:00"),
    (datetime(2026, 1, 4, 5, 0, 0, 7, tzinfo=UTC), "2026-01-04 05:00:00.000007+00:00"),
])
def test_cell_text_keeps_fractions_signs_years_and_offsets(value, text):
    assert cell_text(value) == text


@pytest.mark.parametrize("value, text", [
    (timedelta(hours=-838, minutes=-59, seconds=-59), "-838:59:59"),
    (Decimal("1E+3"), "1000"), (Decimal("1.50"), "1.50"), (Decimal("-0"), "-0"),
    (-0.0, "-0.0"), (1e16, "1e+16"), (float("nan"), "nan"), (True, "1"), (None, ""),
])
def test_cell_text_already_kept_these(value, text):
    # Guard: exact before these fixes, and must stay so.
    assert cell_text(value) == text


def test_a_daily_label_never_drops_a_time(tmp_path):
    # Old code stored 2026-01-04 for 13:45: a time (maybe a UTC time that
    # belongs to another local day) quietly cut off.
    folder = sql_folder(tmp_path, "SELECT '{from_date} 13:45:00' AS date, 1 AS n\n")
    out = tmp_path / "out"
    code, stderr = run(folder, out)
    assert code == 1
    assert_failed(stderr, f"r {DAY}", "first column must be a date YYYY-MM-DD, got "
                                      "'2026-01-04 13:45:00': a time other than midnight would "
                                      "be dropped; use DATE(...) in the query")
    with pytest.raises(EngineError, match="a time other than midnight"):
        date_label(datetime(2026, 1, 4, 13, 45))


@pytest.mark.parametrize("value", ["2026-01-04", "2026-01-04 00:00", "2026-01-04T00:00:00",
                                   "2026-01-04 00:00:00.000", datetime(2026, 1, 4)])
def test_a_daily_label_accepts_midnight(value):
    # Guard: DATETIME columns at midnight stay accepted.
    assert date_label(value) == "2026-01-04"


def test_hourly_labels_of_aware_times_are_utc_and_keep_their_seconds():
    paris = timezone(timedelta(hours=1))
    assert date_label(datetime(2026, 1, 4, 6, tzinfo=paris), hourly=True) == "2026-01-04T05:00:00"
    assert date_label(datetime(999, 1, 4, 6), hourly=True) == "0999-01-04T06:00:00"
    with pytest.raises(EngineError, match="a fraction of a second"):
        date_label(datetime(2026, 1, 4, 5, 0, 0, 500000), hourly=True)
    batch = (hour("2026-01-04T05:00"), hour("2026-01-04T06:00"))
    result = build_result(["date", "n"], [[datetime(2026, 1, 4, 7, tzinfo=paris), 1]], batch[0])
    # 07:00 in Paris is the 06:00 UTC hour, not the 07:00 one.
    assert [piece.rows for _, piece in split_result(result, batch)] == [
        (("2026-01-04T05:00:00", ""),), (("2026-01-04T06:00:00", "1"),)]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
