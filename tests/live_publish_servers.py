# Live stores for the publisher tests (tests/publishers/): a PostgreSQL, a
# VictoriaMetrics and a Prometheus with its remote-write receiver, each
# started once per session on 127.0.0.1 on a free port with its data in a
# temp dir, stopped by its PID. Skipped, with the reason, when the Debian
# package is not installed (./run-tests installs postgresql, victoria-metrics
# and prometheus). Nothing system-wide is touched. Same style as
# tests/live_servers.py (MariaDB, Spark), whose helpers it uses.

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from live_servers import find_program, free_port, stop_process

POSTGRES_USER = "reports"
POSTGRES_DATABASE = "metrics"
UNPRIVILEGED = "nobody"  # initdb refuses to run as root


def _wait_http(url: str, process: subprocess.Popen, log_path: Path, what: str,
               seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{log_path.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{what} not ready:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


# --------------------------------------------------------------- PostgreSQL


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def postgres_missing() -> str | None:
    if postgres_bin() is None:
        return "PostgreSQL is not installed (./run-tests installs Debian's postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    return None


@dataclass
class PostgreSQL:
    port: int
    datadir: Path
    log_path: Path
    socket_dir: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{POSTGRES_USER}@127.0.0.1:{self.port}/{POSTGRES_DATABASE}"

    def wrong_port_url(self) -> str:
        return f"postgresql+psycopg://{POSTGRES_USER}@127.0.0.1:{free_port()}/{POSTGRES_DATABASE}"

    def execute(self, statement: str, *params) -> list[tuple]:
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=self.port, user=POSTGRES_USER,
                             dbname=POSTGRES_DATABASE, autocommit=True) as connection:
            cursor = connection.execute(statement, params or None)
            return list(cursor.fetchall()) if cursor.description else []

    def start(self, seconds: float = 60) -> None:
        bin_dir = postgres_bin()
        assert bin_dir is not None
        command = [str(bin_dir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                   "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.socket_dir}",
                   "-c", "fsync=off",
                   # Not UTC, so that a test sees a timestamp stored in the session's zone.
                   "-c", "timezone=America/New_York", "-c", "shared_buffers=16MB", "-c", "max_connections=50"]
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(command, stdout=log_file,
                                            stderr=subprocess.STDOUT, preexec_fn=_demote())
        deadline = time.monotonic() + seconds
        import psycopg
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                psycopg.connect(host="127.0.0.1", port=self.port, user=POSTGRES_USER,
                                dbname="postgres", connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"postgres not ready:\n{self.log_path.read_text()[-3000:]}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        """SIGINT: PostgreSQL's "fast" shutdown, which ends open sessions (SIGTERM,
        "smart", would wait for a test's pooled connection); SIGKILL after 30 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop_process(self.process)
        self.process = None



def _demote():
    """For root: run the server as UNPRIVILEGED (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return None
    user = pwd.getpwnam(UNPRIVILEGED)

    def demote() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    return demote


def start_postgres(base: Path) -> PostgreSQL:
    """initdb (trust auth, superuser POSTGRES_USER) into base/data, postgres on
    a free loopback port, and database POSTGRES_DATABASE."""
    bin_dir = postgres_bin()
    assert bin_dir is not None
    if os.geteuid() == 0:
        user = pwd.getpwnam(UNPRIVILEGED)
        os.chown(base, user.pw_uid, user.pw_gid)
    datadir = base / "data"
    subprocess.run([str(bin_dir / "initdb"), "-D", str(datadir), "-U", POSTGRES_USER,
                    "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   preexec_fn=_demote(), cwd=base)
    server = PostgreSQL(free_port(), datadir, base / "postgres.log", base)
    server.start()
    try:
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=server.port, user=POSTGRES_USER,
                             dbname="postgres", autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {POSTGRES_DATABASE}")
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def postgres() -> PostgreSQL:
    reason = postgres_missing()
    if reason:
        pytest.skip(reason)
    # Not under pytest's temp root: that is root's, mode 0700, and the server
    # runs as UNPRIVILEGED, which must reach its data directory.
    base = Path(tempfile.mkdtemp(prefix="reportupdater-postgres-"))
    try:
        server = start_postgres(base)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------ Prometheus-compatible stores


@dataclass
class MetricsStore:
    """A Prometheus-compatible store: write through remote write, read with
    the Prometheus query API."""

    kind: str                   # "victoria-metrics" or "prometheus"
    port: int
    base: Path
    command: list[str]
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def remote_write_url(self) -> str:
        return f"{self.url}/api/v1/write"

    def start(self) -> None:
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(self.command, stdout=log_file, stderr=subprocess.STDOUT,
                                            cwd=self.base)
        ready = "/health" if self.kind == "victoria-metrics" else "/-/ready"
        _wait_http(self.url + ready, self.process, self.log_path, self.kind)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def _get(self, path: str, parameters: dict[str, str | int]) -> dict:
        if self.kind == "victoria-metrics":
            # VictoriaMetrics answers from in-memory buffers a few seconds
            # late; /internal/force_flush makes what it took visible now.
            urllib.request.urlopen(self.url + "/internal/force_flush", timeout=30).read()
        query = urllib.parse.urlencode(parameters, doseq=True)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as response:
            answer = json.loads(response.read())
        assert answer["status"] == "success", answer
        return answer["data"]

    def query_range(self, expr: str, start: int, end: int, step: int) -> dict[tuple, dict[int, float]]:
        """{sorted label pairs: {timestamp s: value}} of a PromQL range query,
        as Grafana sends it (/api/v1/query_range)."""
        data = self._get("/api/v1/query_range", {"query": expr, "start": start, "end": end,
                                                  "step": step})
        return {tuple(sorted(series["metric"].items())):
                {int(float(t)): float(v) for t, v in series["values"]}
                for series in data["result"]}

    def label_values(self, label: str, metric: str) -> list[str]:
        """What Grafana's label_values(metric, label) lists."""
        return sorted(self._get(f"/api/v1/label/{label}/values", {"match[]": metric}))

    def raw_samples(self, metric: str, first: int, last: int) -> dict[tuple, dict[int, float]]:
        """{sorted label pairs: {timestamp s: value}}: the samples stored for
        `metric` from `first` to `last` (epoch seconds, inclusive), as stored
        (a range selector in an instant query: no step, no interpolation)."""
        # (first - 1, last + 1]: VictoriaMetrics leaves out a sample exactly at `time`.
        window = last - first + 2
        data = self._get("/api/v1/query", {"query": f"{metric}[{window}s]", "time": last + 1})
        found: dict[tuple, dict[int, float]] = {}
        for series in data["result"]:
            labels = tuple(sorted(series["metric"].items()))
            found[labels] = {int(float(t)): float(v) for t, v in series["values"]}
        return found


def _store_missing(program: str, package: str) -> str | None:
    if not find_program(program):
        return f"{program} is not installed (./run-tests installs Debian's {package})"
    return None


def start_victoria_metrics(base: Path) -> MetricsStore:
    port = free_port()
    command = [find_program("victoria-metrics") or "victoria-metrics",
               f"-storageDataPath={base / 'data'}", f"-httpListenAddr=127.0.0.1:{port}",
               "-retentionPeriod=100y",      # reports go back years
               # Identical timestamps keep one sample (see the tests for which).
               "-dedup.minScrapeInterval=1ms",
               "-search.latencyOffset=0s", "-search.disableCache"]
    store = MetricsStore("victoria-metrics", port, base, command, base / "victoria-metrics.log")
    store.start()
    return store


# Prometheus (2.42) takes a remote-written sample only when it is no older
# than the newest sample of its database minus the out-of-order window
# (`storage: tsdb: out_of_order_time_window:` in the config file, 2.39+);
# without a window that is about an hour ("HTTP 400 out of bounds"), beyond
# one it is "HTTP 500 too old sample". An empty head takes a first sample of
# any age. These tests use a 10-year window and dates of 2024 and 2026
# (what Prometheus does with a second value: docs/publishing.md).
PROMETHEUS_OOO_WINDOW = "3650d"


def start_prometheus(base: Path,
                     out_of_order_window: str | None = PROMETHEUS_OOO_WINDOW) -> MetricsStore:
    port = free_port()
    config = base / "prometheus.yml"
    storage = (f"storage:\n  tsdb:\n    out_of_order_time_window: {out_of_order_window}\n"
               if out_of_order_window else "")
    config.write_text(f"global:\n  scrape_interval: 1h\n{storage}scrape_configs: []\n")
    command = [find_program("prometheus") or "prometheus", f"--config.file={config}",
               f"--storage.tsdb.path={base / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
               "--web.enable-remote-write-receiver", "--storage.tsdb.retention.time=100y",
               "--log.level=warn"]
    store = MetricsStore("prometheus", port, base, command, base / "prometheus.log")
    store.start()
    return store


def prometheus_missing() -> str | None:
    return _store_missing("prometheus", "prometheus")


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory) -> MetricsStore:
    reason = _store_missing("victoria-metrics", "victoria-metrics")
    if reason:
        pytest.skip(reason)
    store = start_victoria_metrics(tmp_path_factory.mktemp("victoria-metrics"))
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory) -> MetricsStore:
    reason = prometheus_missing()
    if reason:
        pytest.skip(reason)
    store = start_prometheus(tmp_path_factory.mktemp("prometheus"))
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture
def prometheus_alone(tmp_path_factory) -> MetricsStore:
    """A Prometheus of the test's own: what Prometheus takes depends on the
    newest sample of its whole database, which other tests move."""
    reason = prometheus_missing()
    if reason:
        pytest.skip(reason)
    store = start_prometheus(tmp_path_factory.mktemp("prometheus-alone"))
    try:
        yield store
    finally:
        store.stop()


__all__ = ["MetricsStore", "PostgreSQL", "postgres", "prometheus", "prometheus_alone",
           "victoria_metrics"]
