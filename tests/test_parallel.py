"""Parallel jobs and batched backfills: same files as a serial, unbatched run."""

from __future__ import annotations

import datetime
from functools import partial
import sqlite3
from pathlib import Path

import pytest

import testkit


run_cli = partial(testkit.run_cli, timeout=300)  # backfills of many intervals


def tree(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*.tsv")) if not path.name.startswith(".")}


def make_sql_folder(root: Path, batch: str = "") -> Path:
    folder = root / "queries"
    folder.mkdir(parents=True)
    db = sqlite3.connect(folder / "events.db")
    db.execute("CREATE TABLE events (wiki TEXT, day TEXT, kind TEXT, n INTEGER)")
    rows = []
    for wiki_index, wiki in enumerate(["enwiki", "dewiki", "frwiki"]):
        for day in range(1, 61):
            if (day + wiki_index) % 7 == 0:
                continue  # days without data: the empty row
            date = (datetime.date(2026, 1, 1) + datetime.timedelta(days=day - 1)).isoformat()
            rows.append((wiki, date, "edit", day * (wiki_index + 1)))
            rows.append((wiki, date, "view", day * 10))
    db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    (folder / "config.yaml").write_text(f"""
databases:
  events:
    url: sqlite:///events.db
reports:
  per_kind:
    db: events
    granularity: days
    starts: 2026-01-01
    explode_by:
      wiki: enwiki, dewiki, frwiki
{batch}
""")
    # Groups by day, as a batched query must: one row per day and kind.
    (folder / "per_kind.sql").write_text(
        "SELECT day AS date, kind, SUM(n) AS total FROM events\n"
        "WHERE wiki = '{wiki}' AND day >= '{from_date}' AND day < '{to_date}'\n"
        "GROUP BY day, kind ORDER BY day, kind\n")
    return folder


NOW = "2026-03-01T05:00"


def test_parallel_run_writes_the_same_files_as_a_serial_run(tmp_path):
    folder = make_sql_folder(tmp_path / "a")
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    assert run_cli("run", folder, serial, "--now", NOW, "--jobs", "1").returncode == 0
    done = run_cli("run", folder, parallel, "--now", NOW, "--jobs", "8")
    assert done.returncode == 0, done.stderr
    assert tree(parallel) == tree(serial)
    assert len(tree(serial)) == 3
    lines = tree(serial)["per_kind/enwiki.tsv"].decode().splitlines()
    assert lines[:3] == ["date\tkind\ttotal", "2026-01-01\tedit\t1", "2026-01-01\tview\t10"]
    assert "2026-01-07\t\t" in lines  # no data that day


@pytest.mark.parametrize("batch", ["    batch: 30", "    batch: month", "    batch: 7"])
def test_batched_backfill_writes_the_same_files_as_an_unbatched_one(tmp_path, batch):
    plain = make_sql_folder(tmp_path / "plain")
    batched = make_sql_folder(tmp_path / "batched", batch)
    assert run_cli("run", plain, tmp_path / "out-plain", "--now", NOW).returncode == 0
    done = run_cli("run", batched, tmp_path / "out-batched", "--now", NOW, "-l", "info")
    assert done.returncode == 0, done.stderr
    assert tree(tmp_path / "out-batched") == tree(tmp_path / "out-plain")
    # One query per batch of consecutive intervals, not one per day.
    queries = sum(1 for line in done.stderr.splitlines() if ": computed " in line)
    size = {"    batch: 30": 30, "    batch: 7": 7}.get(batch)
    assert queries == 3 * (2 if size == 30 else 9 if size == 7 else 2)


def test_batch_only_groups_consecutive_missing_intervals(tmp_path):
    folder = make_sql_folder(tmp_path / "q", "    batch: 30")
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW).returncode == 0
    reference = tree(out)
    # Punch two holes in one file: the next run fills each with its own query.
    path = out / "per_kind" / "dewiki.tsv"
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(("2026-01-10", "2026-02-20"))]
    path.write_text("".join(kept))
    done = run_cli("run", folder, out, "--now", NOW, "-l", "info")
    assert done.returncode == 0, done.stderr
    computed = [line for line in done.stderr.splitlines() if ": computed " in line]
    assert len(computed) == 2, computed
    assert tree(out) == reference


SLEEPY = """#!/bin/sh
# Records when it runs, to see overlaps.
start=$(date +%s.%N)
sleep 0.3
end=$(date +%s.%N)
echo "$start $end" >> "$PWD/spans.log"
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""


def _overlaps(spans_file: Path) -> int:
    spans = [tuple(map(float, line.split())) for line in spans_file.read_text().splitlines()]
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


@pytest.mark.parametrize("parallel, jobs, ready_when, most", [
    ("true", "4", "", 4), ("false", "4", "", 1),
    # One job at a time: the next command starts only when the one before
    # has ended (its result is merged while the next runs), its readiness
    # check included.
    ("true", "1", "", 1), ("true", "1", "ready_when: {script: sleepy}", 1)])
def test_parallel_false_never_overlaps(tmp_path, parallel, jobs, ready_when, most):
    folder = tmp_path / "queries"
    folder.mkdir()
    (folder / "config.yaml").write_text(f"""
reports:
  sleepy:
    type: script
    granularity: days
    starts: 2026-01-01
    parallel: {parallel}
    {ready_when}
""")
    (folder / "sleepy").write_text(SLEEPY)
    (folder / "sleepy").chmod(0o755)
    done = run_cli("run", folder, tmp_path / "out", "--now", "2026-01-09T00:00", "--jobs", jobs)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "sleepy.tsv").read_text().count("\n") == 9
    assert _overlaps(folder / "spans.log") == most
