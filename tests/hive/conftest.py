# A live Spark Thrift Server (HiveServer2 protocol) for the tests in this
# folder, started once per session from PyPI's pyspark with the machine's
# Java: local[2], Derby metastore and warehouse in a temp dir, bound to
# 127.0.0.1 on a free port, ready when `SELECT 1` succeeds, stopped by PID
# (the launch code is tests/live_servers.py, shared with the benchmarks).
# Tests skip (with the reason) only when Java is absent.

from __future__ import annotations

import pytest

from live_servers import ThriftServer, spark_missing, start_thrift_server

@pytest.fixture(scope="session")
def thrift_server(tmp_path_factory) -> ThriftServer:
    reason = spark_missing()
    if reason:
        pytest.skip(reason)
    server = start_thrift_server(tmp_path_factory.mktemp("spark"))
    try:
        yield server
    finally:
        server.stop()


EVENT_ROWS = [
    # (year, month, day, wiki, action, toggled, is_bot, dt)
    (2026, 1, 1, "enwiki", "toggle", True, False, "2026-01-01T10:00:00Z"),
    (2026, 1, 1, "enwiki", "toggle", False, False, "2026-01-01T11:00:00Z"),
    (2026, 1, 1, "dewiki", "toggle", True, False, "2026-01-01T12:00:00Z"),
    (2026, 1, 1, "enwiki", "toggle", True, True, "2026-01-01T13:00:00Z"),  # a bot
    (2026, 1, 2, "dewiki", "save", True, False, "2026-01-02T08:00:00Z"),
    # 2026-01-03: no data
    (2026, 1, 4, "enwiki", "toggle", True, False, "2026-01-04T23:59:59Z"),
]


@pytest.fixture(scope="session")
def event_tables(thrift_server) -> ThriftServer:
    """`event.codemirrorusage`: partitioned by year/month/day, struct columns."""
    statements = [
        "CREATE DATABASE IF NOT EXISTS event",
        "DROP TABLE IF EXISTS event.codemirrorusage",
        "CREATE TABLE event.codemirrorusage (wiki STRING, "
        "event STRUCT<action: STRING, toggled: BOOLEAN>, "
        "useragent STRUCT<is_bot: BOOLEAN, browser_family: STRING>, dt STRING, "
        "year INT, month INT, day INT) USING parquet PARTITIONED BY (year, month, day)",
    ]
    for year, month, day, wiki, action, toggled, is_bot, dt in EVENT_ROWS:
        statements.append(
            f"INSERT INTO event.codemirrorusage PARTITION (year={year}, month={month}, day={day}) "
            f"SELECT '{wiki}', named_struct('action', '{action}', 'toggled', {str(toggled).lower()}), "
            f"named_struct('is_bot', {str(is_bot).lower()}, 'browser_family', 'Firefox'), '{dt}'")
    thrift_server.execute(*statements)
    return thrift_server
