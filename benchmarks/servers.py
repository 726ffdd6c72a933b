# Live servers for the benchmarks: a MariaDB and a Spark Thrift Server.
#
# The minimal launch code of tests/mariadb/conftest.py and
# tests/hive/conftest.py, copied rather than imported so that the benchmarks
# do not depend on pytest fixtures (and keep working while the tests change).
# Each server runs on 127.0.0.1 on a free port, with its data in a temp dir
# given by the caller, and is stopped by its PID (MariaDB) or process group
# (Spark, started in a session of its own). Nothing system-wide is touched.

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

USER = "analyst"
PASSWORD = "bench-Pa55word"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_program(program: str) -> str | None:
    return shutil.which(program) or next(
        (str(p) for p in (Path("/usr/sbin") / program, Path("/usr/bin") / program) if p.exists()), None)


# ------------------------------------------------------------------ MariaDB


@dataclass
class MariaDB:
    host: str
    port: int
    socket: str
    datadir: Path
    process: subprocess.Popen
    log_path: Path

    def root(self, database: str | None = None):
        import pymysql
        return pymysql.connect(unix_socket=self.socket, user="root", database=database,
                               autocommit=True, charset="utf8mb4")

    def execute(self, *statements: str, database: str | None = None) -> list[tuple]:
        connection = self.root(database)
        try:
            with connection.cursor() as cursor:
                rows: list[tuple] = []
                for statement in statements:
                    cursor.execute(statement)
                    rows = list(cursor.fetchall())
                return rows
        finally:
            connection.close()

    def creds_file(self, folder: Path) -> Path:
        path = folder / "my.cnf"
        path.write_text(f"[client]\nuser = {USER}\npassword = \"{PASSWORD}\"\n")
        return path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def mariadb_available() -> str | None:
    """None when MariaDB can be started here, else the reason it cannot."""
    if not find_program("mariadbd") or not find_program("mariadb-install-db"):
        return "mariadbd / mariadb-install-db not installed (apt-get install mariadb-server)"
    return None


def start_mariadb(base: Path) -> MariaDB:
    """mariadb-install-db into base/data, then mariadbd on a free loopback port."""
    import pymysql
    datadir = base / "data"
    log_path = base / "error.log"
    install = [find_program("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}",
               "--auth-root-authentication-method=socket", "--skip-test-db"]
    if os.geteuid() == 0:
        install.append("--user=root")
    subprocess.run(install, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port = free_port()
    sock = str(base / "mariadb.sock")
    command = [
        find_program("mariadbd") or "mariadbd", "--no-defaults", f"--datadir={datadir}",
        f"--port={port}", "--bind-address=127.0.0.1", f"--socket={sock}",
        f"--pid-file={datadir / 'mariadbd.pid'}", "--skip-log-bin",
        # Bigger than the tests' 64M so the 2-million-row table and its index
        # stay in memory; the log is not flushed per commit (only the table
        # build writes; the benchmarks read).
        "--innodb-buffer-pool-size=512M", "--innodb-flush-log-at-trx-commit=0",
        "--max-connections=200", f"--log-error={log_path}",
    ]
    if os.geteuid() == 0:
        command.append("--user=root")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = MariaDB("127.0.0.1", port, sock, datadir, process, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {log_path.read_text()[-2000:]}")
            try:
                server.root().close()
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mariadbd did not accept connections in time")
                time.sleep(0.2)
        server.execute(f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'",
                       f"GRANT ALL ON *.* TO '{USER}'@'%'")
    except BaseException:
        server.stop()
        raise
    return server


# ---------------------------------------------------- Spark Thrift Server


@dataclass
class ThriftServer:
    host: str
    port: int
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

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def spark_home() -> Path | None:
    try:
        import pyspark
    except ImportError:
        return None
    return Path(pyspark.__file__).parent


def spark_available() -> str | None:
    if not shutil.which("java"):
        return "Java is not installed (the Spark Thrift Server needs it)"
    if spark_home() is None:
        return "pyspark is not installed (pip install 'reportupdater[test]')"
    if importlib.util.find_spec("pyhive") is None:
        return "PyHive is not installed (pip install 'reportupdater[hive]')"
    return None


def start_thrift_server(base: Path, timeout: float = 240) -> ThriftServer:
    """Spark Thrift Server from pyspark: local[2], Derby metastore and
    warehouse under base, ready when `SELECT 1` answers."""
    home = spark_home()
    assert home is not None
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
        "--conf", "spark.sql.session.timeZone=UTC",
        "--hiveconf", f"hive.server2.thrift.port={port}",
        "--hiveconf", "hive.server2.thrift.bind.host=127.0.0.1",
        "--hiveconf", f"javax.jdo.option.ConnectionURL={metastore}",
        "spark-internal",
    ]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, env=env, cwd=base, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = ThriftServer("127.0.0.1", port, process, log_path)
    logging.getLogger("thrift.transport.TSocket").setLevel(logging.CRITICAL)  # refused while starting
    try:
        deadline = time.monotonic() + timeout
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
    except BaseException:
        server.stop()
        raise
    return server
