# Shared helpers of the tests (`from testkit import ...`): query folders with
# real SQLite files and real executable scripts, the command line run
# in-process or in a subprocess, and small assertions on what it printed.
# Nothing is mocked. Fixtures and pytest hooks live in the conftest.py files;
# this is a plain module, importable from every test folder (pytest puts
# tests/ on sys.path for tests/conftest.py).

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import io
import json
import locale
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

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


def write_script(path: Path, text: str, dedent_text: bool = True) -> Path:
    """An executable script (the text starts with its #! line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text) if dedent_text else text, encoding="utf-8")
    path.chmod(0o755)
    return path


def make_folder(tmp_path: Path, config_text: str, files: dict[str, str] | None = None,
                scripts: dict[str, str] | None = None, name: str = "query",
                dedent_text: bool = True) -> Path:
    """A query folder tmp_path/name: config.yaml, plain files (templates, value
    lists) and executable scripts; file names may hold subfolders. Texts are
    dedented (and leading blank lines dropped) unless dedent_text=False, for
    tests whose texts must be written exactly (line numbers in messages)."""
    def shaped(text: str) -> str:
        return dedent(text) if dedent_text else text

    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(shaped(config_text), encoding="utf-8")
    for relative, text in (files or {}).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(shaped(text), encoding="utf-8")
    for relative, text in (scripts or {}).items():
        write_script(folder / relative, text, dedent_text)
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


# ------------------------------------------------------------- the command line

class CliResult(NamedTuple):
    """What a CLI call gave: `code, out, err = run_cli(...)` or `.returncode`."""
    returncode: int
    stdout: str
    stderr: str


# How many CLI calls ran each way in this session (printed at the end).
CLI_CALLS = {"in-process": 0, "subprocess": 0}

# Where a hang's traceback goes: the terminal pytest started on (set by
# tests/conftest.py, which can reach behind pytest's capture), else fd 2.
hang_report_fd: int | None = None


class CliTimeout(BaseException):
    """An in-process CLI call ran past its timeout. A BaseException, so that the
    library's `except Exception` does not take it for a failed interval."""


def run_cli(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> CliResult:
    """`reportupdater ARGS` in this process: cli.main(ARGS) with stdout and
    stderr captured at the file descriptors (logging, warnings and whatever a
    child process inherits included), `env` added to the environment and
    `cwd` as working directory for the call, SystemExit as the exit code.

    Each call starts as a fresh `python -m reportupdater` would: the process
    state the library sets or caches (logging, signal handlers, the signal
    mask, umask, environment, working directory, warning filters, the
    library's module-level caches) is reset before and restored after.

    A hang fails loudly: at `timeout` a CliTimeout is raised where the call
    is (the test fails with that traceback); if the call does not come back
    even then, faulthandler prints every thread's stack and ends pytest."""
    from reportupdater import cli

    argv = [str(arg) for arg in args]
    CLI_CALLS["in-process"] += 1
    with _hang_guard(argv, timeout), _as_fresh_process(argv, cwd, env), \
            _captured_output() as captured:
        try:
            code = cli.main(argv)
        except SystemExit as exit:  # what the interpreter would make of it
            if exit.code is None or isinstance(exit.code, int):
                code = exit.code or 0
            else:
                print(exit.code, file=sys.stderr)
                code = 1
    return CliResult(code, captured.stdout, captured.stderr)


# The subprocess runner exists for tests about what only a process of its own
# shows: signals sent to the run, a run killed or crashing, processes it starts
# or leaves behind, a lock held by another process (lockf locks do not
# conflict within one process, and closing any descriptor of the file drops
# them), interpreter start-up (`python -m`, the installed command, import
# time), pipes closed by the reader, resource limits of the process.
def run_cli_process(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
                    timeout: float = 60) -> CliResult:
    """`python -m reportupdater ARGS` in a subprocess, as cron runs it (env is
    added to this process's environment)."""
    CLI_CALLS["subprocess"] += 1
    process = subprocess.run([sys.executable, "-m", "reportupdater", *map(str, args)],
                             cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                             text=True, timeout=timeout)
    return CliResult(process.returncode, process.stdout, process.stderr)


def start_cli(*args: str | Path, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m reportupdater ARGS` started in the background."""
    CLI_CALLS["subprocess"] += 1
    return subprocess.Popen([sys.executable, "-m", "reportupdater", *map(str, args)],
                            cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# A fresh interpreter's warning filters (no -W, no PYTHONWARNINGS).
_FRESH_WARNING_FILTERS = (("default", DeprecationWarning, "__main__"),
                          ("ignore", DeprecationWarning, ""),
                          ("ignore", PendingDeprecationWarning, ""),
                          ("ignore", ImportWarning, ""),
                          ("ignore", ResourceWarning, ""))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """As a fresh interpreter shows a warning: on stderr (pytest records them)."""
    (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _as_fresh_process(argv: list[str], cwd: Path | None,
                      env: dict[str, str] | None) -> Iterator[None]:
    saved_environ = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_argv = sys.argv
    saved_umask = os.umask(0o022)
    os.umask(saved_umask)
    saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    saved_handlers = {number: signal.getsignal(number) for number in signal.valid_signals()
                      if signal.getsignal(number) is not None}
    saved_loggers = _logging_state()
    try:
        os.environ.update(env or {})
        if os.environ.get("TZ") != saved_environ.get("TZ"):
            time.tzset()
        if cwd is not None:
            os.chdir(cwd)
        sys.argv = ["reportupdater", *argv]
        _fresh_logging()
        _forget_library_state()
        with warnings.catch_warnings():
            warnings.resetwarnings()
            for action, category, module in reversed(_FRESH_WARNING_FILTERS):
                warnings.filterwarnings(action, category=category, module=module)
            warnings.showwarning = _show_warning
            yield
    finally:
        _restore_logging(saved_loggers)
        for number, handler in saved_handlers.items():
            if signal.getsignal(number) is not handler:
                signal.signal(number, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)
        os.umask(saved_umask)
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        tz_changed = os.environ.get("TZ") != saved_environ.get("TZ")
        for name in [name for name in os.environ if name not in saved_environ]:
            del os.environ[name]
        for name, value in saved_environ.items():
            if os.environ.get(name) != value:
                os.environ[name] = value
        if tz_changed:
            time.tzset()


def _forget_library_state() -> None:
    """Module-level state of the library that a fresh process would not have."""
    from reportupdater import atomic, intervals
    from reportupdater.processes import allow_commands
    # Folder listings are cached by (inode, mtime): a test that plants a temp
    # file within the timestamp granularity after a run would hit the cache.
    atomic._temp_files.clear()
    intervals._due.cache_clear()
    # A run stopped by an exception (a CliTimeout) refuses new commands until
    # the next run starts; `smoke` starts none, and would refuse its script.
    allow_commands()


def _cli_loggers() -> list[logging.Logger]:
    """The loggers a CLI call configures: the root and the library's. Others
    keep what importing their module set up (reportupdater.engines.hive gives
    "thrift" a NullHandler), as they would in a fresh process."""
    return [logging.getLogger(), *(logger for name, logger in logging.root.manager.loggerDict.items()
                                   if isinstance(logger, logging.Logger)
                                   and name.split(".")[0] == "reportupdater")]


def _logging_state() -> dict[logging.Logger, tuple]:
    return {logger: (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
            for logger in _cli_loggers()}


def _fresh_logging() -> None:
    """Logging as in a fresh interpreter: no handlers at the root (pytest's
    capture handlers are taken off, so a third-party WARNING reaches stderr
    through logging.lastResort, as it would), root at WARNING, the library's
    loggers untouched by earlier calls."""
    for logger in _cli_loggers():
        logger.handlers[:] = []
        logger.setLevel(logging.WARNING if logger is logging.root else logging.NOTSET)
        logger.propagate = True
        logger.disabled = False


def _restore_logging(state: dict[logging.Logger, tuple]) -> None:
    for logger in _cli_loggers():
        handlers, level, propagate, disabled = state.get(logger, ([], logging.NOTSET, True, False))
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
        logger.disabled = disabled


class _Captured:
    stdout = ""
    stderr = ""


@contextlib.contextmanager
def _captured_output() -> Iterator[_Captured]:
    """File descriptors 1 and 2 (and sys.stdout, sys.stderr on them, buffered
    as for a pipe) into temp files, decoded at the end as subprocess.run(...,
    text=True) decodes a pipe (locale encoding, universal newlines)."""
    encoding = locale.getpreferredencoding(False)
    captured = _Captured()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved_streams = (sys.stdout, sys.stderr)
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        saved_fds = (os.dup(1), os.dup(2))
        try:
            os.dup2(out_file.fileno(), 1)
            os.dup2(err_file.fileno(), 2)
            sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)),
                                          encoding=encoding)
            sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
                                          encoding=encoding, errors="backslashreplace",
                                          line_buffering=True)
            yield captured
        except BaseException as exc:  # the call raised: say what it printed
            _restore_output(saved_streams, saved_fds)
            captured.stdout, captured.stderr = _texts(out_file, err_file, encoding=encoding)
            exc.add_note(f"stdout of the CLI call:\n{captured.stdout}\nstderr:\n{captured.stderr}")
            raise
        else:
            _restore_output(saved_streams, saved_fds)
            captured.stdout, captured.stderr = _texts(out_file, err_file, encoding=encoding)
        finally:
            _restore_output(saved_streams, saved_fds)
            for descriptor in saved_fds:
                os.close(descriptor)


def _restore_output(streams: tuple, fds: tuple[int, int]) -> None:
    if sys.stdout is not streams[0]:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    sys.stdout, sys.stderr = streams
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)


def _texts(*files, encoding: str) -> list[str]:
    texts = []
    for file in files:
        file.seek(0)
        texts.append(io.TextIOWrapper(io.BytesIO(file.read()), encoding=encoding).read())
    return texts


HANG_GRACE_SECONDS = 30  # after the CliTimeout: how long unwinding may take before the hard stop


@contextlib.contextmanager
def _hang_guard(argv: list[str], timeout: float) -> Iterator[None]:
    def expire(signum, frame):
        raise CliTimeout(f"reportupdater {' '.join(argv)}: no end after {timeout:g} s")

    report_fd = hang_report_fd if hang_report_fd is not None else 2
    saved = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    faulthandler.dump_traceback_later(timeout + HANG_GRACE_SECONDS, exit=True, file=report_fd)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, saved)


# ------------------------------------------------------------- outputs

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


# ------------------------------------------------------------- test data

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
