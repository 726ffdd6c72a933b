# `reportupdater run` publishing end to end: a script report whose values
# come from a file the test edits, published to SQLite tables (fast suite)
# and to a live PostgreSQL and VictoriaMetrics (live): the rows and samples
# arrive, a lookback change replaces them, an outage queues and the next run
# delivers, a refusal fails the run, --no-publish sends nothing.

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from testkit import make_folder, run_cli

NOW = "2026-01-04T12:00:00"
SCRIPT = """\
#!/usr/bin/env python3
# START END WIKI FOLDER: the rows of values.txt (date wiki edits kind) for START and WIKI
import sys
from pathlib import Path
start, wiki, folder = sys.argv[1], sys.argv[3], Path(sys.argv[4])
print("date\\tedits\\tkind")
for line in (folder / "values.txt").read_text().splitlines():
    date, w, edits, kind = line.split()
    if date == start and w == wiki:
        print(f"{date}\\t{edits}\\t{kind}")
"""
VALUES = """\
2026-01-01 en 10 a
2026-01-01 en 11 b
2026-01-02 en 20 a
2026-01-03 en 30 a
2026-01-01 de 5 a
"""


def folder(tmp_path: Path, publishing: str, values: str = VALUES) -> Path:
    return make_folder(tmp_path, f"""\
{publishing}
reports:
  daily_edits:
    type: script
    granularity: days
    starts: 2026-01-01
    lookback: 3
    explode_by: {{wiki: "en, de"}}
""", {"values.txt": values}, {"daily_edits": SCRIPT}, dedent_text=False)


def run(query: Path, *args: str):
    return run_cli("run", query, query.parent / "output", "--now", NOW, "-l", "warning", *args)


def rows(url: str, table: str = "daily_edits") -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            result = connection.execute(sa.text(
                f'SELECT date, wiki, edits, kind FROM "{table}" ORDER BY date, wiki, kind'))
            # Days without rows are one empty row in the TSV, and in the table.
            return [(str(d)[:10], w, e, k) for d, w, e, k in result if e is not None]
    finally:
        engine.dispose()


EXPECTED = [("2026-01-01", "de", 5, "a"), ("2026-01-01", "en", 10, "a"), ("2026-01-01", "en", 11, "b"),
            ("2026-01-02", "en", 20, "a"), ("2026-01-03", "en", 30, "a")]
CHANGED = [("2026-01-01", "de", 5, "a"), ("2026-01-01", "en", 12, "a"), ("2026-01-03", "en", 31, "a")]


def change_values(query: Path) -> None:
    """A lookback change: a row gone, a value changed, a date emptied."""
    (query / "values.txt").write_text("2026-01-01 en 12 a\n2026-01-03 en 31 a\n2026-01-01 de 5 a\n")


def test_sqlite_tables_rows_then_a_lookback_change_replaces_them(tmp_path):
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    query = folder(tmp_path, f'tables: {{url: "{url}"}}')
    code, _, err = run(query)
    assert code == 0, err
    assert rows(url) == EXPECTED
    change_values(query)
    code, _, err = run(query)
    assert code == 0, err
    assert rows(url) == CHANGED  # 2026-01-02 of en: only its empty row now
    assert list((tmp_path / "output" / ".tables-queue").rglob("*.json")) == []


def test_no_publish_sends_nothing_and_no_graphite_keeps_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    query = folder(tmp_path, f'tables: {{url: "{url}"}}')
    code, _, err = run(query, "--no-publish")
    assert code == 0, err
    assert not (tmp_path / "metrics.db").exists()
    assert not (tmp_path / "output" / ".tables-queue").exists()
    (tmp_path / "output2").mkdir()
    code, _, err = run_cli("run", query, tmp_path / "output2", "--now", NOW, "--no-graphite")
    assert code == 0, err
    assert rows(url) == EXPECTED


def test_an_outage_queues_and_the_next_run_delivers(tmp_path):
    # A real fault: the database's folder does not exist yet, so SQLite
    # cannot open it (an OperationalError, as an unreachable server).
    url = f"sqlite:///{tmp_path / 'later' / 'metrics.db'}"
    query = folder(tmp_path, f'tables: {{url: "{url}"}}')
    code, _, err = run(query)
    assert code == 0, err
    assert "kept in" in err and "for the next run" in err
    queued = list((tmp_path / "output" / ".tables-queue").rglob("*.json"))
    assert queued
    code, out, _ = run_cli("status", query, tmp_path / "output", "--now", NOW)
    assert "tables: 7 rows waiting in its queue" in out
    (tmp_path / "later").mkdir()
    code, _, err = run(query)  # nothing to compute: the queue alone goes
    assert code == 0, err
    assert rows(url) == EXPECTED
    assert list((tmp_path / "output" / ".tables-queue").rglob("*.json")) == []


def test_one_store_down_delays_only_that_store(tmp_path):
    from live_servers import free_port
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    query = folder(tmp_path, f"""\
tables: {{url: "{url}"}}
prometheus: {{remote_write_url: "http://127.0.0.1:{free_port()}/api/v1/write"}}""")
    config = query / "config.yaml"
    config.write_text(config.read_text() + "    prometheus: {metrics: {ru_edits: edits}}\n")
    code, _, err = run(query)
    assert code == 0, err  # an outage: the next run retries
    assert "prometheus:" in err and "for the next run" in err
    assert rows(url) == EXPECTED  # the tables went all the same
    assert list((tmp_path / "output" / ".tables-queue").rglob("*.json")) == []
    assert list((tmp_path / "output" / ".prometheus-queue").rglob("*.json"))
    code, out, _ = run_cli("status", query, tmp_path / "output", "--now", NOW)
    assert "tables: 0 rows waiting in its queue" in out
    assert "prometheus: 5 samples waiting in its queue" in out


def test_a_type_conflict_fails_the_run_loudly_and_stays_queued(tmp_path):
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    query = folder(tmp_path, f'tables: {{url: "{url}"}}')
    assert run(query)[0] == 0
    (query / "values.txt").write_text(VALUES.replace("30 a", "many a"))
    code, _, err = run(query)
    assert code == 1
    assert "tables:" in err and "edits" in err
    assert list((tmp_path / "output" / ".tables-queue").rglob("*.json"))


# ------------------------------------------------------------------ live stores


@pytest.fixture
def live_stores(postgres, victoria_metrics):
    postgres.execute("DROP SCHEMA public CASCADE")
    postgres.execute("CREATE SCHEMA public")
    return postgres, victoria_metrics


def epoch(label: str) -> int:
    return int(datetime.fromisoformat(label).replace(tzinfo=UTC).timestamp())


def test_postgres_and_victoria_metrics_then_a_lookback_change(tmp_path, live_stores):
    server, metrics = live_stores
    metric = f"run_edits_{tmp_path.name[-8:].replace('-', '_')}"
    query = folder(tmp_path, f"""\
tables: {{url: "{server.url}"}}
prometheus: {{remote_write_url: "{metrics.remote_write_url}"}}""")
    config = query / "config.yaml"
    config.write_text(config.read_text() + f"    prometheus:\n      metrics: {{{metric}: edits}}\n"
                      "      labels: [wiki, kind]\n")
    code, _, err = run(query)
    assert code == 0, err
    assert rows(server.url) == EXPECTED
    samples = metrics.raw_samples(metric, epoch("2026-01-01"), epoch("2026-01-03"))
    by_series = {tuple(sorted((k, v) for k, v in labels if k != "__name__")): points
                 for labels, points in samples.items()}
    assert by_series[(("kind", "a"), ("wiki", "en"))] == {
        epoch("2026-01-01"): 10.0, epoch("2026-01-02"): 20.0,
        epoch("2026-01-03"): 30.0}
    change_values(query)
    code, _, err = run(query)
    assert code == 0, err
    assert rows(server.url) == CHANGED
    samples = metrics.raw_samples(metric, epoch("2026-01-01"), epoch("2026-01-03"))
    by_series = {tuple(sorted((k, v) for k, v in labels if k != "__name__")): points
                 for labels, points in samples.items()}
    points = by_series[(("kind", "a"), ("wiki", "en"))]
    assert points[epoch("2026-01-01")] == 12.0 and points[epoch("2026-01-03")] == 31.0
