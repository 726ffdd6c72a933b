"""Hive reports against a live Spark Thrift Server (fixtures in conftest.py)."""

from __future__ import annotations

import time
from functools import partial

import pytest
import testkit
from testkit import run_cli_process

from reportupdater.engines.hive import split_statements

# Against a live server, as cron runs it: a subprocess; queries may take minutes.
run_cli = partial(run_cli_process, timeout=300)


make_folder = partial(testkit.make_folder, name="queries", dedent_text=False)


def hive_config(server, report: str = "", extra_databases: str = "", defaults: str = "") -> str:
    return f"""
databases:
  hive:
    url: {server.url}
    configuration:
      spark.sql.shuffle.partitions: 2
{extra_databases}
defaults:
{defaults or "  lag: 0"}
reports:
  toggles:
    type: hive
    granularity: days
    starts: 2026-01-01
{report}
"""


TOGGLES_HQL = """
-- Daily CodeMirror toggles per wiki, bots excluded.
SET spark.sql.shuffle.partitions=2;
SELECT
    '{from_date}' AS date,
    e.wiki,
    SUM(IF(e.event.toggled, 1, 0)) AS enabled,
    SUM(IF(e.event.toggled, 0, 1)) AS disabled,
    MAX(e.useragent.is_bot) AS any_bot,
    'a;b' AS literal_with_semicolon
FROM event.codemirrorusage e
WHERE year = {year} AND month = {month} AND day = {day}
  AND NOT e.useragent.is_bot
GROUP BY e.wiki
ORDER BY e.wiki;
"""

EXPECTED = (
    "date\twiki\tenabled\tdisabled\tany_bot\tliteral_with_semicolon\n"
    "2026-01-01\tdewiki\t1\t0\tfalse\ta;b\n"
    "2026-01-01\tenwiki\t1\t1\tfalse\ta;b\n"
    "2026-01-02\tdewiki\t1\t0\tfalse\ta;b\n"
    "2026-01-03\t\t\t\t\t\n"
    "2026-01-04\tenwiki\t1\t0\tfalse\ta;b\n"
)


def test_daily_hive_report_with_multi_statement_template(event_tables, tmp_path):
    folder = make_folder(tmp_path, hive_config(event_tables), {"toggles.hql": TOGGLES_HQL})
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-05T03:00")
    assert done.returncode == 0, done.stderr
    # Several rows per date (one per wiki), booleans as Hive prints them, an
    # empty day stored as one empty row.
    assert (out / "toggles.tsv").read_text() == EXPECTED
    again = run_cli("run", str(folder), str(out), "--now", "2026-01-05T03:00", "-l", "info")
    assert again.returncode == 0 and ": computed" not in again.stderr


def test_db_of_defaults_naming_a_mysql_database_is_ignored(event_tables, tmp_path):
    # Real folders set `db:` in defaults for their sql reports; a hive report
    # must use the folder's hive database, never the MySQL one.
    mysql = """  analytics:
    host: db.example.org
    port: 3306
    creds_file: /nonexistent/my.cnf
    db: log
"""
    config = hive_config(event_tables, extra_databases=mysql, defaults="  db: analytics")
    folder = make_folder(tmp_path, config, {"toggles.hql": TOGGLES_HQL})
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-05T03:00")
    assert done.returncode == 0, done.stderr
    assert (out / "toggles.tsv").read_text() == EXPECTED


def test_site_default_hive_url_from_the_environment(event_tables, tmp_path):
    config = """
reports:
  toggles:
    type: hive
    granularity: days
    starts: 2026-01-01
"""
    folder = make_folder(tmp_path, config, {"toggles.hql": TOGGLES_HQL})
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-05T03:00",
                   env={"REPORTUPDATER_HIVE_URL": event_tables.url})
    assert done.returncode == 0, done.stderr
    assert (out / "toggles.tsv").read_text() == EXPECTED


def test_query_error_is_clear_and_the_interval_is_retried(event_tables, tmp_path):
    broken = TOGGLES_HQL.replace("FROM event.codemirrorusage e", "FROM event.no_such_table e")
    folder = make_folder(tmp_path, hive_config(event_tables), {"toggles.hql": broken})
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-02T03:00")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "toggles 2026-01-01: failed: Hive:" in errors[0]
    assert "no_such_table" in errors[0]
    assert "Traceback" not in done.stderr
    assert not (out / "toggles.tsv").exists()
    (folder / "toggles.hql").write_text(TOGGLES_HQL)
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-02T03:00")
    assert done.returncode == 0, done.stderr
    assert (out / "toggles.tsv").read_text() == EXPECTED.split("2026-01-02")[0]


def test_timeout_cancels_the_query(event_tables, tmp_path):
    slow = "SELECT '{from_date}' AS date, SUM(hash(id)) AS n FROM range(0, 50000000000, 1, 2)\n"
    folder = make_folder(tmp_path, hive_config(event_tables, report="    timeout: 3"),
                         {"toggles.hql": slow})
    out = tmp_path / "out"
    started = time.monotonic()
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-02T03:00")
    assert time.monotonic() - started < 30
    assert done.returncode == 1
    assert "exceeded its timeout of 3 s and was cancelled on the server" in done.stderr
    assert not (out / "toggles.tsv").exists()


def test_hive_cli_through_beeline(event_tables, tmp_path):
    server = event_tables
    config = f"""
databases:
  cli:
    engine: hive-cli
    command: "{server.beeline} -u jdbc:hive2://{server.host}:{server.port}/default -n analyst --silent=true --outputformat=tsv2 -e"
reports:
  toggles:
    type: hive
    db: cli
    granularity: days
    starts: 2026-01-01
    timeout: 120
"""
    folder = make_folder(tmp_path, config, {"toggles.hql": TOGGLES_HQL})
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-05T03:00",
                   env={"SPARK_HOME": str(server.spark_home)})
    assert done.returncode == 0, done.stderr
    assert (out / "toggles.tsv").read_text() == EXPECTED


@pytest.mark.parametrize("text, expected", [
    ("SELECT 1", ["SELECT 1"]),
    ("SET a=1;\nSELECT 1;\n", ["SET a=1", "SELECT 1"]),
    ("SELECT 'a;b' AS x; -- trailing; comment\n", ["SELECT 'a;b' AS x"]),
    ("-- only; a comment\nSELECT \"x;\" , `c;d` FROM t", ["SELECT \"x;\" , `c;d` FROM t"]),
    ("SELECT 'it\\'s;' AS x;;", ["SELECT 'it\\'s;' AS x"]),
    ("/* a; b */ SELECT 1", ["SELECT 1"]),
])
def test_split_statements(text, expected):
    assert split_statements(text) == expected


COUNTED = "SELECT '{from_date}' AS date, COUNT(*) AS n FROM counted"


def test_a_template_that_changes_its_session_does_not_change_the_next_reports(thrift_server, tmp_path):
    # Sessions are held for the run: a USE (or SET) of one report's template
    # must not carry into another's, which would count another database's
    # table of the same name without an error. (`hive -e` gave each query a
    # session of its own.) A template whose only statement is `USE other`
    # fails (no result set) and its session is ended too; the Spark Thrift
    # Server does not keep such a USE, so that case cannot be shown here.
    thrift_server.execute(
        "CREATE DATABASE IF NOT EXISTS other",
        "DROP TABLE IF EXISTS default.counted", "DROP TABLE IF EXISTS other.counted",
        "CREATE TABLE default.counted (n INT) USING parquet",
        "CREATE TABLE other.counted (n INT) USING parquet",
        "INSERT INTO default.counted VALUES (1), (2), (3)",
        "INSERT INTO other.counted VALUES (1), (2), (3), (4), (5), (6), (7)")
    config = f"""
databases:
  hive:
    url: {thrift_server.url}
reports:
  a_switches:
    type: hive
    db: hive
    granularity: days
    starts: 2026-01-04
    lag: 0
  b_counts:
    type: hive
    db: hive
    granularity: days
    starts: 2026-01-04
    lag: 0
"""
    folder = make_folder(tmp_path, config, {"a_switches.hql": "USE other; " + COUNTED,
                                            "b_counts.hql": COUNTED})
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-05T03:00", "-j", "1")
    assert done.returncode == 0, done.stderr
    assert (out / "a_switches.tsv").read_text() == "date\tn\n2026-01-04\t7\n"
    assert (out / "b_counts.tsv").read_text() == "date\tn\n2026-01-04\t3\n"
