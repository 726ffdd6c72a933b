# Stage 3 of 5: execution. The `script` engine.
#
# Runs a report's executable as `SCRIPT START END [V1 V2 ...] FOLDER` (dates
# YYYY-MM-DD, explode values ordered by placeholder name, last the folder
# holding the script), with the query folder as working directory, and parses
# the TSV it prints. May touch: the script's process group (started, and
# killed whole at the timeout). A non-zero exit, a timeout or unparseable
# output is a failure of that interval.

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from ..config import DEFAULT_TIMEOUT_SECONDS
from ..intervals import DAY_LABEL, HOUR_LABEL
from .base import Engine, EngineError, Job, Result, build_result
from .deadlines import watchdog

log = logging.getLogger(__name__)


def parse_tsv(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of TSV text; \\n or \\r\\n line ends; blank lines ignored."""
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    lines = [line for line in lines if line != ""]
    if not lines:
        return [], []
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def script_argv(script: Path, job: Job) -> list[str]:
    """SCRIPT START END [V1 V2 ...] FOLDER: dates local to the report's time
    zone (full hours for hourly reports), explode values by placeholder name."""
    shape = HOUR_LABEL if job.interval.hourly else DAY_LABEL
    return ([str(script), job.interval.start.strftime(shape), job.interval.end.strftime(shape)]
            + [value for _, value in job.explode]
            + [str(script.parent)])


def script_ready(script: Path, job: Job, cwd: Path) -> bool:
    """A `ready_when: {script: ...}` check: exit 0 = ready, anything else = not yet."""
    try:
        run_command(script_argv(script, job), cwd, job.report.timeout or DEFAULT_TIMEOUT_SECONDS,
                    job.describe(), "ready_when script")
        return True
    except EngineError as exc:
        log.info("%s: not ready: %s", job.describe(), exc)
        return False


class ScriptEngine(Engine):
    type = "script"

    def argv(self, job: Job) -> list[str]:
        assert job.report.script_path is not None  # config guarantees it for script reports
        return script_argv(job.report.script_path, job)

    def run(self, job: Job) -> Result:
        stdout = run_command(self.argv(job), self.query_folder,
                             job.report.timeout or DEFAULT_TIMEOUT_SECONDS, job.describe(), "script")
        header, rows = parse_tsv(stdout)
        if not header:
            raise EngineError("script printed nothing (a header line is required)")
        return build_result(header, rows, job.interval)


# Commands running now, so that a run stopped by a signal can kill them, and
# whether it was stopped: a worker thread may be starting a command just then.
_running: set[subprocess.Popen] = set()
_running_lock = threading.Lock()
_stopping = False

# A run killed with SIGKILL cannot clean up: a small reaper process, started
# with the first command, waits for the end of a pipe from the run, which
# comes when the run is gone, and then kills the process groups still alive.
# It learns them from a log file that the run appends to ("+group" when a
# command starts, "-group" when it ends, emptied when none runs). The reaper
# reads it only at the end: a message through the pipe per command woke the
# reaper, which then competed for the CPU with the command starting.
_REAPER = """
import os, signal, sys
sys.stdin.buffer.read()  # returns at the end of the pipe: the run is gone
log = int(sys.argv[1])
alive = set()
for line in os.pread(log, os.fstat(log).st_size, 0).decode().split():
    (alive.add if line[0] == "+" else alive.discard)(int(line[1:]))
for group in alive:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""
_reaper: subprocess.Popen | None = None
_reaper_log: int | None = None  # descriptor of an unlinked temp file, append-only


def _tell_reaper(line: str) -> None:
    """Log a command's start (+group) or end (-group) for the reaper.
    Called with _running_lock held, after _running was updated."""
    global _reaper, _reaper_log
    try:
        if _reaper is None or _reaper.poll() is not None:
            if line.startswith("-"):
                return  # no reaper to tell: nothing it would have to kill
            if _reaper_log is None:
                _reaper_log, path = tempfile.mkstemp(prefix="reportupdater-reaper-")
                os.unlink(path)
                fcntl.fcntl(_reaper_log, fcntl.F_SETFL, os.O_APPEND)
            _reaper = subprocess.Popen([sys.executable, "-c", _REAPER, str(_reaper_log)],
                                       stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, pass_fds=(_reaper_log,),
                                       start_new_session=True)
        assert _reaper_log is not None
        if line.startswith("-") and not _running:
            os.ftruncate(_reaper_log, 0)  # nothing runs: start the log over
        else:
            os.write(_reaper_log, f"{line}\n".encode())
    except OSError as exc:  # no reaper: orphans possible after a SIGKILL, nothing worse
        log.debug("reaper unavailable: %s", exc)


def allow_commands() -> None:
    """A run starts: commands may run (again, after kill_running_commands)."""
    global _stopping
    with _running_lock:
        _stopping = False


def kill_running_commands() -> None:
    """Kill every command started by run_command that is still running, and
    any that starts from now on until allow_commands()."""
    global _stopping
    with _running_lock:
        _stopping = True
        processes = list(_running)
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_command(argv: list[str], cwd: Path, timeout: float, describe: str, what: str) -> str:
    """Run a command in a session of its own and return its stdout as text.

    Raises EngineError on a non-zero exit (with stderr's last line), on a
    timeout (the whole process group is killed) or on output that is not
    UTF-8. stderr goes to the log.
    """
    try:
        # A session of its own, so a timeout kills the command's children too.
        # PYTHONDONTWRITEBYTECODE: a Python script importing a module beside
        # it would write __pycache__/ into the query folder (a checkout).
        process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True,
                                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    except OSError as exc:
        raise EngineError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    with _running_lock:
        stopping = _stopping
        if not stopping:
            _running.add(process)
            _tell_reaper(f"+{process.pid}")
    if stopping:
        _kill_group(process)
        raise EngineError(f"{what} not run: the run is stopping")
    # The watchdog kills the group at the timeout. communicate(timeout=...)
    # would poll the exit with growing sleeps, and a timer thread per command
    # costs a thread start: both doubled the time of short scripts run one by one.
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    cancel_timeout = watchdog.call_after(timeout, expire)
    try:
        stdout, stderr = process.communicate()
        if timed_out.is_set():
            process.wait()
            raise EngineError(f"{what} timed out after {timeout:g} s and was killed")
    except BaseException:
        _kill_group(process)
        raise
    finally:
        cancel_timeout()
        with _running_lock:
            _running.discard(process)
            _tell_reaper(f"-{process.pid}")
    errors = stderr.decode("utf-8", errors="replace").strip()
    if process.returncode != 0:
        if errors:
            log.warning("%s: %s stderr:\n%s", describe, what, errors)
        last = errors.splitlines()[-1] if errors else "no output on stderr"
        how = (f"killed by signal {-process.returncode}" if process.returncode < 0
               else f"exited with status {process.returncode}")
        raise EngineError(f"{what} {how}: {last}")
    if errors:
        log.info("%s: %s stderr:\n%s", describe, what, errors)
    try:
        return stdout.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EngineError(f"{what} output is not UTF-8 (byte {exc.start})") from None


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
