# Stage 3 of 5: execution. Process supervision for every engine and the runner.
#
# run_command runs one command (a report's script, a readiness script, a
# Hive command line) in a session of its own and returns its stdout;
# start_command starts one, and its wait() returns the stdout. May
# touch: the command's process group (started, and killed whole at the
# timeout and when the command exits), processes outside it that still hold
# its stdout or stderr once it has exited (killed), and a reaper process
# that kills the groups left alive when the run itself is SIGKILLed. The
# runner stops every running command with kill_running_commands when it is
# stopped by a signal.

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from collections.abc import Mapping

from .datatypes import EngineError
from .deadlines import watchdog

log = logging.getLogger(__name__)


# Commands running now, so that a run stopped by a signal can kill them, and
# whether it was stopped: a worker thread may be starting a command just then.
_running: set[_Command] = set()
_running_lock = threading.Lock()
_stopping = False
# Held while a process is started (Popen returns once the child has exec'd):
# a fork by another worker meanwhile would give its child, until its exec,
# copies of this command's pipe ends, and the command's output would look
# held open by a process it left running. Taken after _running_lock, never
# before it.
_spawn_lock = threading.Lock()

# A run killed with SIGKILL cannot clean up: a small reaper process, started
# with the first command, waits for the end of a pipe from the run, which
# comes when the run is gone, and then kills the process groups still alive.
# It learns them from a file the run shares with it, mapped into the run's
# memory: a slot per running command holds its group's ID (0: free), so
# that telling the reaper costs no system call. It reads the file only at
# the end: a message through the pipe per command woke the reaper, which
# then competed for the CPU with the command starting.
_REAPER = """
import os, signal, sys
sys.stdin.buffer.read()  # returns at the end of the pipe: the run is gone
slots = int(sys.argv[1])
data = os.pread(slots, os.fstat(slots).st_size, 0)
for group in set(memoryview(data[:len(data) // 4 * 4]).cast("i")) - {0}:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""
_SLOT = struct.Struct("i")
_REAPER_FIRST_SLOTS = 1024  # doubled whenever more commands run at once
_reaper: subprocess.Popen | None = None
_reaper_slots: mmap.mmap | None = None  # an unlinked temp file, shared with the reaper
_reaper_descriptor = -1                 # that file's descriptor, passed to the reaper
_reaper_checked = 0.0                   # when the reaper was last seen running (time.monotonic)
_reaper_free: list[int] = []            # offsets of free slots


def _reaper_watch(command: _Command) -> None:
    """Tell the reaper of a command's group (called with _running_lock held).
    The slot is the command's, not its PID's: once a command is reaped,
    another may get its PID before the first one's slot is cleared."""
    global _reaper, _reaper_slots, _reaper_descriptor, _reaper_checked
    try:
        # Whether the reaper still runs (killed by someone: start another)
        # is asked at most once a second, not per command.
        now = time.monotonic()
        if _reaper is not None and now - _reaper_checked >= 1.0:
            _reaper_checked = now
            if _reaper.poll() is not None:
                _reaper = None
        if _reaper is None:
            if _reaper_slots is None:
                descriptor, path = tempfile.mkstemp(prefix="reportupdater-reaper-")
                os.unlink(path)
                size = _REAPER_FIRST_SLOTS * _SLOT.size
                os.ftruncate(descriptor, size)
                _reaper_slots, _reaper_descriptor = mmap.mmap(descriptor, size), descriptor
                _reaper_free[:] = range(size - _SLOT.size, -1, -_SLOT.size)
            with _spawn_lock:
                _reaper = subprocess.Popen([sys.executable, "-c", _REAPER, str(_reaper_descriptor)],
                                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, pass_fds=(_reaper_descriptor,),
                                           start_new_session=True)
        slots = _reaper_slots
        assert slots is not None
        if not _reaper_free:  # more commands at once than slots: twice the slots
            size = len(slots)
            slots.resize(2 * size)
            _reaper_free.extend(range(2 * size - _SLOT.size, size - 1, -_SLOT.size))
        offset = command.reaper_slot = _reaper_free.pop()
        _SLOT.pack_into(slots, offset, command.process.pid)
    except (OSError, ValueError) as exc:  # no reaper: orphans possible after a SIGKILL, nothing worse
        log.debug("reaper unavailable: %s", exc)


def _reaper_forget(command: _Command) -> None:
    """The command's group is gone (called with _running_lock held)."""
    offset, command.reaper_slot = command.reaper_slot, None
    if offset is not None and _reaper_slots is not None:
        _SLOT.pack_into(_reaper_slots, offset, 0)
        _reaper_free.append(offset)


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
        commands = list(_running)
    for command in commands:
        command.kill_group()


# A command's interval ends when the command itself exits, whatever it left
# running: a background child (`sleep 999 &`, `nohup ... &`, a daemon that
# double-forks, `setsid ...`) that inherited stdout or stderr would otherwise
# keep the pipe open, and reading it to its end would wait for that child.
# After the exit, what the command wrote is already in the pipe (a write ends
# before the writer can exit) and is read in full; the processes it left
# running are killed (its process group, then whoever still holds a pipe's
# write end, setsid children included). Output arriving after the exit means
# a child was still writing: the interval fails rather than store a result
# cut short wherever the kill fell.
OUTPUT_SETTLE_SECONDS = 0.5  # stdout held by a child: how long it must stay quiet before the kill
PIPE_CLOSE_SECONDS = 2.0     # after the kills: how long the pipes may take to reach their end
_READ_BYTES = 65536
_DRAIN_READS = 64            # 4 MiB: more than any pipe holds; beyond that someone is writing
_EXIT_POLL_MS = 100          # without pidfd_open: how often a running command's exit is checked


class _Command:
    """One started command: its process group and the kill of it, safe from
    any thread until the command is reaped (its PID, hence its group's ID,
    cannot be reused before that)."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.timed_out = False
        self._guard = threading.Lock()
        self._exited = False  # seen to exit, not reaped: the timeout no longer applies
        self._reaped = False
        self.reaper_slot: int | None = None  # its slot in the reaper's file (_reaper_watch)

    def kill_group(self) -> None:
        with self._guard:
            if not self._reaped:
                _signal_group(self.process.pid)

    def expire(self) -> None:
        """The timeout: kill the group, unless the command exited in time."""
        with self._guard:
            if not self._exited:
                self.timed_out = True
                _signal_group(self.process.pid)

    def exited(self) -> None:
        with self._guard:
            self._exited = True

    def kill_group_and_reap(self) -> None:
        """Kill what is left of the group (the command has exited or is
        being killed), then reap the command."""
        with self._guard:
            if not self._reaped:
                _signal_group(self.process.pid)
                self._reaped = True
        self.process.wait()


def _signal_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


class _Output:
    """A command's stdout and stderr, read as they come, without threads."""

    def __init__(self, process: subprocess.Popen):
        assert process.stdout is not None and process.stderr is not None
        self.pid = process.pid
        self.stdout = process.stdout.fileno()
        self.stderr = process.stderr.fileno()
        self._files = (process.stdout, process.stderr)
        self.chunks: dict[int, list[bytes]] = {self.stdout: [], self.stderr: []}
        self.open = {self.stdout, self.stderr}
        self.late = False  # stdout data read after the command had exited and been drained
        self.held_at_exit: list[str] = []  # the pipes a process it left running held open
        self._poller = select.poll()
        for fd in self.open:
            os.set_blocking(fd, False)
            self._poller.register(fd, select.POLLIN)
        self._exit_fd = _open_exit_fd(process.pid)
        if self._exit_fd is not None:
            self._poller.register(self._exit_fd, select.POLLIN)

    def text(self, fd: int) -> bytes:
        return b"".join(self.chunks[fd])

    def _read(self, fd: int) -> int:
        """One read from a pipe that polled ready: the bytes read (0 at its end)."""
        try:
            data = os.read(fd, _READ_BYTES)
        except BlockingIOError:
            return 0
        if data:
            self.chunks[fd].append(data)
        else:
            self._poller.unregister(fd)
            self.open.discard(fd)
        return len(data)

    def read_until_exit(self) -> None:
        """Read both pipes until the command exits (left unreaped), then what
        it left in them."""
        while True:
            if self._exit_fd is not None:
                events = self._poller.poll()
                if any(fd == self._exit_fd for fd, _ in events):
                    break
            elif self.open:
                events = self._poller.poll(_EXIT_POLL_MS)
            else:
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
                break
            for fd, _ in events:
                self._read(fd)
            if self._exit_fd is None and _has_exited(self.pid):
                break
        # Everything it wrote is in the pipes now; more than any pipe holds
        # means a process it left running is writing.
        for fd in list(self.open):
            for _ in range(_DRAIN_READS):
                try:
                    data = os.read(fd, _READ_BYTES)
                except BlockingIOError:
                    break
                if not data:
                    self._poller.unregister(fd)
                    self.open.discard(fd)
                    break
                self.chunks[fd].append(data)
            else:
                self.late = self.late or fd == self.stdout
        if self._exit_fd is not None:
            self._poller.unregister(self._exit_fd)
            os.close(self._exit_fd)
            self._exit_fd = None
        self.held_at_exit = self._names(self.open)

    def _names(self, fds: set[int]) -> list[str]:
        return [name for fd, name in ((self.stdout, "stdout"), (self.stderr, "stderr")) if fd in fds]

    def _read_for(self, seconds: float, until_late: bool) -> None:
        """Read what comes for up to `seconds`, or until the pipes end (or,
        with until_late, until stdout brings anything)."""
        deadline = time.monotonic() + seconds
        while self.open and not (until_late and self.late):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for fd, _ in self._poller.poll(left * 1000):
                if self._read(fd) and fd == self.stdout:
                    self.late = True

    def settle(self) -> None:
        """The command exited with stdout still open: a process it left
        running holds it. Watch a moment, before the kill, whether that one
        writes."""
        if self.stdout in self.open:
            self._read_for(OUTPUT_SETTLE_SECONDS, until_late=True)

    def finish(self, describe: str, what: str) -> None:
        """After the command's group was killed: kill the processes that
        escaped it (setsid) and still hold a pipe, read to the pipes' end for
        a bounded time, and stop reading what is still held then."""
        if self.open:
            _kill_pipe_holders(self.open)
            self._read_for(PIPE_CLOSE_SECONDS, until_late=False)
        if self.held_at_exit:
            held = " and ".join(self.held_at_exit)
            if self.open:
                log.warning("%s: %s exited, leaving a process running that holds its %s: "
                            "no longer read", describe, what, " and ".join(self._names(self.open)))
            else:
                log.warning("%s: %s exited, leaving a process running that held its %s: killed",
                            describe, what, held)

    def close(self) -> None:
        if self._exit_fd is not None:
            os.close(self._exit_fd)
            self._exit_fd = None
        for file in self._files:
            file.close()


def _open_exit_fd(pid: int) -> int | None:
    """A descriptor that polls readable when the process exits (Linux >= 5.3)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    """Whether the child has exited, leaving it unreaped."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_pipe_holders(fds: set[int]) -> set[int]:
    """Kill the processes, other than this one, that hold the other end of
    these pipes: what a command left running outside its process group.
    Found in /proc (nothing is found where there is none). A child of this
    process still running this program is skipped: forked by another worker
    to start its command, it holds copies of every descriptor until its exec.
    (Other children are orphans given to this process when it is PID 1.)"""
    try:
        targets = {f"pipe:[{os.fstat(fd).st_ino}]" for fd in fds}
        entries = os.listdir("/proc")
        program = os.readlink("/proc/self/exe")
    except OSError:
        return set()
    me = os.getpid()
    killed = set()
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        if not _holds(pid, targets) or (_parent(pid) == me and _program(pid) == program):
            continue
        pidfd = _open_exit_fd(pid)  # pins the process, then it is checked again:
        try:                        # a PID freed and reused meanwhile holds no pipe of ours
            if pidfd is not None and _holds(pid, targets):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                killed.add(pid)
            elif pidfd is None:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        except OSError:
            pass  # gone meanwhile, or not ours to kill
        finally:
            if pidfd is not None:
                os.close(pidfd)
    return killed


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _program(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def _holds(pid: int, targets: set[str]) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                return True
        except OSError:
            continue
    return False


def child_environment() -> dict[str, str] | None:
    """The environment commands run with: this process's, and
    PYTHONDONTWRITEBYTECODE, so that a Python script importing a module
    beside it does not write __pycache__/ into the query folder (a checkout).
    None when this process's own is that already (the command line sets it
    at start): a command given None inherits it, where a dict would be
    encoded anew for every command, a tenth of a trivial script's spawn."""
    if os.environ.get(_NO_BYTECODE) == "1":
        return None
    return {**os.environ, _NO_BYTECODE: "1"}


_NO_BYTECODE = "PYTHONDONTWRITEBYTECODE"


def inherit_child_environment() -> None:
    """Make this process's environment the one commands run with (see
    child_environment). For a program's entry point: it changes the process."""
    os.environ[_NO_BYTECODE] = "1"


def run_command(argv: list[str], cwd: Path, timeout: float, describe: str, what: str,
                env: Mapping[str, str] | None = None) -> str:
    """Run a command in a session of its own and return its stdout as text:
    start_command(...).wait()."""
    return start_command(argv, cwd, timeout, describe, what, env).wait()


def start_command(argv: list[str], cwd: Path, timeout: float, describe: str, what: str,
                  env: Mapping[str, str] | None = None) -> RunningCommand:
    """Start a command in a session of its own; its wait() returns its stdout
    as text. Between the two the caller may do other work (the runner merges
    the previous result), but must call wait() in the end, also when it is
    stopping (the command is then killed already, and wait() reaps it).
    Keep that work short: the pipes are read only in wait(), so output a
    process the command left running writes after its exit but before the
    wait counts as the command's own (see above).

    env: child_environment() when not given (an engine running thousands of
    commands passes the one it built for the run).

    The command is done when it exits: the processes it left running are
    killed and its pipes are not waited on any longer (see above). wait()
    raises EngineError on a non-zero exit (with stderr's last line), on a
    timeout (the whole process group is killed), on output still arriving
    after the exit, or on output that is not UTF-8. stderr goes to the log.
    """
    try:
        # A session of its own, so a timeout kills the command's children too.
        with _spawn_lock:
            process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       start_new_session=True,
                                       env=env if env is not None else child_environment())
    except OSError as exc:
        raise EngineError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    command = _Command(process)
    with _running_lock:
        stopping = _stopping
        if not stopping:
            _running.add(command)
            _reaper_watch(command)
    if stopping:
        command.kill_group_and_reap()
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]
        raise EngineError(f"{what} not run: the run is stopping")
    return RunningCommand(command, timeout, describe, what)


class RunningCommand:
    """A command start_command started; wait() once."""

    def __init__(self, command: _Command, timeout: float, describe: str, what: str):
        self._command = command
        self._timeout = timeout
        self._describe = describe
        self._what = what
        # The watchdog kills the group at the timeout. communicate(timeout=...)
        # would poll the exit with growing sleeps, and a timer thread per command
        # costs a thread start: both doubled the time of short scripts run one by one.
        self._cancel_timeout = watchdog.call_after(timeout, command.expire)

    def wait(self) -> str:
        command, describe, what = self._command, self._describe, self._what
        process = command.process
        output = None
        try:
            output = _Output(process)
            output.read_until_exit()
            command.exited()
            if not command.timed_out and not _stopping:
                output.settle()
            command.kill_group_and_reap()
            output.finish(describe, what)
        except BaseException:  # the run is stopping (a signal), or a bug: kill what runs
            command.kill_group_and_reap()
            if output is not None and output.open:
                _kill_pipe_holders(output.open)
            raise
        finally:
            self._cancel_timeout()
            if output is not None:
                output.close()
            else:
                process.stdout.close()  # type: ignore[union-attr]
                process.stderr.close()  # type: ignore[union-attr]
            with _running_lock:
                _running.discard(command)
                _reaper_forget(command)
        if command.timed_out:
            raise EngineError(f"{what} timed out after {self._timeout:g} s and was killed")
        errors = output.text(output.stderr).decode("utf-8", errors="replace").strip()
        if process.returncode != 0:
            if errors:
                log.warning("%s: %s stderr:\n%s", describe, what, errors)
            last = errors.splitlines()[-1] if errors else "no output on stderr"
            how = (f"killed by signal {-process.returncode}" if process.returncode < 0
                   else f"exited with status {process.returncode}")
            raise EngineError(f"{what} {how}: {last}")
        if errors:
            log.info("%s: %s stderr:\n%s", describe, what, errors)
        if output.late:
            raise EngineError(f"{what} exited while a process it left running was still writing "
                              "to its stdout: the output may be incomplete (wait for background "
                              "processes before exiting)")
        try:
            return output.text(output.stdout).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EngineError(f"{what} output is not UTF-8 (byte {exc.start})") from None
