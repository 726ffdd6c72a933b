# Shared helpers for the runner tests: query folders with real SQLite files
# and real executable scripts, and the command line run in a subprocess, as
# cron runs it. Nothing is mocked.

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

# Test modules import these helpers with `from testkit import ...`: the name
# `conftest` is ambiguous, tests/mariadb/ has a conftest.py of its own, and
# pytest replaces sys.modules["conftest"] when it loads that one.
sys.modules["testkit"] = sys.modules[__name__]

# Every run passes --now, so the due intervals never depend on the clock.
NOW = "2026-01-05T05:00"  # a Monday; the last due day is 2026-01-04 (a Sunday)

# The interval's start as YYYY-MM-DD in SQLite, built from the MediaWiki
# timestamp placeholder that sql templates get (the original's only ones).
DATE_EXPR = ("substr('{from_timestamp}', 1, 4) || '-' || substr('{from_timestamp}', 5, 2)"
             " || '-' || substr('{from_timestamp}', 7, 2)")

SQLITE_DB = """\
databases:
  db:
    url: "sqlite:///data.db"
"""


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def write_script(path: Path, text: str) -> Path:
    """An executable script (the text starts with its #! line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text))
    path.chmod(0o755)
    return path


def make_folder(tmp_path: Path, config_text: str, files: dict[str, str] | None = None,
                scripts: dict[str, str] | None = None, name: str = "query") -> Path:
    """A query folder under tmp_path: config.yaml, plain files, executable scripts."""
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(dedent(config_text))
    for relative, text in (files or {}).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text))
    for relative, text in (scripts or {}).items():
        write_script(folder / relative, text)
    return folder


def make_db(path: Path, script: str) -> Path:
    """A real SQLite database file built from an SQL script."""
    connection = sqlite3.connect(path)
    try:
        connection.executescript(dedent(script))
        connection.commit()
    finally:
        connection.close()
    return path


def run_cli(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> tuple[int, str, str]:
    """`python -m reportupdater ARGS` in a subprocess: (returncode, stdout, stderr)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    process = subprocess.run([sys.executable, "-m", "reportupdater", *map(str, args)],
                             cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    return process.returncode, process.stdout, process.stderr


def start_cli(*args: str | Path, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m reportupdater ARGS` started in the background."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "reportupdater", *map(str, args)],
                            cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def tsv(*rows: str | tuple | list) -> str:
    """TSV text: each row is a string (tabs already in it) or a sequence of fields."""
    lines = [row if isinstance(row, str) else "\t".join(map(str, row)) for row in rows]
    return "\n".join(lines) + "\n"


def read(path: Path) -> str:
    """A file's exact text (line ends untouched)."""
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def files_under(folder: Path, hidden: bool = False) -> dict[str, str]:
    """Every file under folder (relative path -> exact text); {} when it does not
    exist. Hidden files (temp files, the runner's own bookkeeping) only with
    hidden=True: the outputs users read are the visible files."""
    if not folder.exists():
        return {}
    return {str(path.relative_to(folder)): read(path)
            for path in sorted(folder.rglob("*"))
            if path.is_file() and (hidden or not any(part.startswith(".")
                                                     for part in path.relative_to(folder).parts))}


def unspent(query_folder: Path, output_folder: Path) -> dict[str, str]:
    """The rerun requests of query_folder/.reruns/ that output_folder has not
    spent yet (name -> text): requests stay in .reruns/ and are spent per
    output folder (OUTPUT/.reportupdater-reruns.json)."""
    import hashlib
    import json
    progress_path = output_folder / ".reportupdater-reruns.json"
    entries = json.loads(progress_path.read_text())["requests"] if progress_path.exists() else {}
    found = {}
    for name, text in files_under(query_folder / ".reruns").items():
        request_id = f"{name}:{hashlib.sha1(text.encode()).hexdigest()[:12]}"
        if entries.get(request_id, {}).get("done") is not True:
            found[name] = text
    return found


def assert_failed(stderr: str, job: str, message: str) -> None:
    """stderr has the ERROR line of `job` (e.g. 'report 2026-01-02') failing with
    `message` (the end of the line); a note in parentheses may follow 'failed'."""
    pattern = re.compile(r" ERROR " + re.escape(job) + r": failed(?: \([^)]*\))?: "
                         + re.escape(message))
    assert any(pattern.search(line) for line in stderr.splitlines()), \
        f"no ERROR line for {job!r} failing with {message!r} in:\n{stderr}"


def wait_for(condition, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (PID 1 here may not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


# Edits with MediaWiki timestamps. Per day from 2026-01-01: 2, 1, 0, 3 edits
# (bytes 30, 5, -, 11; wikis 2, 1, 0, 2); weeks from Sunday 2025-11-30: 0, 0,
# 1, 1, 5; months from 2025-10: 1, 1, 4. The 2026-01-05 edit is never due at NOW.
EDITS = """\
CREATE TABLE edits (ts TEXT NOT NULL, wiki TEXT NOT NULL, kind TEXT NOT NULL, size INTEGER);
INSERT INTO edits VALUES
  ('20251031235959', 'enwiki', 'human', 1),
  ('20251101000000', 'dewiki', 'human', 2),
  ('20251215100000', 'enwiki', 'human', 4),
  ('20251227230000', 'dewiki', 'bot', 8),
  ('20251228000000', 'enwiki', 'human', 16),
  ('20251231235959', 'enwiki', 'human', 32),
  ('20260101080000', 'enwiki', 'human', 10),
  ('20260101090000', 'dewiki', 'human', 20),
  ('20260102120000', 'enwiki', 'bot', 5),
  ('20260104000000', 'enwiki', 'human', 7),
  ('20260104120000', 'enwiki', 'bot', 1),
  ('20260104235959', 'dewiki', 'bot', 3),
  ('20260105010000', 'enwiki', 'human', 100);
"""

# Edits of the interval, one row: date, edits.
DAILY_EDITS_SQL = (
    "SELECT " + DATE_EXPR + " AS date, COUNT(*) AS edits\n"
    "FROM edits\n"
    "WHERE ts >= '{from_timestamp}' AND ts < '{to_timestamp}'\n")

# One row per wiki (enwiki before dewiki); no row at all for a day without edits.
PER_WIKI_SQL = (
    "SELECT " + DATE_EXPR + " AS date, wiki, COUNT(*) AS edits\n"
    "FROM edits\n"
    "WHERE ts >= '{from_timestamp}' AND ts < '{to_timestamp}'\n"
    "GROUP BY wiki\n"
    "ORDER BY wiki DESC\n")


def make_edits_db(folder: Path, extra_sql: str = "") -> Path:
    """folder/data.db holding EDITS (plus extra statements)."""
    return make_db(folder / "data.db", EDITS + extra_sql)


def sql(folder: Path, statements: str) -> None:
    """Change the data of folder/data.db."""
    make_db(folder / "data.db", statements)
