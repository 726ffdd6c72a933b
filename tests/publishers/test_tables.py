# The tables publisher on SQLite and on a live PostgreSQL: create, a new
# column, replace on re-publish, several rows per date, hourly timestamps in
# UTC, a type conflict, an outage that queues and a later flush that delivers.

from __future__ import annotations

from datetime import date, datetime, timedelta, UTC
from pathlib import Path

import pytest
import sqlalchemy as sa

from reportupdater.intervals import Interval
from reportupdater.publishers import PublishError, StoredInterval
from reportupdater.publishers.tables import (TablesPublisher, TablesSettings, TableTarget,
                                             column_kind)


def day(label: str) -> Interval:
    start = datetime.fromisoformat(label).replace(tzinfo=UTC)
    return Interval(start, start + timedelta(days=1))


def hour(label: str) -> Interval:
    start = datetime.fromisoformat(label).replace(tzinfo=UTC)
    return Interval(start, start + timedelta(hours=1), hourly=True)


def stored(label, header, rows, explode=(("wiki", "en"),), report="daily_edits", interval=None):
    return StoredInterval(report, tuple(explode), tuple(header),
                          tuple(tuple([label, *row]) for row in rows), interval or day(label))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.live)])
def database(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'metrics.db'}"
    server = request.getfixturevalue("postgres")
    server.execute("DROP SCHEMA public CASCADE")
    server.execute("CREATE SCHEMA public")
    return server.url


def publisher(url: str, tmp_path: Path, table: str = "daily_edits") -> TablesPublisher:
    output, queries = tmp_path / "output", tmp_path / "queries"
    output.mkdir(parents=True, exist_ok=True)
    queries.mkdir(parents=True, exist_ok=True)
    return TablesPublisher(TablesSettings(url), {"daily_edits": TableTarget(table)}, output, queries)


def select(url: str, query: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(query))]
    finally:
        engine.dispose()


def columns(url: str, table: str = "daily_edits") -> dict[str, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return {c["name"]: str(c["type"]) for c in sa.inspect(connection).get_columns(table)}
    finally:
        engine.dispose()


def deliver(pub: TablesPublisher, *batches) -> None:
    for batch in batches:
        pub.enqueue(batch)
    result = pub.flush()
    assert result.ok, result.error
    assert pub.queue.files() == []


def test_create_types_and_rows(database, tmp_path):
    pub = publisher(database, tmp_path)
    header = ["date", "edits", "ratio", "note", "empty"]
    deliver(pub, [stored("2020-01-01", header, [["10", "0.5", "a", ""]]),
                  stored("2020-01-02", header, [["11", "2", "b", ""]])])
    types = columns(database)
    assert list(types) == ["date", "wiki", "edits", "ratio", "note"]  # "empty": no value yet
    assert types["date"] == "DATE"
    assert types["edits"] == "BIGINT"
    assert types["ratio"] in ("DOUBLE PRECISION", "DOUBLE_PRECISION", "REAL")
    assert types["note"] == "TEXT"
    rows = select(database, "SELECT date, wiki, edits, ratio, note FROM daily_edits ORDER BY date")
    as_text = [(str(d), w, e, r, n) for d, w, e, r, n in rows]
    assert as_text == [("2020-01-01", "en", 10, 0.5, "a"), ("2020-01-02", "en", 11, 2.0, "b")]
    pub.close()


def test_new_column_replace_and_several_rows_per_date(database, tmp_path):
    pub = publisher(database, tmp_path)
    deliver(pub, [stored("2020-01-01", ["date", "edits"], [["1"], ["2"], ["3"]]),
                  stored("2020-01-01", ["date", "edits"], [["7"]], explode=(("wiki", "de"),))])
    # A rerun of en's day with fewer rows and a new column: no stale, no duplicate row.
    deliver(pub, [stored("2020-01-01", ["date", "edits", "editors"], [["4", "40"], ["5", ""]])])
    assert "editors" in columns(database)
    rows = select(database, "SELECT wiki, edits, editors FROM daily_edits ORDER BY wiki, edits")
    assert rows == [("de", 7, None), ("en", 4, 40), ("en", 5, None)]
    # The interval now has no rows: the table holds none for it either.
    deliver(pub, [stored("2020-01-01", ["date", "edits", "editors"], [])])
    assert select(database, "SELECT wiki, edits FROM daily_edits") == [("de", 7)]
    pub.close()


def test_later_replace_wins(database, tmp_path):
    pub = publisher(database, tmp_path)
    pub.enqueue([stored("2020-01-01", ["date", "edits"], [["1"]])])
    pub.enqueue([stored("2020-01-01", ["date", "edits"], [["2"]])])
    assert pub.flush().ok
    assert select(database, "SELECT edits FROM daily_edits") == [(2,)]
    pub.close()


def test_hourly_timestamps_in_utc(database, tmp_path):
    pub = publisher(database, tmp_path)
    deliver(pub, [stored("2020-03-29T01:00:00", ["date", "edits"], [["5"]],
                         interval=hour("2020-03-29T01:00:00")),
                  stored("2020-03-29T02:00:00", ["date", "edits"], [["6"]],
                         interval=hour("2020-03-29T02:00:00"))])
    if database.startswith("postgresql"):
        assert select(database, "SELECT data_type FROM information_schema.columns WHERE "
                                "table_name = 'daily_edits' AND column_name = 'date'") == [
            ("timestamp with time zone",)]
    else:
        assert columns(database)["date"] == "DATETIME"
    rows = select(database, "SELECT date, edits FROM daily_edits ORDER BY date")
    stamps = [d if isinstance(d, datetime) else datetime.fromisoformat(d) for d, _ in rows]
    stamps = [s.replace(tzinfo=UTC) if s.tzinfo is None else s for s in stamps]
    assert stamps == [datetime(2020, 3, 29, 1, tzinfo=UTC),
                      datetime(2020, 3, 29, 2, tzinfo=UTC)]
    assert [e for _, e in rows] == [5, 6]
    if database.startswith("postgresql"):  # the server's zone is New York: the instant is still UTC
        assert select(database, "SELECT to_char(date AT TIME ZONE 'UTC', 'HH24') FROM daily_edits "
                                "ORDER BY date") == [("01",), ("02",)]
    pub.close()


def test_type_conflict_is_an_error_and_stays_queued(database, tmp_path, caplog):
    pub = publisher(database, tmp_path)
    deliver(pub, [stored("2020-01-01", ["date", "edits"], [["1"]])])
    pub.enqueue([stored("2020-01-02", ["date", "edits"], [["n/a"]])])
    pub.enqueue([stored("2020-01-03", ["date", "edits"], [["3"]])])  # behind it: waits too
    result = pub.flush()
    assert not result.ok and result.refused
    assert "report 'daily_edits'" in result.error and "'daily_edits'" in result.error
    assert "column 'edits' is integer" in result.error and "text" in result.error
    assert len(pub.queue.files()) == 2 and result.waiting == 2
    assert select(database, "SELECT edits FROM daily_edits") == [(1,)]  # nothing cast, nothing lost
    # A float into a BIGINT column is a conflict too (it would be rounded).
    other = publisher(database, tmp_path / "b")
    other.enqueue([stored("2020-01-04", ["date", "edits"], [["1.5"]])])
    assert "gives float values" in other.flush().error
    pub.close()
    other.close()


def test_outage_queues_then_delivers(postgres, tmp_path):
    server = postgres
    server.execute("DROP TABLE IF EXISTS outage")
    down = publisher(server.wrong_port_url(), tmp_path, table="outage")
    down.enqueue([stored("2020-01-01", ["date", "edits"], [["1"]])])
    down.enqueue([stored("2020-01-01", ["date", "edits"], [["2"]])])
    result = down.flush()
    assert not result.ok and not result.refused and result.waiting == 2 and result.delivered == 0
    assert len(down.queue.files()) == 2
    down.close()
    # A later run, with the server reachable, delivers the queue in order.
    up = publisher(server.url, tmp_path, table="outage")
    result = up.flush()
    assert result.ok and result.delivered == 2
    assert server.execute("SELECT edits FROM outage") == [(2,)]
    up.close()


def test_server_stopped_mid_run_then_restarted(postgres, tmp_path):
    server = postgres
    server.execute("DROP TABLE IF EXISTS restart")
    pub = publisher(server.url, tmp_path, table="restart")
    deliver(pub, [stored("2020-01-01", ["date", "edits"], [["1"]])])  # a pooled connection exists
    server.stop()
    try:
        pub.enqueue([stored("2020-01-02", ["date", "edits"], [["2"]])])
        result = pub.flush()
        assert not result.ok and result.waiting == 1
    finally:
        server.start()
    assert pub.flush().ok
    rows = server.execute("SELECT date, edits FROM restart ORDER BY date")
    assert rows == [(date(2020, 1, 1), 1), (date(2020, 1, 2), 2)]
    pub.close()


def test_conflict_resolved_by_the_operator_then_delivered(postgres, tmp_path):
    server = postgres
    server.execute("DROP TABLE IF EXISTS resolved")
    pub = publisher(server.url, tmp_path, table="resolved")
    deliver(pub, [stored("2020-01-01", ["date", "edits"], [["1"]])])
    pub.enqueue([stored("2020-01-02", ["date", "edits"], [["1.5"]])])
    assert pub.flush().refused
    server.execute("ALTER TABLE resolved ALTER COLUMN edits TYPE DOUBLE PRECISION")
    assert pub.flush().ok and pub.queue.files() == []
    assert server.execute("SELECT edits FROM resolved ORDER BY date") == [(1.0,), (1.5,)]
    pub.close()


def test_schema_setting(postgres, tmp_path):
    server = postgres
    server.execute("DROP SCHEMA IF EXISTS reportupdater CASCADE")
    server.execute("CREATE SCHEMA reportupdater")
    output, queries = tmp_path / "output", tmp_path / "queries"
    output.mkdir()
    queries.mkdir()
    pub = TablesPublisher(TablesSettings(server.url, schema="reportupdater"),
                          {"daily_edits": TableTarget("In Schema")}, output, queries)
    deliver(pub, [stored("2020-01-01", ["date", "edits"], [["3"]])])
    deliver(pub, [stored("2020-01-01", ["date", "edits", "new one"], [["4", "x"]])])
    assert server.execute('SELECT edits, "new one" FROM reportupdater."In Schema"') == [(4, "x")]
    pub.close()


def test_names_that_would_share_a_column(tmp_path):
    pub = publisher(f"sqlite:///{tmp_path / 'm.db'}", tmp_path)
    with pytest.raises(PublishError, match=r"report 'daily_edits': table 'daily_edits': column "
                                           r"'Date' is named twice"):
        pub.enqueue([stored("2020-01-01", ["day", "Date"], [["1"]])])
    with pytest.raises(PublishError, match="column 'wiki' is named twice"):
        pub.enqueue([stored("2020-01-01", ["date", "wiki"], [["1"]])])
    assert pub.queue.files() == []


def test_reports_without_a_table_are_not_queued(tmp_path):
    pub = publisher(f"sqlite:///{tmp_path / 'm.db'}", tmp_path)
    assert pub.enqueue([stored("2020-01-01", ["date", "edits"], [["1"]], report="other")]) == 0
    assert pub.queue.files() == []


def test_cell_kinds():
    assert column_kind(["1", "-2", "+3", ""]) == "integer"
    assert column_kind(["1", "2.5", "1e3"]) == "float"
    assert column_kind(["1", "nan"]) == "text"          # not finite: text, never NaN
    assert column_kind(["1_000"]) == "text"             # Python's int() would take it
    assert column_kind([str(2 ** 63)]) == "float"       # beyond BIGINT
    assert column_kind(["", " "]) is None


def test_driver_not_installed_is_refused(tmp_path):
    pub = publisher("postgresql+nosuchdriver://u:secret@127.0.0.1/m", tmp_path)
    pub.enqueue([stored("2020-01-01", ["date", "edits"], [["1"]])])
    result = pub.flush()
    assert result.refused and len(pub.queue.files()) == 1
    assert "secret" not in result.error
