"""The sql engine against a live MariaDB server (fixture in conftest.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import testkit
from live_servers import USER
from testkit import run_cli_process

NOW = "2026-01-11T05:00"


# Against a live server, as cron runs it: a subprocess; queries may take minutes.
run_cli = partial(run_cli_process, timeout=300)


make_folder = partial(testkit.make_folder, name="queries", dedent_text=False)


@pytest.fixture
def events_db(mariadb):
    """A `log` database with a small events table, fresh for each test."""
    mariadb.execute(
        "DROP DATABASE IF EXISTS log", "CREATE DATABASE log",
        "CREATE TABLE log.events (ts VARBINARY(14), wiki VARBINARY(64), amount DECIMAL(20,6), "
        "label VARBINARY(255), day DATE, note TEXT)",
        "INSERT INTO log.events VALUES "
        "('20260101100000', 'enwiki', 12345678901234.123456, 'Zürich ☃', '2026-01-01', NULL),"
        "('20260101110000', 'enwiki', 0.000001, 'plain', '2026-01-01', 'x'),"
        "('20260102100000', 'dewiki', 1.5, 'Ä', '2026-01-02', '')")
    return mariadb


def classic_config(mariadb, creds: Path, extra_report: str = "", extra_db: str = "") -> str:
    return f"""
databases:
  analytics:
    host: 127.0.0.1
    port: {mariadb.port}
    creds_file: {creds}
    db: log
{extra_db}
defaults:
  db: analytics
reports:
  events:
    granularity: days
    starts: 2026-01-01
{extra_report}
"""


EVENTS_SQL = """
SELECT DATE(STR_TO_DATE(LEFT(ts, 8), '%Y%m%d')) AS date, wiki, amount, label, day, note
FROM events
WHERE ts >= '{from_timestamp}' AND ts < '{to_timestamp}'
ORDER BY ts
"""


def test_classic_config_types_and_percent_signs(events_db, tmp_path):
    creds = events_db.creds_file(tmp_path)
    folder = make_folder(tmp_path, classic_config(events_db, creds), {"events.sql": EVENTS_SQL})
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-04T00:00")
    assert done.returncode == 0, done.stderr
    # DECIMAL exact, DATE as YYYY-MM-DD, VARBINARY decoded as UTF-8, NULL empty.
    assert (out / "events.tsv").read_text(encoding="utf-8") == (
        "date\twiki\tamount\tlabel\tday\tnote\n"
        "2026-01-01\tenwiki\t12345678901234.123456\tZürich ☃\t2026-01-01\t\n"
        "2026-01-01\tenwiki\t0.000001\tplain\t2026-01-01\tx\n"
        "2026-01-02\tdewiki\t1.500000\tÄ\t2026-01-02\t\n"
        "2026-01-03\t\t\t\t\t\n")
    assert events_db.password not in done.stderr


def test_wrong_password_is_a_clear_error_without_the_password(events_db, tmp_path):
    wrong = "Wr0ng-Secret-xyz"
    creds = events_db.creds_file(tmp_path, password=wrong)
    folder = make_folder(tmp_path, classic_config(events_db, creds), {"events.sql": EVENTS_SQL})
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-03T00:00", "-l", "debug")
    assert done.returncode == 1
    assert "Access denied for user 'analyst'" in done.stderr
    assert wrong not in done.stderr and wrong not in done.stdout
    assert "Traceback" not in done.stderr
    assert not (out / "events.tsv").exists()


def test_query_over_its_timeout_fails_that_interval_and_is_retried(events_db, tmp_path):
    creds = events_db.creds_file(tmp_path)
    slow = "SELECT '{from_date}' AS date, SLEEP(IF('{from_date}' = '2026-01-02', 5, 0)) AS slept\n"
    folder = make_folder(tmp_path, classic_config(events_db, creds, "    timeout: 1"),
                         {"events.sql": slow})
    out = tmp_path / "out"
    started = time.monotonic()
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-04T00:00")
    assert time.monotonic() - started < 4.5  # stopped at ~1 s, not after 5
    assert done.returncode == 1
    assert "exceeded its timeout of 1 s" in done.stderr
    assert (out / "events.tsv").read_text() == "date\tslept\n2026-01-01\t0\n2026-01-03\t0\n"
    # Next run, with a longer timeout, fills the failed day.
    (folder / "config.yaml").write_text(classic_config(events_db, creds, "    timeout: 30"))
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-04T00:00")
    assert done.returncode == 0, done.stderr
    assert (out / "events.tsv").read_text() == "date\tslept\n2026-01-01\t0\n2026-01-02\t0\n2026-01-03\t0\n"


def test_a_year_of_daily_intervals(events_db, tmp_path):
    events_db.execute(
        "CREATE TABLE log.daily (day DATE, n INT)",
        "INSERT INTO log.daily SELECT DATE('2025-01-01') + INTERVAL seq DAY, seq % 7 "
        "FROM log.seq_0_to_399",
    )
    creds = events_db.creds_file(tmp_path)
    config = classic_config(events_db, creds).replace("starts: 2026-01-01", "starts: 2025-01-01")
    sql = "SELECT day AS date, n FROM daily WHERE day = DATE('{from_date}')\n"
    folder = make_folder(tmp_path, config, {"events.sql": sql})
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-01T00:00")
    assert done.returncode == 0, done.stderr
    lines = (out / "events.tsv").read_text().splitlines()
    assert len(lines) == 1 + 365
    assert lines[1] == "2025-01-01\t0" and lines[-1] == "2025-12-31\t" + str(364 % 7)


def test_server_stopped_mid_run_then_next_run_fills_everything(events_db, tmp_path):
    creds = events_db.creds_file(tmp_path)
    sql = "SELECT '{from_date}' AS date, SLEEP(0.1) AS pause, '{to_date}' AS until\n"
    folder = make_folder(tmp_path, classic_config(events_db, creds), {"events.sql": sql})
    out = tmp_path / "out"
    # 40 intervals at ~0.1 s each; stop the server in the middle of the run.
    process = subprocess.Popen([sys.executable, "-m", "reportupdater", "run", str(folder), str(out),
                                "--now", "2026-02-10T00:00", "-l", "info", "--jobs", "1"],
                               stderr=subprocess.PIPE, text=True)
    stopper = threading.Timer(2.0, events_db.stop)
    stopper.start()
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        stopper.join()
        events_db.start()
    assert process.returncode == 1, stderr
    assert "failed" in stderr
    partial = (out / "events.tsv").read_text().splitlines() if (out / "events.tsv").exists() else []
    assert 0 < len(partial) - 1 < 40 or not partial
    done = run_cli("run", str(folder), str(out), "--now", "2026-02-10T00:00")
    assert done.returncode == 0, done.stderr
    lines = (out / "events.tsv").read_text().splitlines()
    assert len(lines) == 41
    # Whatever the first run stored is still there, byte for byte.
    assert set(partial) <= set(lines)


def test_connection_lost_mid_query_is_retried_once(events_db, tmp_path):
    """The server kills our connection while the query runs (KILL CONNECTION,
    the real fault): the interval is retried once on a fresh connection."""
    creds = events_db.creds_file(tmp_path)
    sql = "SELECT '{from_date}' AS date, SLEEP(1.5) AS slept\n"
    folder = make_folder(tmp_path, classic_config(events_db, creds), {"events.sql": sql})
    out = tmp_path / "out"

    def kill_running_query():
        # Wait for the query to be running (a cold interpreter in a fresh
        # checkout takes a while to start), then kill its connection once.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            running = events_db.execute(
                "SELECT id FROM information_schema.processlist "
                f"WHERE user = '{USER}' AND info LIKE 'SELECT %SLEEP%'")
            if running:
                for (conn_id,) in running:
                    events_db.execute(f"KILL CONNECTION {conn_id}")
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_running_query)
    killer.start()
    try:
        done = run_cli("run", str(folder), str(out), "--now", "2026-01-02T00:00")
    finally:
        killer.join()
    assert "retrying once" in done.stderr
    assert done.returncode == 0, done.stderr
    assert (out / "events.tsv").read_text() == "date\tslept\n2026-01-01\t0\n"


COUNT_SQL = "SELECT '{from_date}' AS date, COUNT(*) AS events FROM events"


def test_each_query_sees_the_rows_committed_before_it(events_db, tmp_path):
    # One connection is held for the whole run: no query may see the
    # snapshot of an earlier one (REPEATABLE READ would keep it for a
    # transaction that is never ended).
    from reportupdater.cli import parse_now
    from reportupdater.runner import RunOptions, run

    creds = events_db.creds_file(tmp_path)
    folder = make_folder(tmp_path, classic_config(events_db, creds, "    backfill_order: oldest"),
                         {"events.sql": COUNT_SQL})
    out = tmp_path / "out"

    def progress(report: str, done: int, planned: int) -> None:
        # After the first interval is merged (the second one has run by
        # then): a row committed by another client, for the third to see.
        if done == 1:
            events_db.execute("INSERT INTO log.events (ts, wiki) VALUES ('20260105000000', 'frwiki')")

    summary = run(RunOptions(query_folder=folder, output_folder=out, now=parse_now("2026-01-04T00:00"),
                             jobs=1, progress=progress))
    assert summary.exit_code == 0
    assert (out / "events.tsv").read_text() == (
        "date\tevents\n2026-01-01\t3\n2026-01-02\t3\n2026-01-03\t4\n")


def test_a_query_that_changes_the_session_database_does_not_redirect_the_next_ones(events_db, tmp_path):
    # The session's database is set once per connection. A query that runs
    # `USE` fails (no result set) and drops its connection: the next report
    # on that database must not count the other database's table of the
    # same name.
    events_db.execute("DROP DATABASE IF EXISTS other", "CREATE DATABASE other",
                      "CREATE TABLE other.events (ts VARBINARY(14))",
                      "INSERT INTO other.events VALUES ('1'), ('2'), ('3'), ('4'), ('5'), ('6'), ('7')")
    creds = events_db.creds_file(tmp_path)
    config = f"""
databases:
  analytics:
    host: 127.0.0.1
    port: {events_db.port}
    creds_file: {creds}
    db: log
defaults:
  db: analytics
reports:
  a_switches:
    granularity: days
    starts: 2026-01-03
  b_counts:
    granularity: days
    starts: 2026-01-03
"""
    folder = make_folder(tmp_path, config, {"a_switches.sql": "USE other", "b_counts.sql": COUNT_SQL})
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-04T00:00", "-j", "1")
    assert done.returncode == 1, done.stderr
    assert "no result set" in done.stderr
    assert (out / "b_counts.tsv").read_text() == "date\tevents\n2026-01-03\t3\n"


def test_a_template_that_changes_data_fails_and_changes_nothing(events_db, tmp_path):
    # Queries run in autocommit: a mistaken DELETE would be committed
    # before it fails for returning no result set. The session's
    # transactions are read-only, so it is refused instead.
    creds = events_db.creds_file(tmp_path)
    folder = make_folder(tmp_path, classic_config(events_db, creds),
                         {"events.sql": "DELETE FROM events WHERE day < '{to_date}'"})
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-03T00:00")
    assert done.returncode == 1
    assert "READ ONLY" in done.stderr, done.stderr
    assert events_db.execute("SELECT COUNT(*) FROM log.events") == [(3,)]
