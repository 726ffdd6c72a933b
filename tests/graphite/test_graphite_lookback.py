"""`lookback` against a real carbon-cache: a late row changes one day's value
at the source; the next run recomputes the newest days and sends Graphite
only the point that changed (read back from whisper; counted in the log)."""

from __future__ import annotations

import re
import socket
import sqlite3
import uuid
from datetime import datetime, UTC
from functools import partial
from pathlib import Path

from testkit import run_cli_process

DAY = 86400
JAN1 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
NOW = "2026-01-05T05:00"  # due: 2026-01-01 .. 2026-01-04

# Edits per day: 2, 1, 0, 3.
EDITS = """
CREATE TABLE edits (ts TEXT NOT NULL, wiki TEXT NOT NULL);
INSERT INTO edits VALUES
  ('20260101080000', 'enwiki'), ('20260101090000', 'dewiki'),
  ('20260102120000', 'enwiki'),
  ('20260104000000', 'enwiki'), ('20260104120000', 'enwiki'), ('20260104235959', 'dewiki');
"""

DAILY_SQL = """SELECT substr('{from_timestamp}', 1, 4) || '-' || substr('{from_timestamp}', 5, 2)
       || '-' || substr('{from_timestamp}', 7, 2) AS date, COUNT(*) AS edits
FROM edits
WHERE ts >= '{from_timestamp}' AND ts < '{to_timestamp}'
"""


# Against a live carbon, as cron runs it: a subprocess.
run_cli = partial(run_cli_process, timeout=120)


def execute(folder: Path, statements: str) -> None:
    connection = sqlite3.connect(folder / "data.db")
    try:
        connection.executescript(statements)
        connection.commit()
    finally:
        connection.close()


def make_folder(tmp_path: Path, carbon, prefix: str) -> Path:
    folder = tmp_path / "queries"
    folder.mkdir()
    (folder / "config.yaml").write_text(f"""
graphite:
  host: {carbon.host}
  port: {carbon.port}
  prefix: {prefix}
databases:
  db:
    url: "sqlite:///data.db"
reports:
  daily_edits:
    granularity: days
    starts: 2026-01-01
    db: db
    lookback: 2
    graphite:
      path: "edits.daily.{{_metric}}"
      metrics: {{edits: edits}}
""")
    (folder / "daily_edits.sql").write_text(DAILY_SQL)
    execute(folder, EDITS)
    return folder


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sent(stderr: str) -> list[int]:
    """The point counts of every 'sent N points' line."""
    return [int(count) for count in re.findall(r"INFO sent (\d+) points to Graphite", stderr)]


def queued(out: Path) -> str:
    return "".join(path.read_text() for path in sorted((out / ".graphite-queue").glob("*/*.txt")))


def test_lookback_resends_only_the_changed_point(carbon, tmp_path):
    prefix = "t" + uuid.uuid4().hex[:10]  # the carbon server is shared by the session
    metric = f"{prefix}.edits.daily.edits"
    folder = make_folder(tmp_path, carbon, prefix)
    out = tmp_path / "out"
    end = JAN1 + 3 * DAY
    done = run_cli("run", str(folder), str(out), "--now", NOW, "-l", "info")
    assert done.returncode == 0, done.stderr
    assert sent(done.stderr) == [4]
    first = {JAN1: 2.0, JAN1 + DAY: 1.0, JAN1 + 2 * DAY: 0.0, JAN1 + 3 * DAY: 3.0}
    assert carbon.wait_for(metric, first, JAN1, end) == first

    # Nothing changed at the source: the newest 2 days are recomputed, nothing is sent.
    done = run_cli("run", str(folder), str(out), "--now", NOW, "-l", "info")
    assert done.returncode == 0, done.stderr
    assert "daily_edits: 2 computed" in done.stderr
    assert sent(done.stderr) == [] and queued(out) == ""

    # A late row for 2026-01-03 (and one for 2026-01-01, outside the lookback).
    execute(folder, "INSERT INTO edits VALUES ('20260103100000', 'enwiki');"
                    "INSERT INTO edits VALUES ('20260101100000', 'enwiki');")
    # Which points are queued: a port nobody listens on keeps them in the queue.
    config = (folder / "config.yaml").read_text()
    (folder / "config.yaml").write_text(config.replace(f"port: {carbon.port}",
                                                       f"port: {closed_port()}"))
    done = run_cli("run", str(folder), str(out), "--now", NOW, "-l", "info")
    assert done.returncode == 0, done.stderr
    assert "Graphite unreachable" in done.stderr
    assert "daily_edits 2026-01-03: recomputed: 1 rows and 1 cells changed" in done.stderr
    assert queued(out) == f"{metric} 1 {JAN1 + 2 * DAY}\n"
    assert (out / "daily_edits.tsv").read_text() == (
        "date\tedits\n2026-01-01\t2\n2026-01-02\t1\n2026-01-03\t1\n2026-01-04\t3\n")

    # Carbon back: the one point goes; whisper holds the new value, the rest as before.
    (folder / "config.yaml").write_text(config)
    done = run_cli("run", str(folder), str(out), "--now", NOW, "-l", "info")
    assert done.returncode == 0, done.stderr
    assert sent(done.stderr) == [1]
    assert queued(out) == ""
    second = {**first, JAN1 + 2 * DAY: 1.0}
    assert carbon.wait_for(metric, second, JAN1, end) == second

    # Straight to carbon this time: another late row, for 2026-01-04.
    execute(folder, "INSERT INTO edits VALUES ('20260104130000', 'enwiki');")
    done = run_cli("run", str(folder), str(out), "--now", NOW, "-l", "info")
    assert done.returncode == 0, done.stderr
    assert sent(done.stderr) == [1]
    third = {**second, JAN1 + 3 * DAY: 4.0}
    assert carbon.wait_for(metric, third, JAN1, end) == third


def test_an_explicit_rerun_resends_its_points_even_unchanged(carbon, tmp_path):
    """The operator reruns because a graph is wrong or a whisper file was
    lost: the rerun's points go again although no row changed (lookback
    keeps sending only what changed)."""
    prefix = "t" + uuid.uuid4().hex[:10]
    metric = f"{prefix}.edits.daily.edits"
    folder = make_folder(tmp_path, carbon, prefix)
    out = tmp_path / "out"
    end = JAN1 + 3 * DAY
    done = run_cli("run", str(folder), str(out), "--now", NOW, "-l", "info")
    assert done.returncode == 0, done.stderr
    first = {JAN1: 2.0, JAN1 + DAY: 1.0, JAN1 + 2 * DAY: 0.0, JAN1 + 3 * DAY: 3.0}
    assert carbon.wait_for(metric, first, JAN1, end) == first

    carbon.wsp(metric).unlink()  # the whisper file is lost
    done = run_cli("rerun", str(folder), "2026-01-01", "2026-01-03", "--now", NOW)
    assert done.returncode == 0, done.stderr
    done = run_cli("run", str(folder), str(out), "--now", NOW, "-l", "info")
    assert done.returncode == 0, done.stderr
    assert "recomputed:" not in done.stderr  # nothing changed at the source
    # The two rerun days; the lookback days (2026-01-03, 04) unchanged, not sent.
    assert sent(done.stderr) == [2]
    wanted = {JAN1: 2.0, JAN1 + DAY: 1.0}
    assert carbon.wait_for(metric, wanted, JAN1, end) == wanted
