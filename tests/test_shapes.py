"""Hourly, quarterly and yearly reports, site time zones, pivoted outputs; and
the demo's outputs byte-identical to those of the runner before these shapes."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import date, datetime, UTC
from functools import partial
from pathlib import Path

import testkit
from reportupdater import config, intervals, publish
from reportupdater.config import ReportConfig, ReportGraphite
from reportupdater.datatypes import Granularity

ROOT = Path(__file__).resolve().parents[1]
UTC = UTC


run_cli = partial(testkit.run_cli, timeout=120)


def folder_with(tmp_path: Path, config_text: str, files: dict[str, str] | None = None,
                scripts: dict[str, str] | None = None) -> Path:
    folder = tmp_path / "queries"
    folder.mkdir()
    (folder / "config.yaml").write_text(config_text)
    sqlite3.connect(folder / "empty.db").close()
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    for name, text in (scripts or {}).items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def report(granularity: str, starts: date, **extra) -> ReportConfig:
    return ReportConfig(key="r", type="script", granularity=Granularity(granularity), starts=starts, **extra)


def labels(found) -> list[str]:
    return [interval.label for interval in found]


# ---------------------------------------------------------------- time zones

ZONE_SQL = "SELECT '{from_date}' AS date, '{from_timestamp}' AS from_utc, '{to_timestamp}' AS to_utc\n"


def test_dst_days_in_paris_are_single_local_days(tmp_path):
    folder = folder_with(tmp_path, """
databases:
  db: {url: "sqlite:///empty.db"}
reports:
  spring:
    db: db
    execute: zone
    granularity: days
    starts: 2026-03-28
    timezone: Europe/Paris
  autumn:
    db: db
    execute: zone
    granularity: days
    starts: 2026-10-24
    max_data_points: 3
    timezone: Europe/Paris
""", {"zone.sql": ZONE_SQL})
    out = tmp_path / "out"
    # 2026-03-31 00:30 in Paris is 2026-03-30T22:30Z: the 30th is done there.
    done = run_cli("run", folder, out, "--now", "2026-03-30T22:30", "-r", "spring")
    assert done.returncode == 0, done.stderr
    assert (out / "spring.tsv").read_text() == (
        "date\tfrom_utc\tto_utc\n"
        "2026-03-28\t20260327230000\t20260328230000\n"
        "2026-03-29\t20260328230000\t20260329220000\n"   # 23 hours: clocks go forward
        "2026-03-30\t20260329220000\t20260330220000\n")
    done = run_cli("run", folder, out, "--now", "2026-10-27T00:00", "-r", "autumn")
    assert done.returncode == 0, done.stderr
    assert (out / "autumn.tsv").read_text() == (
        "date\tfrom_utc\tto_utc\n"
        "2026-10-24\t20261023220000\t20261024220000\n"
        "2026-10-25\t20261024220000\t20261025230000\n"   # 25 hours: clocks go back
        "2026-10-26\t20261025230000\t20261026230000\n")


def test_local_weeks_and_months_and_their_graphite_timestamps():
    paris = report("months", date(2026, 1, 1), timezone="Europe/Paris")
    found = intervals.due_intervals(paris, datetime(2026, 4, 1, 0, 30, tzinfo=UTC))
    # 00:30 UTC is 02:30 in Paris: March is over there.
    assert labels(found) == ["2026-01-01", "2026-02-01", "2026-03-01"]
    assert found[2].end.astimezone(UTC) == datetime(2026, 3, 31, 22, tzinfo=UTC)
    weekly = report("weeks", date(2026, 3, 22), timezone="America/New_York")
    assert labels(intervals.due_intervals(weekly, datetime(2026, 4, 6, 3, 0, tzinfo=UTC))) == [
        "2026-03-22", "2026-03-29"]  # Monday 5 April 23:00 in New York: that week is not over
    graphite = ReportConfig(key="r", type="script", granularity=Granularity.DAYS,
                            starts=date(2026, 1, 1), timezone="Europe/Paris",
                            graphite=ReportGraphite(path="r.{_metric}", metrics={"n": "n"}))
    points = publish.points_for_rows(graphite, (), ["date", "n"], [["2026-07-01", "5"]], {})
    # The interval's start instant: midnight in Paris, 22:00 UTC the day before.
    assert points == [publish.Point("r.n", "5", int(datetime(2026, 6, 30, 22, tzinfo=UTC).timestamp()))]


def test_unknown_time_zone_is_a_config_error(tmp_path):
    folder = folder_with(tmp_path, """
reports:
  r: {type: script, granularity: days, starts: 2026-01-01, timezone: Europe/Parris}
""", scripts={"r": "#!/bin/sh\n"})
    loaded = config.load(folder)
    assert [str(e).split(": ", 1)[1] for e in loaded.errors] == [
        "report 'r': key 'timezone': 'Europe/Parris' is not an IANA time zone (e.g. Europe/Paris)"]


# --------------------------------------------------------------------- hours

HOURLY_SCRIPT = """#!/bin/sh
printf 'date\\tstart\\tend\\n%s\\t%s\\t%s\\n' "$1" "$1" "$2"
"""


def test_hourly_backfill_across_midnight_and_month_end(tmp_path):
    folder = folder_with(tmp_path, """
databases:
  db: {url: "sqlite:///empty.db"}
reports:
  hourly_sql:
    db: db
    execute: hourly
    granularity: hours
    starts: 2026-01-31
  hourly_script:
    type: script
    execute: hourly_args
    granularity: hours
    starts: 2026-01-31
    lag: 3600
""", {"hourly.sql": "SELECT '{from_date} {hour}:00:00' AS date, '{hour}' AS hour, "
                    "'{from_timestamp}' AS f, '{to_timestamp}' AS t\n"},
        {"hourly_args": HOURLY_SCRIPT})
    out = tmp_path / "out"
    done = run_cli("run", folder, out, "--now", "2026-02-01T02:30")
    assert done.returncode == 0, done.stderr
    rows = (out / "hourly_sql.tsv").read_text().splitlines()
    assert rows[0] == "date\thour\tf\tt"
    assert len(rows) == 1 + 26  # 24 hours of the 31st, then 00:00 and 01:00
    assert rows[1] == "2026-01-31T00:00:00\t00\t20260131000000\t20260131010000"
    assert rows[24] == "2026-01-31T23:00:00\t23\t20260131230000\t20260201000000"
    assert rows[26] == "2026-02-01T01:00:00\t01\t20260201010000\t20260201020000"
    # Scripts get full timestamps; the lag of an hour holds back 01:00.
    script_rows = (out / "hourly_script.tsv").read_text().splitlines()
    assert len(script_rows) == 1 + 25
    assert script_rows[-1] == "2026-02-01T00:00:00\t2026-02-01T00:00:00\t2026-02-01T01:00:00"
    again = run_cli("run", folder, out, "--now", "2026-02-01T02:59", "-l", "info")
    assert again.returncode == 0 and ": computed" not in again.stderr


def test_hourly_max_data_points_counts_hours():
    hourly = report("hours", date(2026, 1, 1), max_data_points=3)
    assert labels(intervals.due_intervals(hourly, datetime(2026, 1, 2, 5, 10, tzinfo=UTC))) == [
        "2026-01-02T02:00:00", "2026-01-02T03:00:00", "2026-01-02T04:00:00"]


def test_hourly_reports_run_in_utc(tmp_path):
    folder = folder_with(tmp_path, """
reports:
  r: {type: script, granularity: hours, starts: 2026-01-01, timezone: Europe/Paris}
""", scripts={"r": "#!/bin/sh\n"})
    assert "hourly reports run in UTC" in str(config.load(folder).errors[0])


# ------------------------------------------------------- quarters and years

def test_quarters_and_years_follow_the_month_rules():
    quarterly = report("quarters", date(2025, 2, 15), lag=86400)
    assert labels(intervals.due_intervals(quarterly, datetime(2026, 7, 1, 12, tzinfo=UTC))) == [
        "2025-01-01", "2025-04-01", "2025-07-01", "2025-10-01", "2026-01-01"]  # Q2 2026 waits for its lag
    yearly = report("years", date(2023, 6, 1), max_data_points=2)
    found = intervals.due_intervals(yearly, datetime(2026, 1, 1, tzinfo=UTC))
    assert labels(found) == ["2024-01-01", "2025-01-01"]
    assert found[-1].end == datetime(2026, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------- pivot

PIVOT_SCRIPT = """#!/bin/sh
# Long results: one row per browser family; which families appear changes.
printf 'date\\tbrowser_family\\tview_count\\n'
case "$1" in
  2026-01-01) printf '%s\\tFirefox\\t10\\n%s\\tChrome\\t20\\n' "$1" "$1" ;;
  2026-01-02) printf '%s\\tChrome\\t21\\n%s\\tSafari\\t5\\n' "$1" "$1" ;;
  2026-01-03) ;;
  *) printf '%s\\tEdge\\t1.50\\n' "$1" ;;
esac
"""


def test_pivot_over_several_runs_as_categories_appear_and_disappear(tmp_path):
    folder = folder_with(tmp_path, """
reports:
  browsers:
    type: script
    granularity: days
    starts: 2026-01-01
    pivot: {index: date, columns: browser_family, values: view_count, fill: 0}
""", scripts={"browsers": PIVOT_SCRIPT})
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", "2026-01-02T01:00").returncode == 0
    assert (out / "browsers.tsv").read_text() == "date\tChrome\tFirefox\n2026-01-01\t20\t10\n"
    done = run_cli("run", folder, out, "--now", "2026-01-05T01:00")
    assert done.returncode == 0, done.stderr
    # New categories become new columns at the end, in the order they are
    # met (newest intervals first); old rows and rows of dates without a
    # category get the fill value.
    assert (out / "browsers.tsv").read_text() == (
        "date\tChrome\tFirefox\tEdge\tSafari\n"
        "2026-01-01\t20\t10\t0\t0\n"
        "2026-01-02\t21\t0\t0\t5\n"
        "2026-01-03\t0\t0\t0\t0\n"
        "2026-01-04\t0\t0\t1.50\t0\n")
    smoke = run_cli("smoke", folder, "browsers", "2026-01-02")
    assert smoke.stdout == "date\tChrome\tSafari\n2026-01-02\t21\t5\n"


def test_pivot_with_two_rows_for_one_category_fails_that_interval(tmp_path):
    script = "#!/bin/sh\nprintf 'date\\tb\\tv\\n%s\\tx\\t1\\n%s\\tx\\t2\\n' \"$1\" \"$1\"\n"
    folder = folder_with(tmp_path, """
reports:
  r: {type: script, granularity: days, starts: 2026-01-01, pivot: {index: date, columns: b, values: v}}
""", scripts={"r": script})
    done = run_cli("run", folder, tmp_path / "out", "--now", "2026-01-02T00:00")
    assert done.returncode == 1
    assert "pivot: several rows for date '2026-01-01' and b 'x'" in done.stderr


# ------------------------------------------------------------ old folders

def test_demo_outputs_are_byte_identical_to_the_runner_before_these_shapes(tmp_path):
    # tests/golden/demo was written by the runner before hours, quarters,
    # years, time zones and pivot existed (commit 559dfef), --now 2026-11-01T05:00.
    demo = tmp_path / "demo"
    shutil.copytree(ROOT / "queries" / "demo", demo,
                    ignore=shutil.ignore_patterns("demo.db", ".reportupdater.lock", ".reruns"))
    out = tmp_path / "out"
    done = run_cli("run", demo, out, "--now", "2026-11-01T05:00")
    assert done.returncode == 0, done.stderr
    golden = ROOT / "tests" / "golden" / "demo"
    expected = {p.relative_to(golden): p.read_bytes() for p in golden.rglob("*.tsv")}
    produced = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.tsv")}
    assert produced == expected
    # The demo also publishes every row to out/metrics.db (its `tables:`).
    import sqlite3
    with sqlite3.connect(out / "metrics.db") as connection:
        for name, data in expected.items():
            table = name.parts[0].removesuffix(".tsv")
            lines = data.decode().splitlines()[1:]
            where = f" WHERE wiki = '{name.stem}'" if len(name.parts) == 2 else ""
            count = connection.execute(f'SELECT count(*) FROM "{table}"{where}').fetchone()[0]
            assert count == len(lines), name
