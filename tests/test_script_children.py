# Processes a command leaves running: a script's (or readiness script's, or
# Hive command line's) interval ends when the command itself exits, whatever
# its children do. A background child that inherited stdout or stderr
# (`sleep 999 &`, `nohup`, `setsid`, a double-forking daemon, one that
# ignores SIGTERM) does not make the run wait for it: it is killed, the
# output printed before the exit is used in full, and output still arriving
# after the exit fails the interval instead of being cut short. Every run
# here has a subprocess timeout far above the scripts' own: a hang fails the
# test, and no test asserts a speed.

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from reportupdater import processes
from reportupdater.datatypes import EngineError

# The CLI in a subprocess (run_cli_process): what a run leaves of the processes
# its scripts start is seen only once the run's own process is gone.
from testkit import (NOW, assert_failed, files_under, make_folder, process_alive, run_cli_process,
                     start_cli, tsv, wait_for, write_script)

# The shell command a background child runs: it records its PID (atomically,
# under pids/, named $name: the interval's date), then becomes `sleep 999`,
# holding whatever descriptors it was given.
CHILD = """\
mkdir -p pids
child='echo $$ > "pids/.$0" && mv "pids/.$0" "pids/$0" && exec sleep 999'
name="$1"
"""
WAIT_FOR_CHILD = 'until [ -e "pids/$name" ]; do sleep 0.01; done\n'

# How each kind of background child is started; all but the last two keep
# both stdout and stderr of the script open.
LAUNCHES = {
    "in_group": 'sh -c "$child" "$name" &',
    "setsid": 'setsid sh -c "$child" "$name" &',
    "nohup": 'nohup sh -c "$child" "$name" &',
    "double_fork_daemon": '(setsid sh -c "$child" "$name" &)',
    "ignores_sigterm": '(trap "" TERM; exec setsid sh -c "$child" "$name") &',
    "setsid_holds_stderr_only": 'setsid sh -c "$child" "$name" >/dev/null &',
    "setsid_holds_stdout_only": 'setsid sh -c "$child" "$name" 2>/dev/null &',
    "in_group_holds_stderr_only": 'sh -c "$child" "$name" >/dev/null &',
}


def leaves_child(launch: str, then: str = "printf 'date\\tvalue\\n%s\\t1\\n' \"$1\"\n") -> str:
    """A script that starts a background child, waits until it recorded its
    PID, then does `then` (by default: prints a valid result and exits 0)."""
    return "#!/bin/sh\n" + CHILD + launch + "\n" + WAIT_FOR_CHILD + then


FINE = """\
#!/bin/sh
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""


def pids_of(folder: Path) -> list[int]:
    return [int(path.read_text()) for path in sorted((folder / "pids").glob("[!.]*"))]


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def assert_all_dead(folder: Path, count: int) -> None:
    pids = pids_of(folder)
    assert len(pids) == count, pids
    assert wait_for(lambda: not any(process_alive(pid) for pid in pids), timeout=10), \
        f"left running: {[pid for pid in pids if process_alive(pid)]}"


ONE_DAY = """\
reports:
  bg:
    type: script
    granularity: days
    starts: 2026-01-04
    timeout: 20
"""


@pytest.mark.parametrize("kind", sorted(LAUNCHES))
def test_script_leaving_a_background_child_is_done_when_it_exits(tmp_path, kind):
    folder = make_folder(tmp_path, ONE_DAY, scripts={"bg": leaves_child(LAUNCHES[kind])})
    out = tmp_path / "out"
    try:
        # Before the fix: the run waited for the child's `sleep 999` (the
        # 20 s timeout killed only the script's group), so this timed out.
        code, _, stderr = run_cli_process("run", folder, out, "--now", NOW, timeout=60)
        assert code == 0, stderr
        assert files_under(out) == {"bg.tsv": tsv("date\tvalue", "2026-01-04\t1")}
        assert "script exited, leaving a process running that held its" in stderr, stderr
        assert_all_dead(folder, 1)
    finally:
        kill_all(pids_of(folder))


def test_output_printed_before_the_exit_is_used_in_full(tmp_path):
    # More than a pipe holds (64 KiB), printed while a setsid child holds stdout.
    rows = 20000
    many_rows = f"awk -v d=\"$1\" 'BEGIN {{ print \"date\\tn\"; for (i = 1; i <= {rows}; i++) " \
                "printf \"%s\\t%d\\n\", d, i }'\n"
    folder = make_folder(tmp_path, ONE_DAY,
                         scripts={"bg": leaves_child(LAUNCHES["setsid"], then=many_rows)})
    out = tmp_path / "out"
    try:
        code, _, stderr = run_cli_process("run", folder, out, "--now", NOW, timeout=60)
        assert code == 0, stderr
        assert (out / "bg.tsv").read_text() == tsv("date\tn", *[f"2026-01-04\t{n}"
                                                                 for n in range(1, rows + 1)])
        assert_all_dead(folder, 1)
    finally:
        kill_all(pids_of(folder))


# A child that keeps printing valid rows after the script has exited: where
# the kill falls would decide how many rows are stored.
STILL_WRITING = """\
#!/bin/sh
mkdir -p pids
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
{launch} sh -c 'echo $$ > pids/.w && mv pids/.w pids/writer
  while :; do printf "%s\\t2\\n" "$0"; done' "$1" &
until [ -e pids/writer ]; do sleep 0.01; done
"""


@pytest.mark.parametrize("launch", ["", "setsid"])
def test_output_still_arriving_after_the_exit_fails_the_interval(tmp_path, launch):
    config = ONE_DAY + """\
  fine:
    type: script
    granularity: days
    starts: 2026-01-04
"""
    folder = make_folder(tmp_path, config, scripts={"bg": STILL_WRITING.format(launch=launch),
                                                    "fine": FINE})
    out = tmp_path / "out"
    try:
        code, _, stderr = run_cli_process("run", folder, out, "--now", NOW, timeout=60)
        assert code == 1, stderr
        assert_failed(stderr, "bg 2026-01-04", "script exited while a process it left running "
                      "was still writing to its stdout")
        assert files_under(out) == {"fine.tsv": tsv("date\tvalue", "2026-01-04\t1")}
        assert_all_dead(folder, 1)
    finally:
        kill_all(pids_of(folder))


TWO_REPORTS = """\
reports:
  stuck:
    type: script
    granularity: days
    starts: 2026-01-04
    timeout: 2
  fine:
    type: script
    granularity: days
    starts: 2026-01-04
"""


@pytest.mark.parametrize("kind", ["setsid", "ignores_sigterm", "double_fork_daemon"])
def test_script_killed_at_its_timeout_does_not_wait_for_children_that_escaped(tmp_path, kind):
    # The timeout killed the script's group; a child in a session of its own
    # kept stdout open and the run waited for it (here: 999 s).
    stuck = leaves_child(LAUNCHES[kind], then='echo "$$" > pids/script\nsleep 999\n')
    folder = make_folder(tmp_path, TWO_REPORTS, scripts={"stuck": stuck, "fine": FINE})
    out = tmp_path / "out"
    try:
        code, _, stderr = run_cli_process("run", folder, out, "--now", NOW, timeout=60)
        assert code == 1, stderr
        assert_failed(stderr, "stuck 2026-01-04", "script timed out after 2 s and was killed")
        assert files_under(out) == {"fine.tsv": tsv("date\tvalue", "2026-01-04\t1")}
        assert_all_dead(folder, 2)
    finally:
        kill_all(pids_of(folder))


def test_script_that_closes_its_output_and_keeps_running_times_out(tmp_path):
    stuck = """\
#!/bin/sh
mkdir -p pids
echo $$ > pids/script
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
exec >&- 2>&-
sleep 999
"""
    folder = make_folder(tmp_path, TWO_REPORTS, scripts={"stuck": stuck, "fine": FINE})
    out = tmp_path / "out"
    try:
        code, _, stderr = run_cli_process("run", folder, out, "--now", NOW, timeout=60)
        assert code == 1, stderr
        assert_failed(stderr, "stuck 2026-01-04", "script timed out after 2 s and was killed")
        assert files_under(out) == {"fine.tsv": tsv("date\tvalue", "2026-01-04\t1")}
        assert_all_dead(folder, 1)
    finally:
        kill_all(pids_of(folder))


def test_readiness_script_leaving_a_background_child(tmp_path):
    config = """\
reports:
  bg:
    type: script
    granularity: days
    starts: 2026-01-04
    timeout: 20
    ready_when: {script: ready}
"""
    ready = leaves_child(LAUNCHES["setsid"], then="exit 0\n")
    folder = make_folder(tmp_path, config, scripts={"bg": FINE, "ready": ready})
    out = tmp_path / "out"
    try:
        code, _, stderr = run_cli_process("run", folder, out, "--now", NOW, "-l", "info", timeout=60)
        assert code == 0, stderr
        assert "not ready" not in stderr
        assert files_under(out) == {"bg.tsv": tsv("date\tvalue", "2026-01-04\t1")}
        assert "ready_when script exited, leaving a process running" in stderr
        assert_all_dead(folder, 1)
    finally:
        kill_all(pids_of(folder))


def test_hive_command_leaving_a_background_child(tmp_path):
    # A stand-in for `hive -e QUERY` (the query is its last argument) that
    # leaves a daemon behind, as a wrapper starting some agent might.
    fake_hive = leaves_child(LAUNCHES["double_fork_daemon"], then="""\
date=$(printf '%s' "$2" | sed -n "s/.*'\\([0-9-]*\\)' AS date.*/\\1/p")
printf 'date\\tvalue\\n%s\\t1\\n' "$date"
""").replace('name="$1"', 'name=hive')
    config = f"""\
databases:
  cli:
    engine: hive-cli
    command: "{tmp_path / 'query' / 'fakehive'} -e"
reports:
  bg:
    type: hive
    db: cli
    granularity: days
    starts: 2026-01-04
    timeout: 20
"""
    folder = make_folder(tmp_path, config, files={"bg.hql": "SELECT '{from_date}' AS date, 1 AS value"},
                         scripts={"fakehive": fake_hive})
    out = tmp_path / "out"
    try:
        code, _, stderr = run_cli_process("run", folder, out, "--now", NOW, timeout=60)
        assert code == 0, stderr
        assert files_under(out) == {"bg.tsv": tsv("date\tvalue", "2026-01-04\t1")}
        assert_all_dead(folder, 1)
    finally:
        kill_all(pids_of(folder))


def test_many_jobs_each_leaving_a_child(tmp_path):
    config = """\
reports:
  bg:
    type: script
    granularity: days
    starts: 2026-01-01
    timeout: 20
    explode_by:
      wiki: w1, w2, w3
"""
    script = leaves_child(LAUNCHES["setsid"]).replace('name="$1"', 'name="$1-$3"')  # date-wiki
    folder = make_folder(tmp_path, config, scripts={"bg": script})
    out = tmp_path / "out"
    try:
        code, _, stderr = run_cli_process("run", folder, out, "--now", NOW, "--jobs", "4", timeout=60)
        assert code == 0, stderr
        rows = [f"2026-01-0{day}\t1" for day in range(1, 5)]
        assert files_under(out) == {f"bg/w{n}.tsv": tsv("date\tvalue", *rows) for n in (1, 2, 3)}
        assert_all_dead(folder, 12)
    finally:
        kill_all(pids_of(folder))


@pytest.mark.parametrize("jobs", ["1", "4"])
def test_run_stopped_by_sigterm_kills_children_that_escaped(tmp_path, jobs):
    # Stopped while its script runs: the script's group is killed, and so is
    # the setsid child holding its stdout (with --jobs 4 the run used to wait
    # for that child, in a worker thread reading the pipe).
    config = """\
reports:
  stuck:
    type: script
    granularity: days
    starts: 2026-01-04
"""
    stuck = leaves_child(LAUNCHES["setsid"], then='echo "$$" > pids/.s && mv pids/.s pids/script\n'
                                                  'sleep 999\n')
    folder = make_folder(tmp_path, config, scripts={"stuck": stuck})
    out = tmp_path / "out"
    runner = start_cli("run", folder, out, "--now", NOW, "--jobs", jobs)
    try:
        assert wait_for(lambda: len(pids_of(folder)) == 2, timeout=30), pids_of(folder)
        runner.send_signal(signal.SIGTERM)
        runner.communicate(timeout=60)
        assert runner.returncode != 0
        assert files_under(out) == {}
        assert_all_dead(folder, 2)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        kill_all(pids_of(folder))


def test_short_scripts_on_many_jobs_are_not_taken_for_ones_leaving_children(tmp_path):
    # With several workers, one starting its script must not lend another's
    # script's pipes to its child for a moment: the finished script would
    # look as if something it left running held its output (a warning, and
    # half a second of waiting, for an ordinary script).
    config = """\
reports:
  short:
    type: script
    granularity: days
    starts: 2025-06-01
    explode_by:
      wiki: w1, w2
"""
    folder = make_folder(tmp_path, config, scripts={"short": FINE})
    out = tmp_path / "out"
    code, _, stderr = run_cli_process("run", folder, out, "--now", NOW, "--jobs", "4", timeout=300)
    assert code == 0, stderr
    assert stderr == ""
    assert sorted(files_under(out)) == ["short/w1.tsv", "short/w2.tsv"]


@pytest.mark.parametrize("pidfd", [True, False])
def test_run_command_with_and_without_pidfd(tmp_path, monkeypatch, pidfd):
    # Without pidfd_open (Linux before 5.3, other systems) the exit is found
    # by waitid(WNOWAIT) between reads. An old kernel cannot be had here, so
    # that one function is replaced (the only stand-in in this file).
    if not pidfd:
        monkeypatch.setattr(processes, "_open_exit_fd", lambda pid: None)
    folder = tmp_path / "query"
    folder.mkdir()
    leaves = leaves_child(LAUNCHES["setsid"], then="printf 'date\\tvalue\\n%s\\t1\\n' \"$1\"\n"
                                                   "echo note >&2\n")
    write_script(folder / "bg", leaves)
    write_script(folder / "stuck", "#!/bin/sh\nexec >&- 2>&-\nexec sleep 999\n")
    try:
        assert processes.run_command([str(folder / "bg"), "2026-01-04"], folder, 20, "t",
                                         "script") == "date\tvalue\n2026-01-04\t1\n"
        assert_all_dead(folder, 1)
        with pytest.raises(EngineError, match="script timed out after 1 s and was killed"):
            processes.run_command([str(folder / "stuck")], folder, 1, "t", "script")
    finally:
        kill_all(pids_of(folder))
