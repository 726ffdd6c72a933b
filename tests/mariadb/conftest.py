# A live MariaDB server for the tests in this folder, started once per session.
#
# mariadb-install-db into a temp datadir, then mariadbd bound to 127.0.0.1 on
# a free port with its own socket; stopped by its PID at the end. It never
# touches a system-wide server. Tests skip (with the reason) only when
# mariadbd is not installed; ./run-tests installs it.

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest

USER = "analyst"
PASSWORD = "s3cret-Pa55word"


def _find(program: str) -> str | None:
    return shutil.which(program) or next(
        (str(p) for p in (Path("/usr/sbin") / program, Path("/usr/bin") / program) if p.exists()), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MariaDB:
    host: str
    port: int
    socket: str
    datadir: Path
    process: subprocess.Popen
    log_path: Path

    def root(self, database: str | None = None) -> pymysql.Connection:
        """A root connection over the socket (root has no password here)."""
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

    def creds_file(self, folder: Path, password: str = PASSWORD) -> Path:
        path = folder / "my.cnf"
        path.write_text(f"[client]\nuser = {USER}\npassword = \"{password}\"\n")
        return path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def start(self) -> None:
        """(Re)start the server on the same port and datadir."""
        self.process = _spawn(self.datadir, self.port, self.socket, self.log_path)
        _wait_ready(self)


def _spawn(datadir: Path, port: int, sock: str, log_path: Path) -> subprocess.Popen:
    command = [
        _find("mariadbd") or "mariadbd", "--no-defaults", f"--datadir={datadir}",
        f"--port={port}", "--bind-address=127.0.0.1", f"--socket={sock}",
        f"--pid-file={datadir / 'mariadbd.pid'}", "--skip-log-bin",
        "--innodb-buffer-pool-size=64M", "--max-connections=200",
        f"--log-error={log_path}",
    ]
    if os.geteuid() == 0:
        command.append("--user=root")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_ready(server: MariaDB, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"mariadbd exited: {server.log_path.read_text()[-2000:]}")
        try:
            server.root().close()
            return
        except pymysql.err.OperationalError:
            time.sleep(0.2)
    raise RuntimeError("mariadbd did not accept connections in time")


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory) -> MariaDB:
    if not _find("mariadbd") or not _find("mariadb-install-db"):
        pytest.skip("mariadbd is not installed (./run-tests installs Debian's mariadb-server)")
    base = tmp_path_factory.mktemp("mariadb")
    datadir = base / "data"
    log_path = base / "error.log"
    install = [_find("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}",
               "--auth-root-authentication-method=socket", "--skip-test-db"]
    if os.geteuid() == 0:
        install.append("--user=root")
    subprocess.run(install, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port = free_port()
    sock = str(base / "mariadb.sock")
    server = MariaDB("127.0.0.1", port, sock, datadir, _spawn(datadir, port, sock, log_path), log_path)
    try:
        _wait_ready(server)
        server.execute(f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'",
                       f"GRANT ALL ON *.* TO '{USER}'@'%'")
        yield server
    finally:
        server.stop()
