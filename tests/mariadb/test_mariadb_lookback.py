"""Late data against a live MariaDB server (fixture in conftest.py): `lookback`
recomputes the newest days and picks up a late row; `ready_when: {query}`
holds a day back until the database says its data is complete."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from testkit import run_cli_process

NOW = "2026-01-05T05:00"  # due: 2026-01-01 .. 2026-01-04


# Against a live server, as cron runs it: a subprocess; queries may take minutes.
run_cli = partial(run_cli_process, timeout=300)


@pytest.fixture
def late_db(mariadb):
    """A `late` database: edits per day 2, 1, 0, 3, and a table of loaded days."""
    mariadb.execute(
        "DROP DATABASE IF EXISTS late", "CREATE DATABASE late",
        "CREATE TABLE late.edits (ts VARBINARY(14), wiki VARBINARY(64), bytes DECIMAL(12, 2))",
        "INSERT INTO late.edits VALUES "
        "('20260101080000', 'enwiki', 10.5), ('20260101090000', 'dewiki', 20),"
        "('20260102120000', 'enwiki', 5),"
        "('20260104000000', 'enwiki', 7), ('20260104120000', 'enwiki', 1),"
        "('20260104235959', 'dewiki', 3)",
        "CREATE TABLE late.loaded (day DATE PRIMARY KEY, complete TINYINT)",
        "INSERT INTO late.loaded VALUES ('2026-01-01', 1), ('2026-01-02', 1), ('2026-01-03', 1), "
        "('2026-01-04', 0)")
    yield mariadb
    mariadb.execute("DROP DATABASE IF EXISTS late")


# Percent signs reach the server as they are (no DBAPI parameters).
DAILY_SQL = """
SELECT DATE(STR_TO_DATE(LEFT('{from_timestamp}', 8), '%Y%m%d')) AS date,
       COUNT(*) AS edits, COALESCE(SUM(bytes), 0) AS bytes
FROM edits
WHERE ts >= '{from_timestamp}' AND ts < '{to_timestamp}'
"""


def make_folder(root: Path, mariadb, extra: str) -> Path:
    folder = root / "queries"
    folder.mkdir()
    creds = mariadb.creds_file(root)
    (folder / "config.yaml").write_text(f"""
databases:
  analytics:
    host: 127.0.0.1
    port: {mariadb.port}
    creds_file: {creds}
    db: late
reports:
  daily_edits:
    granularity: days
    starts: 2026-01-01
    db: analytics
{extra}""")
    (folder / "daily_edits.sql").write_text(DAILY_SQL)
    return folder


FIRST = ("date\tedits\tbytes\n"
         "2026-01-01\t2\t30.50\n"
         "2026-01-02\t1\t5.00\n"
         "2026-01-03\t0\t0.00\n"
         "2026-01-04\t3\t11.00\n")


def test_lookback_picks_up_a_late_row(late_db, tmp_path):
    folder = make_folder(tmp_path, late_db, "    lookback: 2\n")
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", NOW)
    assert (done.returncode, done.stderr) == (0, "")
    path = out / "daily_edits.tsv"
    assert path.read_text() == FIRST

    # Late rows: 2026-01-03 (in the newest 2 computed days) and 2026-01-01 (not).
    late_db.execute("INSERT INTO late.edits VALUES ('20260103221500', 'dewiki', 4.25), "
                    "('20260101221500', 'dewiki', 100)")
    before = path.read_bytes()
    done = run_cli("run", str(folder), str(out), "--now", NOW, "-l", "info", "--diff")
    assert done.returncode == 0, done.stderr
    assert "daily_edits: 2 of 4 intervals to compute" in done.stderr
    assert "daily_edits 2026-01-03: recomputed: 1 rows and 2 cells changed" in done.stderr
    assert "2026-01-04: recomputed" not in done.stderr
    assert done.stdout == ("--- daily_edits 2026-01-03 (stored)\n"
                           "+++ daily_edits 2026-01-03 (recomputed)\n"
                           "  date\tedits\tbytes\n"
                           "- 2026-01-03\t0\t0.00\n"
                           "+ 2026-01-03\t1\t4.25\n")
    after = path.read_bytes()
    assert after == before.replace(b"2026-01-03\t0\t0.00", b"2026-01-03\t1\t4.25")
    # 2026-01-01 and 2026-01-02 are not recomputed: byte for byte as stored.
    assert after.splitlines(keepends=True)[:3] == before.splitlines(keepends=True)[:3]


def test_ready_when_query_holds_a_day_back_until_it_is_complete(late_db, tmp_path):
    ready = ("    ready_when:\n      query: >-\n"
             "        SELECT MAX(complete) FROM loaded WHERE day = DATE('{from_date}')\n")
    folder = make_folder(tmp_path, late_db, ready)
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", NOW, "-l", "info")
    assert done.returncode == 0, done.stderr
    assert "daily_edits 2026-01-04: waiting for its data (since 2026-01-05T05:00Z)" in done.stderr
    assert "readiness check failed" not in done.stderr
    assert (out / "daily_edits.tsv").read_text() == FIRST.rsplit("2026-01-04", 1)[0]

    # Loaded, and a late row with it; the day after that, no row in `loaded`
    # at all (NULL) is not ready either.
    late_db.execute("INSERT INTO late.edits VALUES ('20260104235959', 'frwiki', 1)",
                    "UPDATE late.loaded SET complete = 1 WHERE day = '2026-01-04'")
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-06T05:00", "-l", "info")
    assert done.returncode == 0, done.stderr
    assert "daily_edits 2026-01-05: waiting for its data (since 2026-01-06T05:00Z)" in done.stderr
    assert "2026-01-04: waiting" not in done.stderr
    assert (out / "daily_edits.tsv").read_text() == FIRST.replace("2026-01-04\t3\t11.00",
                                                                  "2026-01-04\t4\t12.00")
