# Stuck work: a script that hangs, with a child of its own, is killed at its
# `timeout` together with its whole process group; a run killed with
# SIGKILL leaves no script behind (the reaper process kills the groups of
# the commands it was told about as soon as the run's end of its pipe
# closes); and the folder lock, an flock, is released by the kernel with
# the dead process, so the next run starts at once.

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

# The CLI in a subprocess (run_cli_process): stuck runs are signalled and killed.
from testkit import NOW, files_under, make_folder, process_alive, run_cli_process, start_cli, tsv, wait_for

from faultkit import Zygote, kill_library, lock_is_free, wait_lock_free

# Records its PID and its child's, then waits for the child (60 s), unless
# HANG is unset. `sleep 60 &` stays in the script's process group.
HANGS = """\
#!/bin/sh
if [ -n "$HANG" ]; then
  pids="$(dirname "$0")/pids"
  sleep 60 &
  echo "$$ $!" > "$pids/.$3" && mv "$pids/.$3" "$pids/$3"
  wait
fi
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""

FINE = """\
#!/bin/sh
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""


def pids_of(folder: Path) -> list[int]:
    return [int(pid) for path in sorted((folder / "pids").glob("[!.]*"))
            for pid in path.read_text().split()]


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_script_over_its_timeout_is_killed_with_its_children(tmp_path):
    config = """\
reports:
  hangs:
    type: script
    granularity: days
    starts: 2026-01-04
    timeout: 1
    explode_by:
      wiki: enwiki
  fine:
    type: script
    granularity: days
    starts: 2026-01-04
"""
    folder = make_folder(tmp_path, config, scripts={"hangs": HANGS, "fine": FINE})
    (folder / "pids").mkdir()
    out = tmp_path / "out"
    try:
        started = time.monotonic()
        code, _, stderr = run_cli_process("run", folder, out, "--now", NOW, env={"HANG": "1"})
        elapsed = time.monotonic() - started

        assert code == 1, stderr
        assert "ERROR hangs wiki=enwiki 2026-01-04: failed: script timed out after 1 s and was killed" \
            in stderr, stderr
        assert elapsed < 6, elapsed  # 1 s of timeout and the interpreter's start, not 60 s
        pids = pids_of(folder)
        assert len(pids) == 2  # the script and its `sleep 60`
        assert wait_for(lambda: not any(process_alive(pid) for pid in pids), timeout=1), \
            [pid for pid in pids if process_alive(pid)]
        assert files_under(out) == {"fine.tsv": tsv("date\tvalue", "2026-01-04\t1")}
    finally:
        kill_all(pids_of(folder))


def test_run_killed_with_sigkill_leaves_no_script_running_and_no_lock(tmp_path):
    config = """\
reports:
  hangs:
    type: script
    granularity: days
    starts: 2026-01-04
    explode_by:
      wiki: w1, w2, w3, w4
"""
    folder = make_folder(tmp_path, config, scripts={"hangs": HANGS})
    (folder / "pids").mkdir()
    out = tmp_path / "out"
    run = start_cli("run", folder, out, "--now", NOW, "-j", "4", env={"HANG": "1"})
    try:
        # Four scripts at once, each with its child.
        assert wait_for(lambda: len(pids_of(folder)) == 8, timeout=30), pids_of(folder)
        pids = pids_of(folder)
        assert all(process_alive(pid) for pid in pids)

        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        killed = time.monotonic()
        assert wait_for(lambda: not any(process_alive(pid) for pid in pids), timeout=2, interval=0.01), \
            f"still running 2 s after the run was killed: {[pid for pid in pids if process_alive(pid)]}"
        reaped_after = time.monotonic() - killed

        # The dead run's lock is no obstacle: the next run starts and finishes at once.
        code, _, stderr = run_cli_process("run", folder, out, "--now", NOW, "-l", "info")
        assert code == 0, stderr
        assert "another run" not in stderr
        assert time.monotonic() - killed < 10
        assert sorted(files_under(out)) == [f"hangs/w{n}.tsv" for n in range(1, 5)]
        print(f"\nstuck: 8 orphaned processes killed {reaped_after:.2f} s after the run's SIGKILL")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        run.stdout.close()
        run.stderr.close()
        kill_all(pids_of(folder))


MANY_SHORT = """\
reports:
  short:
    type: script
    granularity: days
    starts: 2020-01-01
"""

LOCK_KILLS = 25


def test_lock_is_free_as_soon_as_a_killed_run_is_reaped(tmp_path):
    # Thousands of short scripts, 8 at a time: the run forks all the time.
    # A child between fork and exec holds a copy of every descriptor of the
    # run, the flock'ed lock file included; if the run dies then, that child
    # keeps the folder locked after the run is gone, and a run started at
    # once finds the folder busy and does nothing.
    folder = make_folder(tmp_path, MANY_SHORT, scripts={"short": FINE})
    rng = random.Random(7)
    zygote = Zygote(folder, NOW, tmp_path / "zygote.log", jobs=8)
    held = []
    try:
        for n in range(LOCK_KILLS):
            code, log = kill_library(zygote, tmp_path / f"out{n}", rng.uniform(0.1, 0.4))
            assert code is None, f"the run ended before the kill:\n{log}"
            out = tmp_path / f"out{n}"  # the lock is the output folder's
            if not lock_is_free(out):  # the run is dead and reaped by now
                held.append(f"kill {n + 1}: held {wait_lock_free(out) * 1000:.1f} ms more")
    finally:
        zygote.close()
    assert held == [], (f"{len(held)} of {LOCK_KILLS} killed runs still held the folder lock "
                        f"after they were reaped: {held}")


# Started in a fresh interpreter (the reaper is the process's): commands
# started through the library, more at once than the reaper's first slots,
# one of them done before the next ones start (its slot is used again),
# and then the process SIGKILLs itself.
MANY_AT_ONCE = """\
import os, signal, sys
from pathlib import Path
from reportupdater import processes
processes._REAPER_FIRST_SLOTS = 2
running = [processes.start_command(["sleep", "60"], Path("."), 120, "test", "sleep") for _ in range(3)]
processes.run_command(["true"], Path("."), 120, "test", "true")
running += [processes.start_command(["sleep", "60"], Path("."), 120, "test", "sleep") for _ in range(3)]
print(" ".join(str(command._command.process.pid) for command in running), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_reaper_kills_every_group_when_more_run_than_its_first_slots(tmp_path):
    done = subprocess.run([sys.executable, "-c", MANY_AT_ONCE], cwd=tmp_path, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == -signal.SIGKILL, done.stderr
    pids = [int(pid) for pid in done.stdout.split()]
    try:
        assert len(pids) == 6
        assert wait_for(lambda: not any(process_alive(pid) for pid in pids), timeout=5, interval=0.01), \
            f"still running 5 s after the process was killed: {[p for p in pids if process_alive(p)]}"
    finally:
        kill_all(pids)
