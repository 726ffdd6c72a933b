# A live Spark Thrift Server (HiveServer2 protocol) for the tests in this
# folder, started once per session from PyPI's pyspark with the machine's
# Java: local[2], Derby metastore and warehouse in a temp dir, bound to
# 127.0.0.1 on a free port, ready when `SELECT 1` succeeds, stopped by PID.
# Tests skip (with the reason) only when Java is absent.

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "analyst"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spark_home() -> Path | None:
    try:
        import pyspark
    except ImportError:
        return None
    return Path(pyspark.__file__).parent


@dataclass
class ThriftServer:
    host: str
    port: int
    spark_home: Path
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"hive://{USER}@{self.host}:{self.port}/default"

    def connect(self):
        from pyhive import hive
        return hive.connect(host=self.host, port=self.port, username=USER)

    def execute(self, *statements: str) -> list[tuple]:
        connection = self.connect()
        try:
            cursor = connection.cursor()
            rows: list[tuple] = []
            for statement in statements:
                cursor.execute(statement)
                rows = cursor.fetchall() if statement.lstrip().upper().startswith("SELECT") else []
            return rows
        finally:
            connection.close()

    @property
    def beeline(self) -> Path:
        return self.spark_home / "bin" / "beeline"


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def thrift_server(tmp_path_factory) -> ThriftServer:
    if not shutil.which("java"):
        pytest.skip("Java is not installed: the Spark Thrift Server needs it")
    home = spark_home()
    if home is None:
        pytest.skip("pyspark is not installed (./run-tests installs it)")
    base = tmp_path_factory.mktemp("spark")
    port = free_port()
    log_path = base / "thriftserver.log"
    env = dict(os.environ, SPARK_HOME=str(home), SPARK_LOG_DIR=str(base / "logs"),
               SPARK_LOCAL_IP="127.0.0.1", SPARK_LOCAL_DIRS=str(base / "local"))
    metastore = f"jdbc:derby:;databaseName={base / 'metastore_db'};create=true"
    command = [
        str(home / "bin" / "spark-submit"),
        "--class", "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2",
        "--master", "local[2]", "--driver-memory", "1g",
        "--conf", f"spark.sql.warehouse.dir={base / 'warehouse'}",
        "--conf", f"spark.driver.extraJavaOptions=-Dderby.system.home={base}",
        "--conf", "spark.ui.enabled=false",
        "--conf", "spark.sql.shuffle.partitions=2",
        "--hiveconf", f"hive.server2.thrift.port={port}",
        "--hiveconf", "hive.server2.thrift.bind.host=127.0.0.1",
        "--hiveconf", f"javax.jdo.option.ConnectionURL={metastore}",
        "spark-internal",
    ]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, env=env, cwd=base, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = ThriftServer("127.0.0.1", port, home, process, log_path)
    logging.getLogger("thrift.transport.TSocket").setLevel(logging.CRITICAL)  # refused while starting
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Spark Thrift Server exited:\n{log_path.read_text()[-3000:]}")
            try:
                if server.execute("SELECT 1") == [(1,)]:
                    break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Spark Thrift Server not ready:\n{log_path.read_text()[-3000:]}")
                time.sleep(1)
        yield server
    finally:
        _stop(process)


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
