# A live carbon-cache (PyPI's carbon + whisper) and graphite-web for the tests
# in this folder, started once per session on free loopback ports with their
# configuration, whisper files and logs in a temp dir; stopped by PID.

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from live_servers import free_port, stop_process

whisper = pytest.importorskip("whisper", reason="whisper is not installed (./run-tests installs it)")

BIN = Path(sys.executable).parent


@dataclass
class Carbon:
    host: str
    port: int
    base: Path
    process: subprocess.Popen | None
    log_path: Path

    @property
    def whisper_dir(self) -> Path:
        return self.base / "storage" / "whisper"

    def wsp(self, metric: str) -> Path:
        return self.whisper_dir.joinpath(*metric.split(".")).with_suffix(".wsp")

    def points(self, metric: str, start: int, end: int) -> dict[int, float]:
        """(timestamp, value) pairs stored between start and end (inclusive)."""
        path = self.wsp(metric)
        if not path.exists():
            return {}
        # whisper.fetch excludes the exact `from` second: start one earlier.
        (begin, _, step), values = whisper.fetch(str(path), start - 1, end + 1)
        return {begin + i * step: value for i, value in enumerate(values) if value is not None}

    def wait_for(self, metric: str, expected: dict[int, float], start: int, end: int,
                 seconds: float = 30) -> dict[int, float]:
        """Poll until the whisper file holds exactly `expected` (carbon writes lazily)."""
        deadline = time.monotonic() + seconds
        while True:
            found = self.points(metric, start, end)
            if found == expected or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def start(self) -> None:
        self.process = _start_carbon(self.base, self.port, self.log_path)


def _write_config(base: Path, port: int) -> Path:
    conf = base / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    for sub in ("storage/whisper", "log", "run"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (conf / "carbon.conf").write_text(f"""[cache]
STORAGE_DIR = {base}/storage
LOCAL_DATA_DIR = {base}/storage/whisper
WHISPER_DIR = {base}/storage/whisper
LOG_DIR = {base}/log
PID_DIR = {base}/run
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {port}
PICKLE_RECEIVER_PORT = 0
CACHE_QUERY_PORT = 0
ENABLE_UDP_LISTENER = False
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = inf
MAX_CREATES_PER_MINUTE = inf
WHISPER_AUTOFLUSH = True
LOG_LISTENER_CONN_SUCCESS = False
LOG_UPDATES = False
LOG_CREATES = False
""")
    # One point a day for twenty years: dates years back are kept.
    (conf / "storage-schemas.conf").write_text("[default]\npattern = .*\nretentions = 1d:20y\n")
    (conf / "storage-aggregation.conf").write_text(
        "[default]\npattern = .*\nxFilesFactor = 0\naggregationMethod = average\n")
    return conf / "carbon.conf"


def _carbon_logs(base: Path, log_path: Path) -> str:
    logs = log_path.read_text(errors="replace") if log_path.exists() else ""
    for extra in (base / "log").glob("**/*.log"):
        logs += extra.read_text(errors="replace")
    return logs


def _start_carbon(base: Path, port: int, log_path: Path) -> subprocess.Popen:
    config = _write_config(base, port)
    wanted = f"CarbonReceiverFactory starting on {port}"
    seen = _carbon_logs(base, log_path).count(wanted)  # a restart appends to the same logs
    log_file = open(log_path, "ab")
    process = subprocess.Popen(
        [sys.executable, str(BIN / "carbon-cache.py"), f"--config={config}", "--nodaemon",
         f"--logdir={base / 'log'}", f"--pidfile={base / 'run' / 'carbon.pid'}", "start"],
        stdout=log_file, stderr=subprocess.STDOUT, cwd=base,
        env=dict(os.environ, GRAPHITE_ROOT=str(base), GRAPHITE_CONF_DIR=str(config.parent),
                 GRAPHITE_STORAGE_DIR=str(base / "storage")))
    log_file.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = _carbon_logs(base, log_path)
        if logs.count(wanted) > seen:
            return process
        if process.poll() is not None:
            raise RuntimeError(f"carbon-cache exited:\n{logs[-3000:]}")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"carbon-cache did not start:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def carbon(tmp_path_factory) -> Carbon:
    base = tmp_path_factory.mktemp("carbon")
    port = free_port()
    server = Carbon("127.0.0.1", port, base, None, base / "carbon.out")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class GraphiteWeb:
    url: str
    process: subprocess.Popen

    def render(self, target: str, start: str, end: str) -> list[dict]:
        import json
        from urllib.parse import urlencode
        query = urlencode({"target": target, "from": start, "until": end, "format": "json"})
        with urllib.request.urlopen(f"{self.url}/render?{query}", timeout=30) as response:
            return json.loads(response.read())


@pytest.fixture(scope="session")
def graphite_web(carbon, tmp_path_factory) -> GraphiteWeb:
    pytest.importorskip("graphite", reason="graphite-web is not installed (./run-tests installs it)")
    base = tmp_path_factory.mktemp("graphite-web")
    (base / "log").mkdir()
    (base / "ru_graphite_settings.py").write_text(f"""
from graphite.settings import *  # noqa
SECRET_KEY = "tests-only"
STORAGE_DIR = {str(carbon.base / 'storage')!r}
WHISPER_DIR = {str(carbon.whisper_dir)!r}
STANDARD_DIRS = [WHISPER_DIR]
CERES_DIR = {str(base / 'ceres')!r}
RRD_DIR = {str(base / 'rrd')!r}
LOG_DIR = {str(base / 'log')!r}
INDEX_FILE = {str(base / 'index')!r}
CARBONLINK_HOSTS = []
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {str(base / 'graphite.db')!r}}}}}
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
DEBUG = False
""")
    env = dict(os.environ, PYTHONPATH=str(base), DJANGO_SETTINGS_MODULE="ru_graphite_settings",
               GRAPHITE_ROOT=str(base))
    subprocess.run([str(BIN / "django-admin"), "migrate", "--noinput", "-v", "0"], env=env, cwd=base,
                   check=True, capture_output=True)
    port = free_port()
    log_file = open(base / "web.log", "ab")
    process = subprocess.Popen([str(BIN / "django-admin"), "runserver", f"127.0.0.1:{port}",
                                "--noreload", "--nothreading"],
                               env=env, cwd=base, stdout=log_file, stderr=subprocess.STDOUT)
    log_file.close()
    web = GraphiteWeb(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{web.url}/render?target=x&format=json", timeout=5).read()
            break
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"graphite-web did not start:\n{(base / 'web.log').read_text()[-3000:]}") \
                    from None
            time.sleep(0.3)
    try:
        yield web
    finally:
        process.terminate()
        process.wait(timeout=30)
