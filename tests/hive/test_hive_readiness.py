"""Readiness of Hive data (`ready_when: {partition|query}`, `ready_timeout`)
against a live Spark Thrift Server (fixture in conftest.py): a day whose
partition has not landed waits, is not stored, and is computed once it lands."""

from __future__ import annotations

import json
import uuid
from functools import partial
from pathlib import Path

import pytest
from testkit import run_cli_process

NOW = "2026-01-05T03:00"  # due: 2026-01-03 and 2026-01-04


# Against a live server, as cron runs it: a subprocess; queries may take minutes.
run_cli = partial(run_cli_process, timeout=300)


@pytest.fixture
def table(thrift_server) -> str:
    """A partitioned table of this test's own in `event` (the server is shared),
    with the partition of 2026-01-03 only."""
    name = f"event.landing_{uuid.uuid4().hex[:8]}"
    thrift_server.execute(
        "CREATE DATABASE IF NOT EXISTS event",
        f"CREATE TABLE {name} (wiki STRING, n INT, year INT, month INT, day INT) "
        "USING parquet PARTITIONED BY (year, month, day)",
        f"INSERT INTO {name} PARTITION (year=2026, month=1, day=3) "
        "SELECT 'enwiki', 2 UNION ALL SELECT 'dewiki', 5")
    yield name
    thrift_server.execute(f"DROP TABLE IF EXISTS {name}")


def land_day_4(server, table: str) -> None:
    server.execute(f"INSERT INTO {table} PARTITION (year=2026, month=1, day=4) SELECT 'enwiki', 11")


def make_folder(root: Path, server, table: str, ready: str, extra: str = "") -> Path:
    folder = root / "queries"
    folder.mkdir()
    (folder / "config.yaml").write_text(f"""
databases:
  hive:
    url: {server.url}
reports:
  landing:
    type: hive
    granularity: days
    starts: 2026-01-03
    ready_when: {ready}
{extra}""")
    (folder / "landing.hql").write_text(
        "SELECT '{from_date}' AS date, COUNT(*) AS wikis, COALESCE(SUM(n), 0) AS n\n"
        f"FROM {table}\n"
        "WHERE year = {year} AND month = {month} AND day = {day}\n")
    return folder


DAY_3 = "date\twikis\tn\n2026-01-03\t2\t7\n"
BOTH = DAY_3 + "2026-01-04\t1\t11\n"


def status(folder: Path, out: Path, now: str = NOW) -> dict:
    done = run_cli("status", str(folder), str(out), "--json", "--now", now)
    (report,) = json.loads(done.stdout)["reports"]
    return report


def test_day_waits_for_its_partition_then_is_computed(thrift_server, table, tmp_path):
    ready = '{partition: "' + table + '/year={year}/month={month}/day={day}"}'
    folder = make_folder(tmp_path, thrift_server, table, ready)
    out = tmp_path / "out"
    for _attempt in (1, 2):
        done = run_cli("run", str(folder), str(out), "--now", NOW, "-l", "info")
        assert done.returncode == 0, done.stderr
        assert "landing 2026-01-04: waiting for its data (since 2026-01-05T03:00Z)" in done.stderr
        assert " ERROR " not in done.stderr and "Traceback" not in done.stderr
        # Not stored, not even as an empty row.
        assert (out / "landing.tsv").read_text() == DAY_3
    report = status(folder, out)
    assert (report["waiting"], report["missing"], report["failing"]) == (1, 1, 0)

    land_day_4(thrift_server, table)
    done = run_cli("run", str(folder), str(out), "--now", NOW, "-l", "info")
    assert done.returncode == 0, done.stderr
    assert "landing: 1 computed, 0 failed, 0 waiting to retry, 0 waiting for data" in done.stderr
    assert (out / "landing.tsv").read_text() == BOTH


def test_day_waits_until_a_readiness_query_says_so(thrift_server, table, tmp_path):
    query = f"SELECT COUNT(*) FROM {table} WHERE year = {{year}} AND month = {{month}} AND day = {{day}}"
    folder = make_folder(tmp_path, thrift_server, table, json.dumps({"query": query}))
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", NOW, "-l", "info")
    assert done.returncode == 0, done.stderr
    assert "landing 2026-01-04: waiting for its data (since 2026-01-05T03:00Z)" in done.stderr
    assert "readiness check failed" not in done.stderr  # a 0, not an error
    assert (out / "landing.tsv").read_text() == DAY_3

    land_day_4(thrift_server, table)
    done = run_cli("run", str(folder), str(out), "--now", NOW, "-l", "info")
    assert done.returncode == 0, done.stderr
    assert "waiting for its data" not in done.stderr
    assert (out / "landing.tsv").read_text() == BOTH


def test_ready_timeout_turns_waiting_into_a_failure(thrift_server, table, tmp_path):
    ready = '{partition: "' + table + '/year={year}/month={month}/day={day}"}'
    folder = make_folder(tmp_path, thrift_server, table, ready, extra="    ready_timeout: 3600\n")
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", NOW)
    assert (done.returncode, done.stderr) == (0, "")
    # An hour and a minute later the partition is still not there.
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-05T04:01")
    assert done.returncode == 1, done.stderr
    assert ("ERROR landing 2026-01-04: failed: data not ready since 2026-01-05T03:00Z "
            "(ready_timeout 3600 s)") in done.stderr
    assert "Traceback" not in done.stderr
    assert (out / "landing.tsv").read_text() == DAY_3
    report = status(folder, out, "2026-01-05T04:01")
    assert report["failing"] == 1 and "data not ready since" in report["last_failure"]["error"]
