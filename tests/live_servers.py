# Live servers for the tests and the benchmarks: a MariaDB and a Spark
# Thrift Server (HiveServer2 protocol), started by the caller in a temp dir.
#
# Plain functions, no pytest: tests/mariadb/conftest.py and
# tests/hive/conftest.py wrap them in session fixtures, benchmarks/cases.py
# calls them directly. Each server runs on 127.0.0.1 on a free port with its
# data under the folder it is given, and is stopped by its PID (MariaDB) or
# its process group (Spark, started in a session of its own). Nothing
# system-wide is touched.

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
from collections.abc import Sequence

USER = "analyst"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen | None, group: bool = False) -> None:
    """SIGTERM (to its process group when `group`), then SIGKILL after 30 s."""
    if process is None or process.poll() is not None:
        return
    send = (lambda sig: os.killpg(process.pid, sig)) if group else process.send_signal
    send(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()


def find_program(program: str) -> str | None:
    """On PATH, or in /usr/sbin (Debian puts mariadbd there, outside a user's PATH)."""
    return shutil.which(program) or next(
        (str(p) for p in (Path("/usr/sbin") / program, Path("/usr/bin") / program) if p.exists()), None)


# ------------------------------------------------------------------ MariaDB


@dataclass
class MariaDB:
    host: str
    port: int
    socket: str
    datadir: Path
    log_path: Path
    password: str                       # USER's
    options: tuple[str, ...] = ()       # extra mariadbd options
    process: subprocess.Popen | None = None

    def root(self, database: str | None = None):
        """A root connection over the socket (root has no password here)."""
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

    def creds_file(self, folder: Path, password: str | None = None) -> Path:
        """A MySQL client options file for USER (another password: a wrong one)."""
        path = folder / "my.cnf"
        path.write_text(f"[client]\nuser = {USER}\npassword = \"{password or self.password}\"\n")
        return path

    def start(self, seconds: float = 60) -> None:
        """(Re)start mariadbd on this port and datadir; returns once it accepts connections."""
        import pymysql
        command = [
            find_program("mariadbd") or "mariadbd", "--no-defaults", f"--datadir={self.datadir}",
            f"--port={self.port}", "--bind-address=127.0.0.1", f"--socket={self.socket}",
            f"--pid-file={self.datadir / 'mariadbd.pid'}", "--skip-log-bin",
            "--max-connections=200", f"--log-error={self.log_path}", *self.options,
        ]
        if os.geteuid() == 0:
            command.append("--user=root")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {self.log_path.read_text()[-2000:]}")
            try:
                self.root().close()
                return
            except pymysql.err.OperationalError:
                time.sleep(0.2)
        raise RuntimeError("mariadbd did not accept connections in time")

    def stop(self) -> None:
        stop_process(self.process)


def mariadb_missing() -> str | None:
    """None when MariaDB can be started here, else the reason it cannot."""
    if not find_program("mariadbd") or not find_program("mariadb-install-db"):
        return "mariadbd is not installed (./run-tests installs Debian's mariadb-server)"
    return None


def start_mariadb(base: Path, password: str, options: Sequence[str] = ()) -> MariaDB:
    """mariadb-install-db into base/data, mariadbd on a free loopback port
    (with extra `options`), and USER with `password` granted everything."""
    datadir = base / "data"
    install = [find_program("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}",
               "--auth-root-authentication-method=socket", "--skip-test-db"]
    if os.geteuid() == 0:
        install.append("--user=root")
    subprocess.run(install, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = MariaDB("127.0.0.1", free_port(), str(base / "mariadb.sock"), datadir,
                     base / "error.log", password, tuple(options))
    try:
        server.start()
        server.execute(f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{password}'",
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
    spark_home: Path
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"hive://{USER}@{self.host}:{self.port}/default"

    @property
    def beeline(self) -> Path:
        return self.spark_home / "bin" / "beeline"

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
        stop_process(self.process, group=True)  # spark-submit's JVM is its child


def spark_home() -> Path | None:
    try:
        import pyspark
    except ImportError:
        return None
    return Path(pyspark.__file__).parent


def spark_missing() -> str | None:
    """None when the Spark Thrift Server can be started here, else the reason it cannot."""
    if not shutil.which("java"):
        return "Java is not installed: the Spark Thrift Server needs it"
    if spark_home() is None:
        return "pyspark is not installed (./run-tests installs it)"
    if importlib.util.find_spec("pyhive") is None:
        return "PyHive is not installed (pip install 'reportupdater[hive]')"
    return None


def start_thrift_server(base: Path, conf: Sequence[str] = (), timeout: float = 240) -> ThriftServer:
    """Spark Thrift Server from pyspark: local[2], Derby metastore and
    warehouse under base, extra `conf` (KEY=VALUE Spark settings); returns
    once `SELECT 1` answers."""
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
        *(item for setting in conf for item in ("--conf", setting)),
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
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Spark Thrift Server exited:\n{log_path.read_text()[-3000:]}")
            try:
                if server.execute("SELECT 1") == [(1,)]:
                    break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Spark Thrift Server not ready:\n{log_path.read_text()[-3000:]}") \
                        from None
                time.sleep(1)
    except BaseException:
        server.stop()
        raise
    return server
