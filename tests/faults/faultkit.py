# Helpers of the fault-injection tests (`from faultkit import ...`): tmpfs
# mounts, library runs forked from a zygote and killed for real, and looks
# at the output folder's lock from outside a run. Fixtures are in conftest.py.

from __future__ import annotations

import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# ------------------------------------------------------------- mounts

def mount_tmpfs(folder: Path, size: str = "64k") -> None:
    """A small tmpfs at folder, or skip (with the reason) where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8) (CI and developer machines have both)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def remount_read_only(folder: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount {folder} read-only here: {done.stderr.strip()}")


def unmount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], capture_output=True)


# ------------------------------------------------------------- forked runs

# Forks one library run (runner.run with RunOptions) per line read, naming
# the output folder; answers the child's PID, then its wait status. The
# zygote has imported everything once (pandas alone takes most of a second),
# so a random delay after the fork falls inside the run's work, not inside
# `import`; the child is a real process, killed by a real SIGKILL.
ZYGOTE = r"""
import logging, os, sys, traceback
from pathlib import Path
from reportupdater.cli import parse_now, setup_logging
from reportupdater.runner import RunOptions, run
import reportupdater.engines.script, reportupdater.engines.sql, reportupdater.processes
import pymysql, sqlalchemy.dialects.mysql.pymysql, sqlalchemy.dialects.sqlite.pysqlite
folder, now, checkpoint, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print("ready", flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            setup_logging("info")
            logging.getLogger("reportupdater").info("run %d into %s", os.getpid(), line.strip())
            code = run(RunOptions(Path(folder), Path(line.strip()), now=parse_now(now),
                                  checkpoint_intervals=checkpoint, jobs=jobs)).exit_code
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


class Zygote:
    def __init__(self, folder: Path, now: str, log: Path, checkpoint_intervals: int = 1000,
                 jobs: int = 1):
        self.folder = folder
        self.log_path = log
        self.log = open(log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, str(folder), now, str(checkpoint_intervals), str(jobs)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        self.buffer = b""
        assert self.line(60) == "ready", f"the zygote did not start; see {log}"

    def line(self, timeout: float) -> str | None:
        """The next line the zygote prints, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.process.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.process.stdout.fileno(), 4096)
            assert chunk, f"the zygote died; see {self.log_path}"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def start(self, out: Path) -> int:
        self.process.stdin.write(f"{out}\n".encode())
        self.process.stdin.flush()
        return int(self.line(30))

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.log.close()


def kill_library(zygote: Zygote, out: Path, delay: float) -> tuple[int | None, str]:
    """A forked library run, SIGKILLed `delay` s after it started; returns once
    it is dead and reaped: (its exit code if it ended before the kill, else
    None; the end of the zygote's log)."""
    pid = zygote.start(out)
    status = zygote.line(delay)
    if status is None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # ended in between: its status is on the way
            pass
        status = zygote.line(60)
    assert status is not None, f"run {pid} did not end; see {zygote.log_path}"
    wait_status = int(status)
    if os.WIFSIGNALED(wait_status):
        assert os.WTERMSIG(wait_status) == signal.SIGKILL
        return None, ""
    return os.WEXITSTATUS(wait_status), zygote.log_path.read_text(errors="replace")[-3000:]


# ------------------------------------------------------------- the folder lock

def lock_is_free(output_folder: Path) -> bool:
    """Whether a run could take the output folder's lock now (the same lockf);
    True when there is no lock file yet."""
    try:
        descriptor = os.open(output_folder / ".reportupdater.lock", os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return True
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    finally:
        os.close(descriptor)  # also releases it
    return True


def wait_lock_free(output_folder: Path, timeout: float = 10) -> float:
    """Seconds waited until the output folder's lock was free (0.0 when it was)."""
    started = time.monotonic()
    if lock_is_free(output_folder):
        return 0.0
    while not lock_is_free(output_folder):
        assert time.monotonic() - started < timeout, f"{output_folder}: the lock stays held"
        time.sleep(0.0005)
    return time.monotonic() - started
