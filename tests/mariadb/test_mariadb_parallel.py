"""max_connections against a live MariaDB: sessions counted on the server."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from live_servers import USER


def test_max_connections_is_never_exceeded(mariadb, tmp_path):
    creds = mariadb.creds_file(tmp_path)
    mariadb.execute("CREATE DATABASE IF NOT EXISTS log")
    folder = tmp_path / "queries"
    folder.mkdir()
    (folder / "config.yaml").write_text(f"""
databases:
  analytics:
    host: 127.0.0.1
    port: {mariadb.port}
    creds_file: {creds}
    db: log
    max_connections: 2
reports:
  slow:
    db: analytics
    granularity: days
    starts: 2026-01-01
""")
    (folder / "slow.sql").write_text("SELECT '{from_date}' AS date, SLEEP(0.4) AS slept\n")
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(mariadb.execute(
                "SELECT COUNT(*) FROM information_schema.processlist "
                f"WHERE user = '{USER}' AND info LIKE 'SELECT %SLEEP%'")[0][0])
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        done = subprocess.run([sys.executable, "-m", "reportupdater", "run", str(folder),
                               str(tmp_path / "out"), "--now", "2026-01-13T00:00", "--jobs", "8"],
                              capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
        watcher.join()
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "slow.tsv").read_text().count("\n") == 13
    assert max(seen) == 2, seen  # two at a time: parallel, and never more
