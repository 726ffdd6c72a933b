# The `run` command end to end: real SQLite databases and real scripts, the
# command line in a subprocess as cron runs it, exact TSV contents.

from __future__ import annotations

import grp
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from reportupdater.runner import RunOptions, run
from reportupdater.cli import parse_now

from testkit import (DAILY_EDITS_SQL, DATE_EXPR, NOW, PER_WIKI_SQL, SQLITE_DB, assert_failed,
                     files_under, make_edits_db, make_folder, process_alive, read, run_cli, sql,
                     tsv, wait_for)

DAILY_CONFIG = SQLITE_DB + """\
reports:
  daily_edits:
    granularity: days
    starts: 2026-01-01
    db: db
"""

DAILY_EXPECTED = tsv(
    "date\tedits",
    "2026-01-01\t2",
    "2026-01-02\t1",
    "2026-01-03\t0",
    "2026-01-04\t3",
)


def daily_folder(tmp_path: Path) -> Path:
    folder = make_folder(tmp_path, DAILY_CONFIG, files={"daily_edits.sql": DAILY_EDITS_SQL})
    make_edits_db(folder)
    return folder


# ------------------------------------------------------------ basics


def test_daily_sql_report_from_empty(tmp_path):
    daily_folder(tmp_path)
    # Relative paths from another working directory: the sqlite URL is
    # relative to the query folder, the output folder to the cwd.
    code, stdout, stderr = run_cli("run", "query", "out", "--now", NOW, cwd=tmp_path)
    assert (code, stdout, stderr) == (0, "", "")
    assert files_under(tmp_path / "out") == {"daily_edits.tsv": DAILY_EXPECTED}


def test_second_run_computes_nothing(tmp_path):
    folder = daily_folder(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW)[0] == 0
    path = out / "daily_edits.tsv"
    before = path.stat()
    sql(folder, "INSERT INTO edits VALUES ('20260102000000', 'enwiki', 'human', 1);")
    time.sleep(0.01)

    code, stdout, stderr = run_cli("run", folder, out, "--now", NOW, "-l", "info")

    assert code == 0
    assert "daily_edits: 0 computed, 0 failed" in stderr
    after = path.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert read(path) == DAILY_EXPECTED
    assert files_under(out) == {"daily_edits.tsv": DAILY_EXPECTED}


def test_gap_is_filled_and_other_rows_are_kept_byte_for_byte(tmp_path):
    folder = daily_folder(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    # Values the database would not give: they prove those rows are not recomputed.
    (out / "daily_edits.tsv").write_text(tsv(
        "date\tedits",
        "2026-01-01\t20",
        "2026-01-03\t000",
        "2026-01-04\t 30 ",
    ))

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert read(out / "daily_edits.tsv") == tsv(
        "date\tedits",
        "2026-01-01\t20",
        "2026-01-02\t1",
        "2026-01-03\t000",
        "2026-01-04\t 30 ",
    )


def test_deleted_middle_row_is_recomputed(tmp_path):
    folder = daily_folder(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW)[0] == 0
    path = out / "daily_edits.tsv"
    path.write_text(DAILY_EXPECTED.replace("2026-01-02\t1\n", ""))
    # New data for every day: only the deleted day may pick it up.
    sql(folder, "INSERT INTO edits VALUES ('20260101230000', 'enwiki', 'bot', 1),"
                " ('20260102230000', 'enwiki', 'bot', 1), ('20260103230000', 'enwiki', 'bot', 1);")

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert read(path) == DAILY_EXPECTED.replace("2026-01-02\t1\n", "2026-01-02\t2\n")


def test_file_of_the_original_tool_with_crlf_line_ends_is_read(tmp_path):
    # The original wrote its files with Python 2's csv module: \r\n line ends.
    folder = daily_folder(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "daily_edits.tsv").write_bytes(b"date\tedits\r\n2026-01-01\t2\r\n2026-01-02\t1\r\n")

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert read(out / "daily_edits.tsv") == DAILY_EXPECTED


def test_only_the_reports_named_with_r_run(tmp_path):
    config = DAILY_CONFIG + """\
  per_wiki:
    granularity: days
    starts: 2026-01-04
    db: db
"""
    folder = make_folder(tmp_path, config, files={"daily_edits.sql": DAILY_EDITS_SQL,
                                                  "per_wiki.sql": PER_WIKI_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW, "-r", "daily_edits")
    assert code == 0, stderr
    assert files_under(out) == {"daily_edits.tsv": DAILY_EXPECTED}

    code, _, stderr = run_cli("run", folder, out, "--now", NOW, "-r", "nope")
    assert code == 2
    assert "'nope'" in stderr and "Traceback" not in stderr
    assert files_under(out) == {"daily_edits.tsv": DAILY_EXPECTED}


# ------------------------------------------------------ header evolution


def test_header_gains_a_column_and_changes_order(tmp_path):
    folder = daily_folder(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", "2026-01-03T05:00")[0] == 0
    assert read(out / "daily_edits.tsv") == tsv("date\tedits", "2026-01-01\t2", "2026-01-02\t1")

    (folder / "daily_edits.sql").write_text(
        "SELECT " + DATE_EXPR + " AS date, COUNT(DISTINCT wiki) AS wikis, COUNT(*) AS edits\n"
        "FROM edits WHERE ts >= '{from_timestamp}' AND ts < '{to_timestamp}'\n")
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert read(out / "daily_edits.tsv") == tsv(
        "date\twikis\tedits",
        "2026-01-01\t\t2",
        "2026-01-02\t\t1",
        "2026-01-03\t0\t0",
        "2026-01-04\t2\t3",
    )


def test_header_loses_a_column_which_is_kept_at_the_end(tmp_path):
    folder = daily_folder(tmp_path)
    (folder / "daily_edits.sql").write_text(
        "SELECT " + DATE_EXPR + " AS date, COUNT(DISTINCT wiki) AS wikis, COUNT(*) AS edits,"
        " SUM(size) AS bytes\n"
        "FROM edits WHERE ts >= '{from_timestamp}' AND ts < '{to_timestamp}'\n")
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", "2026-01-03T05:00")[0] == 0
    assert read(out / "daily_edits.tsv") == tsv(
        "date\twikis\tedits\tbytes", "2026-01-01\t2\t2\t30", "2026-01-02\t1\t1\t5")

    (folder / "daily_edits.sql").write_text(
        "SELECT " + DATE_EXPR + " AS date, COUNT(*) AS edits\n"
        "FROM edits WHERE ts >= '{from_timestamp}' AND ts < '{to_timestamp}'\n")
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert read(out / "daily_edits.tsv") == tsv(
        "date\tedits\twikis\tbytes",
        "2026-01-01\t2\t2\t30",
        "2026-01-02\t1\t1\t5",
        "2026-01-03\t0\t\t",
        "2026-01-04\t3\t\t",
    )


def test_header_renames_a_value_column(tmp_path):
    config = """\
reports:
  renamed:
    type: script
    granularity: days
    starts: 2026-01-01
"""
    folder = make_folder(tmp_path, config, scripts={
        "renamed": "#!/bin/sh\nprintf 'date\\tedits\\n%s\\t1\\n' \"$1\"\n"})
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", "2026-01-03T05:00")[0] == 0

    (folder / "renamed").write_text("#!/bin/sh\nprintf 'date\\tn_edits\\n%s\\t2\\n' \"$1\"\n")
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert read(out / "renamed.tsv") == tsv(
        "date\tn_edits\tedits",
        "2026-01-01\t\t1",
        "2026-01-02\t\t1",
        "2026-01-03\t2\t",
        "2026-01-04\t2\t",
    )


def test_header_renames_the_date_column(tmp_path):
    # The first column is the date whatever its name: renaming it in the query
    # must not cost the old rows their dates (which would leave a file that the
    # next run refuses to read, so the report could never run again).
    config = """\
reports:
  renamed:
    type: script
    granularity: days
    starts: 2026-01-01
"""
    folder = make_folder(tmp_path, config, scripts={
        "renamed": "#!/bin/sh\nprintf 'day\\tedits\\n%s\\t1\\n' \"$1\"\n"})
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", "2026-01-03T05:00")[0] == 0
    old = tsv("day\tedits", "2026-01-01\t1", "2026-01-02\t1")
    assert read(out / "renamed.tsv") == old

    (folder / "renamed").write_text("#!/bin/sh\nprintf 'date\\tedits\\n%s\\t2\\n' \"$1\"\n")
    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-04T05:00")

    # Either the rows keep their dates under the new name, or the report
    # fails and leaves the file as it was; never a file of dateless rows.
    merged = tsv("date\tedits", "2026-01-01\t1", "2026-01-02\t1", "2026-01-03\t2")
    assert (code, read(out / "renamed.tsv")) in [(0, merged), (1, old)], stderr
    if code == 0:
        code, _, stderr = run_cli("run", folder, out, "--now", NOW)
        assert code == 0, stderr
        assert read(out / "renamed.tsv") == merged + "2026-01-04\t2\n"


# -------------------------------------------------- empty and multi-row results


def test_empty_result_is_stored_as_one_empty_row_and_counts_as_done(tmp_path):
    config = SQLITE_DB + """\
reports:
  grouped:
    granularity: days
    starts: 2026-01-01
    db: db
  header_only:
    type: script
    granularity: days
    starts: 2026-01-03
"""
    grouped_sql = (
        "SELECT substr(ts, 1, 4) || '-' || substr(ts, 5, 2) || '-' || substr(ts, 7, 2) AS date,\n"
        "       COUNT(*) AS edits, SUM(size) AS bytes\n"
        "FROM edits WHERE ts >= '{from_timestamp}' AND ts < '{to_timestamp}'\n"
        "GROUP BY 1\n")
    folder = make_folder(tmp_path, config, files={"grouped.sql": grouped_sql},
                         scripts={"header_only": "#!/bin/sh\nprintf 'date\\ta\\tb\\n'\n"})
    make_edits_db(folder)
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    expected = {
        "grouped.tsv": tsv(
            "date\tedits\tbytes",
            "2026-01-01\t2\t30",
            "2026-01-02\t1\t5",
            "2026-01-03\t\t",
            "2026-01-04\t3\t11",
        ),
        "header_only.tsv": tsv("date\ta\tb", "2026-01-03\t\t", "2026-01-04\t\t"),
    }
    assert files_under(out) == expected
    mtimes = {name: (out / name).stat().st_mtime_ns for name in expected}

    code, _, stderr = run_cli("run", folder, out, "--now", NOW, "-l", "info")

    assert code == 0
    assert "grouped: 0 computed" in stderr and "header_only: 0 computed" in stderr
    assert files_under(out) == expected
    assert {name: (out / name).stat().st_mtime_ns for name in expected} == mtimes


def test_several_rows_per_date(tmp_path):
    config = SQLITE_DB + """\
reports:
  per_wiki:
    granularity: days
    starts: 2026-01-01
    db: db
"""
    folder = make_folder(tmp_path, config, files={"per_wiki.sql": PER_WIKI_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"
    expected = tsv(
        "date\twiki\tedits",
        "2026-01-01\tenwiki\t1",
        "2026-01-01\tdewiki\t1",
        "2026-01-02\tenwiki\t1",
        "2026-01-03\t\t",
        "2026-01-04\tenwiki\t2",
        "2026-01-04\tdewiki\t1",
    )

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)
    assert code == 0, stderr
    assert read(out / "per_wiki.tsv") == expected

    # A day later: the rows already there come back exactly, grouped by date.
    sql(folder, "INSERT INTO edits VALUES ('20260105020000', 'dewiki', 'bot', 1);")
    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-06T05:00")
    assert code == 0, stderr
    assert read(out / "per_wiki.tsv") == expected + "2026-01-05\tenwiki\t1\n2026-01-05\tdewiki\t1\n"


# ------------------------------------------------------------- explode_by


def test_explode_by_two_placeholders_paths_ordered_by_placeholder_name(tmp_path):
    # `wiki` comes first in the config, but paths order values by placeholder
    # name: by_kind/<kind>/<wiki>.tsv.
    config = SQLITE_DB + """\
reports:
  by_kind:
    granularity: days
    starts: 2026-01-03
    db: db
    explode_by:
      wiki: wikis.txt
      kind: bot, human
"""
    template = (
        "SELECT " + DATE_EXPR + " AS date, '{wiki}' AS wiki, '{kind}' AS kind, COUNT(*) AS edits\n"
        "FROM edits\n"
        "WHERE wiki = '{wiki}' AND kind = '{kind}'\n"
        "  AND ts >= '{from_timestamp}' AND ts < '{to_timestamp}'\n")
    folder = make_folder(tmp_path, config, files={"by_kind.sql": template,
                                                  "wikis.txt": "enwiki\ndewiki\n"})
    make_edits_db(folder)
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert files_under(out) == {
        "by_kind/bot/dewiki.tsv": tsv("date\twiki\tkind\tedits",
                                      "2026-01-03\tdewiki\tbot\t0", "2026-01-04\tdewiki\tbot\t1"),
        "by_kind/bot/enwiki.tsv": tsv("date\twiki\tkind\tedits",
                                      "2026-01-03\tenwiki\tbot\t0", "2026-01-04\tenwiki\tbot\t1"),
        "by_kind/human/dewiki.tsv": tsv("date\twiki\tkind\tedits",
                                        "2026-01-03\tdewiki\thuman\t0", "2026-01-04\tdewiki\thuman\t0"),
        "by_kind/human/enwiki.tsv": tsv("date\twiki\tkind\tedits",
                                        "2026-01-03\tenwiki\thuman\t0", "2026-01-04\tenwiki\thuman\t1"),
    }


SHOW_ARGS = """\
#!/usr/bin/env python3
import os, sys
print("date\\targv\\tcwd")
print("\\t".join([sys.argv[1], " ".join(sys.argv[1:]), os.getcwd()]))
"""


def test_explode_by_script_gets_values_by_placeholder_name_then_its_folder(tmp_path):
    config = """\
reports:
  show_args:
    type: script
    granularity: days
    starts: 2026-01-04
    explode_by:
      wiki: enwiki, dewiki
      kind: bot
  nested:
    type: script
    execute: bin/show_args
    granularity: days
    starts: 2026-01-04
    explode_by:
      wiki: enwiki
"""
    folder = make_folder(tmp_path, config, scripts={"show_args": SHOW_ARGS, "bin/show_args": SHOW_ARGS})
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW, cwd=tmp_path)

    assert code == 0, stderr
    real = os.path.realpath(folder)
    header = "date\targv\tcwd"
    assert files_under(out) == {
        # SCRIPT START END kind wiki FOLDER, run in the query folder.
        "show_args/bot/dewiki.tsv": tsv(header, f"2026-01-04\t2026-01-04 2026-01-05 bot dewiki {real}\t{real}"),
        "show_args/bot/enwiki.tsv": tsv(header, f"2026-01-04\t2026-01-04 2026-01-05 bot enwiki {real}\t{real}"),
        # The last argument is the folder holding the script; cwd stays the query folder.
        "nested/enwiki.tsv": tsv(header, f"2026-01-04\t2026-01-04 2026-01-05 enwiki {real}/bin\t{real}"),
    }


# ------------------------------------------------------- calendar, lag, limits

CALENDAR_SQL = (
    "SELECT " + DATE_EXPR + " AS date, '{from_timestamp}' AS from_ts, '{to_timestamp}' AS to_ts,\n"
    "       COUNT(*) AS edits\n"
    "FROM edits WHERE ts >= '{from_timestamp}' AND ts < '{to_timestamp}'\n")

WEEKS = [
    "2025-11-30\t20251130000000\t20251207000000\t0",
    "2025-12-07\t20251207000000\t20251214000000\t0",
    "2025-12-14\t20251214000000\t20251221000000\t1",
    "2025-12-21\t20251221000000\t20251228000000\t1",
    "2025-12-28\t20251228000000\t20260104000000\t5",
]


def test_now_with_a_utc_offset(tmp_path):
    folder = daily_folder(tmp_path)
    out = tmp_path / "out"

    # 01:00 at UTC+02:00 is 23:00 UTC the day before: 2026-01-04 is not over.
    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-05T01:00+02:00")

    assert code == 0, stderr
    assert files_under(out) == {"daily_edits.tsv": DAILY_EXPECTED.replace("2026-01-04\t3\n", "")}


@pytest.mark.parametrize("now, weeks", [
    ("2026-01-03T23:59", 4),  # Saturday: the week of 2025-12-28 is not over
    ("2026-01-04T00:00", 5),  # Sunday: it is
    (NOW, 5),
])
def test_weekly_report_weeks_start_on_sunday(tmp_path, now, weeks):
    config = SQLITE_DB + """\
reports:
  weekly:
    granularity: weeks
    starts: 2025-12-01
    db: db
    execute: calendar
"""
    folder = make_folder(tmp_path, config, files={"calendar.sql": CALENDAR_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", now)

    assert code == 0, stderr
    assert files_under(out) == {"weekly.tsv": tsv("date\tfrom_ts\tto_ts\tedits", *WEEKS[:weeks])}


def test_monthly_report(tmp_path):
    config = SQLITE_DB + """\
reports:
  monthly:
    granularity: months
    starts: 2025-10-15
    db: db
    execute: calendar
"""
    folder = make_folder(tmp_path, config, files={"calendar.sql": CALENDAR_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert files_under(out) == {"monthly.tsv": tsv(
        "date\tfrom_ts\tto_ts\tedits",
        "2025-10-01\t20251001000000\t20251101000000\t1",
        "2025-11-01\t20251101000000\t20251201000000\t1",
        "2025-12-01\t20251201000000\t20260101000000\t4",
    )}


def test_max_data_points_trims_old_rows_and_computes_only_the_newest(tmp_path):
    config = SQLITE_DB + """\
reports:
  daily_edits:
    granularity: days
    starts: 2025-12-01
    max_data_points: 3
    db: db
"""
    folder = make_folder(tmp_path, config, files={"daily_edits.sql": DAILY_EDITS_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"
    out.mkdir()
    (out / "daily_edits.tsv").write_text(tsv(
        "date\tedits", "2025-12-20\t9", "2025-12-31\t9", "2026-01-01\t9", "2026-01-02\t9"))

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)
    assert code == 0, stderr
    assert read(out / "daily_edits.tsv") == tsv(
        "date\tedits", "2026-01-02\t9", "2026-01-03\t0", "2026-01-04\t3")

    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-06T05:00")
    assert code == 0, stderr
    assert read(out / "daily_edits.tsv") == tsv(
        "date\tedits", "2026-01-03\t0", "2026-01-04\t3", "2026-01-05\t1")


def test_max_data_points_from_empty(tmp_path):
    config = SQLITE_DB + """\
reports:
  daily_edits:
    granularity: days
    starts: 2025-01-01
    max_data_points: 2
    db: db
"""
    folder = make_folder(tmp_path, config, files={"daily_edits.sql": DAILY_EDITS_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"

    summary = run(RunOptions(query_folder=folder, output_folder=out, now=parse_now(NOW)))

    assert summary.exit_code == 0
    assert summary.reports["daily_edits"].computed == 2
    assert files_under(out) == {"daily_edits.tsv": tsv("date\tedits", "2026-01-03\t0", "2026-01-04\t3")}


def test_lag_delays_the_last_interval(tmp_path):
    config = SQLITE_DB + """\
reports:
  lag_6h:
    granularity: days
    starts: 2026-01-03
    lag: 21600
    db: db
    execute: daily_edits
  lag_1h:
    granularity: days
    starts: 2026-01-03
    lag: 3600
    db: db
    execute: daily_edits
"""
    folder = make_folder(tmp_path, config, files={"daily_edits.sql": DAILY_EDITS_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"

    # 05:00: 2026-01-04 ended 5 h ago, so it is due with a 1 h lag, not with 6 h.
    summary = run(RunOptions(query_folder=folder, output_folder=out, now=parse_now(NOW)))

    assert summary.exit_code == 0
    assert {key: outcome.computed for key, outcome in summary.reports.items()} == {
        "lag_6h": 1, "lag_1h": 2}
    assert files_under(out) == {
        "lag_6h.tsv": tsv("date\tedits", "2026-01-03\t0"),
        "lag_1h.tsv": tsv("date\tedits", "2026-01-03\t0", "2026-01-04\t3"),
    }

    summary = run(RunOptions(query_folder=folder, output_folder=out,
                             now=parse_now("2026-01-05T06:00")))
    assert summary.exit_code == 0
    assert files_under(out) == {
        "lag_6h.tsv": tsv("date\tedits", "2026-01-03\t0", "2026-01-04\t3"),
        "lag_1h.tsv": tsv("date\tedits", "2026-01-03\t0", "2026-01-04\t3"),
    }


def test_report_starting_in_the_future_is_skipped_with_a_warning(tmp_path):
    config = DAILY_CONFIG + """\
  future:
    granularity: days
    starts: 2026-02-01
    db: db
    execute: daily_edits
  today:
    granularity: days
    starts: 2026-01-05
    db: db
    execute: daily_edits
"""
    folder = make_folder(tmp_path, config, files={"daily_edits.sql": DAILY_EDITS_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 2, stderr
    assert "future: starts 2026-02-01" in warnings[0] and "skipped" in warnings[0]
    assert "today: starts 2026-01-05" in warnings[1] and "skipped" in warnings[1]
    assert files_under(out) == {"daily_edits.tsv": DAILY_EXPECTED}


def test_percent_signs_in_sql_stay_literal(tmp_path):
    config = SQLITE_DB + """\
reports:
  percent:
    granularity: days
    starts: 2026-01-03
    db: db
"""
    template = ("SELECT strftime('%Y-%m-%d', " + DATE_EXPR + ") AS date,\n"
                "       '50%' AS share, '%%' AS doubled, '%s' AS format\n")
    folder = make_folder(tmp_path, config, files={"percent.sql": template})
    make_edits_db(folder)
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert files_under(out) == {"percent.tsv": tsv(
        "date\tshare\tdoubled\tformat",
        "2026-01-03\t50%\t%%\t%s",
        "2026-01-04\t50%\t%%\t%s",
    )}


# ---------------------------------------------------------------- failures

FLAKY = """\
#!/bin/sh
if [ "$1" = 2026-01-02 ] && [ -e broken ]; then
  echo "cannot reach the API" >&2
  exit 1
fi
printf 'date\\tvalue\\n%s\\tok-%s\\n' "$1" "$1"
"""


def test_failing_script_stores_nothing_for_its_interval_and_is_retried(tmp_path):
    config = DAILY_CONFIG + """\
  flaky:
    type: script
    granularity: days
    starts: 2026-01-01
"""
    folder = make_folder(tmp_path, config, files={"daily_edits.sql": DAILY_EDITS_SQL, "broken": ""},
                         scripts={"flaky": FLAKY})
    make_edits_db(folder)
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 1
    assert_failed(stderr, "flaky 2026-01-02", "script exited with status 1: cannot reach the API")
    assert "Traceback" not in stderr
    assert files_under(out) == {
        "daily_edits.tsv": DAILY_EXPECTED,
        "flaky.tsv": tsv("date\tvalue", "2026-01-01\tok-2026-01-01", "2026-01-03\tok-2026-01-03",
                         "2026-01-04\tok-2026-01-04"),
    }

    (folder / "broken").unlink()
    code, _, stderr = run_cli("run", folder, out, "--now", NOW, "-l", "info")

    assert code == 0, stderr
    assert "flaky: 1 computed, 0 failed" in stderr
    assert files_under(out) == {
        "daily_edits.tsv": DAILY_EXPECTED,
        "flaky.tsv": tsv("date\tvalue", "2026-01-01\tok-2026-01-01", "2026-01-02\tok-2026-01-02",
                         "2026-01-03\tok-2026-01-03", "2026-01-04\tok-2026-01-04"),
    }


def test_failed_interval_is_retried_with_backoff_on_hourly_runs(tmp_path):
    # "a script or query that fails ... stores nothing for that interval; it
    # is retried on the next run", and one that keeps failing backs off
    # (issue 6: the next run, then 1, 2, 4 ... hours later): hourly from
    # cron, failing at 05, 06 and 07 (next try after 09:00), then fixed.
    config = """\
reports:
  flaky:
    type: script
    granularity: days
    starts: 2026-01-04
"""
    folder = make_folder(tmp_path, config, files={"broken": ""}, scripts={"flaky": FLAKY.replace(
        '[ "$1" = 2026-01-02 ] && [ -e broken ]', '[ -e broken ]')})
    out = tmp_path / "out"
    logs = []
    for hour in ("05", "06", "07"):
        code, _, stderr = run_cli("run", folder, out, "--now", f"2026-01-05T{hour}:00")
        logs.append(stderr)
        assert code == 1
        assert files_under(out) == {}
    assert_failed(logs[0], "flaky 2026-01-04", "script exited with status 1: cannot reach the API")

    (folder / "broken").unlink()
    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-05T08:00", "-l", "info")
    assert code == 1 and files_under(out) == {}, stderr  # still waiting for its retry time
    assert "1 failed intervals wait for their retry time" in stderr

    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-05T09:00")

    assert files_under(out) == {"flaky.tsv": tsv("date\tvalue", "2026-01-04\tok-2026-01-04")}, stderr
    assert code == 0, stderr


def test_failing_early_intervals_never_stop_the_later_ones(tmp_path):
    # A source without data before 2026-01-10 fails every earlier interval
    # with the same message, on every run; the later intervals are
    # independent of those and must be stored, on the first run and after.
    config = """\
reports:
  late_data:
    type: script
    granularity: days
    starts: 2026-01-01
"""
    script = """\
#!/bin/sh
case "$1" in
  2026-01-0*) echo "the source has no data before 2026-01-10" >&2; exit 1;;
esac
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""
    folder = make_folder(tmp_path, config, scripts={"late_data": script})
    out = tmp_path / "out"
    expected = {"late_data.tsv": tsv("date\tvalue", "2026-01-10\t1", "2026-01-11\t1", "2026-01-12\t1")}

    for _ in range(2):
        code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-13T05:00")

        assert files_under(out) == expected, stderr
        assert code == 1
        assert_failed(stderr, "late_data 2026-01-09", "script exited with status 1")


def test_script_printing_a_bad_date_fails_that_interval_only(tmp_path):
    config = """\
reports:
  dates:
    type: script
    granularity: days
    starts: 2026-01-01
"""
    script = """\
#!/bin/sh
printf 'date\\tvalue\\n'
if [ "$1" = 2026-01-02 ]; then printf '01/02/2026\\t1\\n'; else printf '%s\\t1\\n' "$1"; fi
"""
    folder = make_folder(tmp_path, config, scripts={"dates": script})
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 1
    assert_failed(stderr, "dates 2026-01-02", "first column must be a date YYYY-MM-DD, got '01/02/2026'")
    assert files_under(out) == {"dates.tsv": tsv(
        "date\tvalue", "2026-01-01\t1", "2026-01-03\t1", "2026-01-04\t1")}


def test_script_exceeding_its_timeout_is_killed_with_its_children(tmp_path):
    config = """\
reports:
  hang:
    type: script
    granularity: days
    starts: 2026-01-01
    timeout: 1
"""
    script = """\
#!/bin/sh
if [ "$1" = 2026-01-03 ]; then
  sleep 30 &
  echo $! > child.pid
  sleep 30
fi
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""
    folder = make_folder(tmp_path, config, scripts={"hang": script})
    out = tmp_path / "out"

    started = time.monotonic()
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)
    elapsed = time.monotonic() - started

    assert code == 1
    assert elapsed < 10, elapsed
    assert_failed(stderr, "hang 2026-01-03", "script timed out after 1 s and was killed")
    assert files_under(out) == {"hang.tsv": tsv(
        "date\tvalue", "2026-01-01\t1", "2026-01-02\t1", "2026-01-04\t1")}
    child = int((folder / "child.pid").read_text())
    assert wait_for(lambda: not process_alive(child), timeout=5), f"child {child} still runs"


def test_sql_query_exceeding_its_timeout_is_stopped(tmp_path):
    # A query that would take hours in SQLite: the run ends only because the
    # timeout stops it (a hang fails through run_cli's own timeout).
    config = SQLITE_DB + """\
reports:
  slow_query:
    granularity: days
    starts: 2026-01-04
    db: db
    timeout: 1
  daily_edits:
    granularity: days
    starts: 2026-01-04
    db: db
"""
    template = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000000)\n"
                "SELECT " + DATE_EXPR + " AS date, COUNT(*) AS n FROM c\n")
    folder = make_folder(tmp_path, config, files={"slow_query.sql": template,
                                                  "daily_edits.sql": DAILY_EDITS_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert (code, files_under(out)) == (1, {"daily_edits.tsv": tsv("date\tedits", "2026-01-04\t3")}), stderr
    assert_failed(stderr, "slow_query 2026-01-04", "database 'db': query exceeded its timeout of 1 s")


def test_sql_error_is_one_clear_line_without_traceback(tmp_path):
    config = SQLITE_DB + """\
reports:
  broken:
    granularity: days
    starts: 2026-01-04
    db: db
  daily_edits:
    granularity: days
    starts: 2026-01-04
    db: db
"""
    folder = make_folder(tmp_path, config, files={
        "broken.sql": "SELECT '2026-01-04' AS date, COUNT(*) AS n FROM nope\n",
        "daily_edits.sql": DAILY_EDITS_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"

    code, stdout, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 1
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert_failed(lines[0], "broken 2026-01-04", "database 'db': OperationalError: no such table: nope")
    assert lines[0].endswith("no such table: nope")
    assert files_under(out) == {"daily_edits.tsv": tsv("date\tedits", "2026-01-04\t3")}


@pytest.mark.parametrize("char, sqlite_char", [("tab", "char(9)"), ("line break", "char(10)")])
def test_value_holding_a_tab_or_line_break_fails_that_interval(tmp_path, char, sqlite_char):
    config = SQLITE_DB + """\
reports:
  labels:
    granularity: days
    starts: 2026-01-01
    db: db
"""
    template = ("SELECT " + DATE_EXPR + " AS date,\n"
                "  CASE WHEN '{from_timestamp}' = '20260102000000' THEN 'a' || " + sqlite_char +
                " || 'b' ELSE 'plain' END AS label\n")
    folder = make_folder(tmp_path, config, files={"labels.sql": template})
    make_edits_db(folder)
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 1
    assert_failed(stderr, "labels 2026-01-02", "row 1 column 'label' holds a tab or line break")
    assert files_under(out) == {"labels.tsv": tsv(
        "date\tlabel", "2026-01-01\tplain", "2026-01-03\tplain", "2026-01-04\tplain")}


def test_script_row_with_a_tab_too_many_fails_that_interval(tmp_path):
    config = """\
reports:
  labels:
    type: script
    granularity: days
    starts: 2026-01-01
"""
    script = """\
#!/bin/sh
printf 'date\\tlabel\\n'
if [ "$1" = 2026-01-02 ]; then printf '%s\\ta\\tb\\n' "$1"; else printf '%s\\tplain\\n' "$1"; fi
"""
    folder = make_folder(tmp_path, config, scripts={"labels": script})
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 1
    assert_failed(stderr, "labels 2026-01-02", "row 1 has 3 fields but the header has 2")
    assert files_under(out) == {"labels.tsv": tsv(
        "date\tlabel", "2026-01-01\tplain", "2026-01-03\tplain", "2026-01-04\tplain")}


@pytest.mark.parametrize("corrupt, line", [
    ("date\tedits\n2026-01-01\t2\n2026-01-02\t1\textra\n", 3),
    ("date\tedits\n01/01/2026\t2\n", 2),
])
def test_corrupt_output_file_is_never_overwritten(tmp_path, corrupt, line):
    config = DAILY_CONFIG + """\
  per_wiki:
    granularity: days
    starts: 2026-01-04
    db: db
"""
    folder = make_folder(tmp_path, config, files={"daily_edits.sql": DAILY_EDITS_SQL,
                                                  "per_wiki.sql": PER_WIKI_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"
    out.mkdir()
    (out / "daily_edits.tsv").write_text(corrupt)

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 1
    assert f"{out / 'daily_edits.tsv'}:{line}:" in stderr
    assert "Traceback" not in stderr
    assert files_under(out) == {
        "daily_edits.tsv": corrupt,
        "per_wiki.tsv": tsv("date\twiki\tedits", "2026-01-04\tenwiki\t2", "2026-01-04\tdewiki\t1"),
    }


# ------------------------------------------------------------ command line


def test_original_command_line_without_the_run_word(tmp_path):
    folder = daily_folder(tmp_path)
    out = tmp_path / "out"

    code, stdout, stderr = run_cli("-l", "info", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert "daily_edits: 4 computed, 0 failed" in stderr
    assert files_under(out) == {"daily_edits.tsv": DAILY_EXPECTED}

    # update_reports.py [--config-path P] [--no-graphite] [-l LEVEL] QUERY OUTPUT,
    # with the config outside the folder.
    config = tmp_path / "elsewhere.yaml"
    shutil.move(folder / "config.yaml", config)
    code, _, stderr = run_cli("--config-path", config, "--no-graphite", "-l", "warning",
                              folder, tmp_path / "out2", "--now", NOW)
    assert code == 0, stderr
    assert files_under(tmp_path / "out2") == {"daily_edits.tsv": DAILY_EXPECTED}


@pytest.mark.parametrize("args, message", [
    (["run", "{missing}", "{out}"], "query folder does not exist"),
    (["run", "{folder}", "{out}", "-l", "loud"], "'loud' is not one of"),
    (["run", "{folder}", "{out}", "--now", "yesterday"], "'yesterday' is not an ISO date-time"),
])
def test_usage_errors_exit_2_without_touching_anything(tmp_path, args, message):
    folder = daily_folder(tmp_path)
    paths = {"folder": folder, "out": tmp_path / "out", "missing": tmp_path / "missing"}

    code, stdout, stderr = run_cli(*[arg.format(**paths) for arg in args])

    assert code == 2
    assert message in stderr and "Traceback" not in stderr
    assert files_under(tmp_path / "out") == {}


def test_installed_reportupdater_command(tmp_path):
    command = Path(sys.executable).parent / "reportupdater"
    if not command.exists():
        pytest.skip(f"{command} is not installed")
    import subprocess
    folder = daily_folder(tmp_path)
    process = subprocess.run([str(command), "-l", "info", str(folder), str(tmp_path / "out"),
                              "--now", NOW], capture_output=True, text=True, timeout=60)
    assert process.returncode == 0, process.stderr
    assert files_under(tmp_path / "out") == {"daily_edits.tsv": DAILY_EXPECTED}


# ------------------------------------------------------------------ group


def _group_config(group: str) -> str:
    return DAILY_CONFIG + f"    group: {group}\n"


def test_group_of_the_output_file(tmp_path):
    group = grp.getgrgid(os.getgid()).gr_name
    folder = make_folder(tmp_path, _group_config(group), files={"daily_edits.sql": DAILY_EDITS_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert files_under(out) == {"daily_edits.tsv": DAILY_EXPECTED}
    assert (out / "daily_edits.tsv").stat().st_gid == os.getgid()


def test_group_other_than_the_primary_one(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root may give a file any group")
    other = next(entry for entry in grp.getgrall() if entry.gr_gid != os.getgid())
    folder = make_folder(tmp_path, _group_config(other.gr_name), files={"daily_edits.sql": DAILY_EDITS_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert files_under(out) == {"daily_edits.tsv": DAILY_EXPECTED}
    assert (out / "daily_edits.tsv").stat().st_gid == other.gr_gid


def test_unknown_group_fails_the_report_and_writes_nothing(tmp_path):
    folder = make_folder(tmp_path, _group_config("no-such-group-xyz"),
                         files={"daily_edits.sql": DAILY_EDITS_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 1
    assert "daily_edits.tsv: cannot write" in stderr and "no-such-group-xyz" in stderr
    assert "Traceback" not in stderr
    assert files_under(out) == {}
