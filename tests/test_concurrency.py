# One run per output folder at a time (the lock is OUTPUT/.reportupdater.lock;
# tests/test_writes.py checks that two output folders of one query folder
# may run at once), and crash safety: a run killed at any moment leaves every
# output file absent or complete (atomic replace), never holds the folder's
# lock after death, and the next run finishes the work.

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reportupdater import journal, processes
from reportupdater.cli import parse_now
from reportupdater.lock import FolderLock
from reportupdater.runner import RunOptions, run

# The CLI in a subprocess (run_cli_process): runs race other processes for the
# output folder's lock, and lockf locks do not conflict within one process.
from testkit import (DAILY_EDITS_SQL, NOW, SQLITE_DB, files_under, make_edits_db, make_folder,
                     process_alive, run_cli_process, start_cli, tsv, unspent, wait_for)

# ------------------------------------------------------ two runs at once

SLOW_FIRST = """\
#!/bin/sh
if [ "$1" = 2026-01-03 ]; then
  touch started
  # Holds the folder until the test says go (at most two minutes).
  n=0; while [ ! -e go ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n + 1)); done
fi
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under folder, hidden ones too: bytes and modification time."""
    return {str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_second_run_while_one_holds_the_folder_exits_quietly(tmp_path):
    config = SQLITE_DB + """\
reports:
  slow:
    type: script
    granularity: days
    starts: 2026-01-03
  daily_edits:
    granularity: days
    starts: 2026-01-01
    db: db
"""
    folder = make_folder(tmp_path, config, files={"daily_edits.sql": DAILY_EDITS_SQL},
                         scripts={"slow": SLOW_FIRST})
    make_edits_db(folder)
    (folder / ".reruns").mkdir()
    (folder / ".reruns" / "1767571200000").write_text("2026-01-01\n2026-01-02\ndaily_edits\n")
    out = tmp_path / "out"

    first = start_cli("run", folder, out, "--now", NOW)
    try:
        assert wait_for(lambda: (folder / "started").exists(), timeout=15), "first run never started"
        before = snapshot(tmp_path)

        # The first run holds the folder until `go` exists: a second run
        # that waited for the lock instead of giving up would hang here
        # until run_cli_process's timeout fails the test.
        code, stdout, stderr = run_cli_process("run", folder, out, "--now", NOW)

        assert code == 0
        assert stdout == ""
        assert f"{out / '.reportupdater.lock'}: another run holds this output folder" in stderr
        assert [line for line in stderr.splitlines() if line.strip()] == [
            line for line in stderr.splitlines() if "WARNING" in line]
        # Nothing touched: no output yet (the first run is still in its first
        # report), and no file changed in either folder (the rerun request is
        # still there for the first run).
        assert snapshot(tmp_path) == before
        assert files_under(out) == {}
        assert files_under(folder / ".reruns") == {"1767571200000": "2026-01-01\n2026-01-02\ndaily_edits\n"}
        assert first.poll() is None, "the first run ended too early for this test to mean anything"

        # A rerun requested meanwhile waits for the next run: the running
        # one only consumes the requests it read when it started.
        code, _, stderr = run_cli_process("rerun", folder, "2026-01-03", "2026-01-04", "-r", "daily_edits",
                                  "--now", NOW)
        assert code == 0, stderr
        late_request = {name: text for name, text in files_under(folder / ".reruns").items()
                        if name != "1767571200000"}
        assert list(late_request.values()) == ["2026-01-03\n2026-01-04\ndaily_edits\n"]

        (folder / "go").touch()
        stdout, stderr = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert files_under(out) == {
        "slow.tsv": tsv("date\tvalue", "2026-01-03\t1", "2026-01-04\t1"),
        "daily_edits.tsv": tsv("date\tedits", "2026-01-01\t2", "2026-01-02\t1", "2026-01-03\t0",
                               "2026-01-04\t3"),
    }
    assert unspent(folder, out) == late_request

    # And the folder is free again; the late request is honoured now.
    code, _, stderr = run_cli_process("run", folder, out, "--now", NOW, "-l", "info")
    assert code == 0, stderr
    assert "another run" not in stderr
    assert "daily_edits: 1 computed, 0 failed" in stderr
    assert unspent(folder, out) == {}


# ------------------------------------------------------ killed mid-run

# Slow only when SLOW is set (the killed run); every row depends on its date.
COUNTER = """\
#!/bin/sh
echo "$1" >> progress.log
if [ -n "$SLOW" ]; then sleep 0.1; fi
printf 'date\\tfrom\\tto\\tname\\n%s\\t%s\\t%s\\t%s\\n' "$1" "$1" "$2" "$(basename "$0")"
"""

MANY_INTERVALS = """\
# Oldest first, so that each checkpoint holds a prefix of the reference files.
defaults:
  backfill_order: oldest
reports:
  alpha:
    type: script
    execute: counter
    granularity: days
    starts: 2025-12-01
  beta:
    type: script
    execute: counter
    granularity: days
    starts: 2025-12-01
    explode_by:
      wiki: enwiki, dewiki
"""

HEADER = "date\tfrom\tto\tname"


def progress(folder: Path) -> int:
    try:
        return len((folder / "progress.log").read_text().splitlines())
    except FileNotFoundError:
        return 0


def reference_output(tmp_path: Path, folder: Path) -> dict[str, str]:
    """What an uninterrupted run produces, in an output folder of its own."""
    reference = tmp_path / "reference"
    code, _, stderr = run_cli_process("run", folder, reference, "--now", NOW)
    assert code == 0, stderr
    files = files_under(reference)
    assert sorted(files) == ["alpha.tsv", "beta/dewiki.tsv", "beta/enwiki.tsv"]
    for text in files.values():
        lines = text.splitlines()
        assert lines[0] == HEADER and len(lines) == 1 + 35  # 2025-12-01 .. 2026-01-04
    return files


def assert_complete_prefixes(out: Path, reference: dict[str, str]) -> dict[str, int]:
    """Every visible .tsv is whole: the header and the first rows of the
    reference, each row well-formed. Temp files are hidden (.name.RANDOM.tmp).
    Returns the number of rows of each file."""
    rows: dict[str, int] = {}
    for name, text in files_under(out).items():  # temp files are hidden: .name.RANDOM.tmp
        assert name in reference, name
        assert text.endswith("\n"), f"{name} is cut short: {text[-40:]!r}"
        lines = text.splitlines()
        assert lines[0] == HEADER
        for line in lines[1:]:
            assert len(line.split("\t")) == 4, line
        assert text == "".join(reference[name].splitlines(keepends=True)[:len(lines)]), name
        rows[name] = len(lines) - 1
    return rows


def durable_rows(tmp_path: Path, out: Path, reference: dict[str, str]) -> dict[str, int]:
    """What a killed run left durably (its files and its journal's whole
    frames), as the next run would see it after replaying the journal, on a
    copy: every file a complete prefix of the reference. Rows per file."""
    copy = tmp_path / "durable"
    shutil.copytree(out, copy, symlinks=True)
    with FolderLock(copy) as lock:
        replayed = journal.replay_into(lock)
    assert replayed.damaged is None and not replayed.failed_files, replayed
    return assert_complete_prefixes(copy, reference)


def finish_and_compare(folder: Path, out: Path, reference: dict[str, str]) -> None:
    code, _, stderr = run_cli_process("run", folder, out, "--now", NOW, "-l", "info")
    assert code == 0, stderr
    assert "another run" not in stderr  # the dead run's lock is gone
    assert files_under(out) == reference
    assert sorted(out.rglob("*.tmp")) == []  # stale temp files removed too


def kill_when(process: subprocess.Popen, condition, timeout: float = 20) -> None:
    try:
        assert wait_for(condition, timeout=timeout), "the run never got that far"
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert process.returncode == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_run_killed_mid_way_leaves_whole_files_and_the_next_run_completes(tmp_path):
    folder = make_folder(tmp_path, MANY_INTERVALS, scripts={"counter": COUNTER})
    reference = reference_output(tmp_path, folder)
    (folder / "progress.log").unlink()
    out = tmp_path / "out"

    killed = start_cli("run", folder, out, "--now", NOW, env={"SLOW": "1"})
    kill_when(killed, lambda: progress(folder) >= 12)

    # Files absent (not yet at a checkpoint) or complete up to one.
    assert_complete_prefixes(out, reference)
    finish_and_compare(folder, out, reference)


RUN_WITH_CHECKPOINTS = """\
import sys
from pathlib import Path
from reportupdater.cli import parse_now
from reportupdater.runner import RunOptions, run
# One job at a time: checkpoints then fall after every third interval in order.
summary = run(RunOptions(Path(sys.argv[1]), Path(sys.argv[2]), now=parse_now(sys.argv[3]),
                         checkpoint_intervals=3, jobs=1))
sys.exit(summary.exit_code)
"""


def test_run_killed_after_checkpoints_keeps_them_and_the_next_run_completes(tmp_path):
    folder = make_folder(tmp_path, MANY_INTERVALS, scripts={"counter": COUNTER})
    reference = reference_output(tmp_path, folder)
    (folder / "progress.log").unlink()
    out = tmp_path / "out"

    killed = subprocess.Popen([sys.executable, "-c", RUN_WITH_CHECKPOINTS, str(folder), str(out), NOW],
                              env={**os.environ, "SLOW": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Killed within alpha, after at least two checkpoints (6 intervals).
    kill_when(killed, lambda: progress(folder) >= 8)

    assert files_under(out) == {}  # files are written once, when their report is done
    rows = durable_rows(tmp_path, out, reference)  # the checkpoints are in the journal
    assert list(rows) == ["alpha.tsv"], rows
    assert 6 <= rows["alpha.tsv"] < 35 and rows["alpha.tsv"] % 3 == 0, rows
    finish_and_compare(folder, out, reference)


def test_stale_temp_file_of_a_killed_writer_is_ignored_and_removed(tmp_path):
    folder = make_folder(tmp_path, MANY_INTERVALS, scripts={"counter": COUNTER})
    reference = reference_output(tmp_path, folder)
    out = tmp_path / "out"
    (out / "beta").mkdir(parents=True)
    # A checkpoint of alpha, and half-written replacements beside it: under
    # today's random temp names, and the fixed name older versions used.
    alpha = "".join(reference["alpha.tsv"].splitlines(keepends=True)[:4])
    (out / "alpha.tsv").write_text(alpha)
    (out / ".alpha.tsv.tmp").write_text(reference["alpha.tsv"][:100])
    (out / ".alpha.tsv.0123456789abcdef.tmp").write_text(reference["alpha.tsv"][:50])
    (out / "beta" / ".enwiki.tsv.tmp").write_text("date\tfr")
    (out / "beta" / ".enwiki.tsv.fedcba9876543210.tmp").write_text("date")

    finish_and_compare(folder, out, reference)


# ------------------------------------------------------ checkpoints

FINE = """\
#!/bin/sh
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""


@pytest.mark.parametrize("options, journaled", [
    ({}, "no no no no"),                            # nothing before the end
    ({"checkpoint_intervals": 1}, "no yes yes yes"),  # after every interval
    ({"checkpoint_seconds": 0}, "no yes yes yes"),
    ({"checkpoint_intervals": 2}, "no no yes yes"),
])
def test_checkpoints_journal_during_the_run_and_write_the_file_once(tmp_path, options, journaled):
    config = """\
reports:
  seen:
    type: script
    granularity: days
    starts: 2026-01-01
    backfill_order: oldest
"""
    folder = make_folder(tmp_path, config, scripts={"seen": FINE})
    out = tmp_path / "out"
    seen = []

    def progress(report: str, done: int, planned: int) -> None:
        # Called as each interval is merged, before its own checkpoint:
        # what the journal and the output file hold by then.
        seen.append(((out / "seen.tsv").exists(), (out / journal.JOURNAL_NAME).stat().st_size > 0
                     if (out / journal.JOURNAL_NAME).exists() else False))

    summary = run(RunOptions(query_folder=folder, output_folder=out, now=parse_now(NOW), jobs=1,
                             progress=progress, **options))

    assert summary.exit_code == 0
    assert [file for file, _ in seen] == [False] * 4  # written once, at the end
    assert " ".join("yes" if held else "no" for _, held in seen) == journaled
    assert files_under(out) == {"seen.tsv": tsv("date\tvalue", *[
        f"2026-01-0{day}\t1" for day in range(1, 5)])}
    assert not (out / journal.JOURNAL_NAME).exists()  # removed once the file was written


HANGS = """\
#!/bin/sh
if [ -n "$HANG" ]; then
  echo $$ > script.pid
  sleep 30
fi
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""


def test_script_left_running_by_a_killed_run_does_not_hold_the_lock(tmp_path):
    config = """\
reports:
  hangs:
    type: script
    granularity: days
    starts: 2026-01-03
"""
    folder = make_folder(tmp_path, config, scripts={"hangs": HANGS})
    out = tmp_path / "out"
    killed = start_cli("run", folder, out, "--now", NOW, env={"HANG": "1"})
    script_pid = None
    try:
        kill_when(killed, lambda: (folder / "script.pid").exists()
                  and (folder / "script.pid").read_text().strip() != "")
        script_pid = int((folder / "script.pid").read_text())

        started = time.monotonic()
        code, _, stderr = run_cli_process("run", folder, out, "--now", NOW)

        assert code == 0, stderr
        assert "another run" not in stderr
        assert time.monotonic() - started < 10
        assert files_under(out) == {"hangs.tsv": tsv("date\tvalue", "2026-01-03\t1", "2026-01-04\t1")}
    finally:
        if script_pid is not None:
            try:  # the dead run's script runs in a session of its own
                os.killpg(script_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


HANGS_WITH_CHILD = """\
#!/bin/sh
echo $$ > script.pid
sleep 30 &
echo $! > child.pid
sleep 30
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_run_stopped_by_a_signal_stops_its_script_and_the_script_children(tmp_path, signum):
    # Ctrl-C, `kill`, `timeout 1h reportupdater ...` in a crontab: the run
    # stops, and so does the script it was waiting for (which runs in a
    # session of its own, out of reach of signals sent to the run's group).
    config = """\
reports:
  hangs:
    type: script
    granularity: days
    starts: 2026-01-03
"""
    folder = make_folder(tmp_path, config, scripts={"hangs": HANGS_WITH_CHILD})
    out = tmp_path / "out"
    runner = start_cli("run", folder, out, "--now", NOW)
    pids: list[int] = []
    try:
        assert wait_for(lambda: (folder / "child.pid").exists()
                        and (folder / "child.pid").read_text().strip() != "", timeout=15)
        pids = [int((folder / "script.pid").read_text()), int((folder / "child.pid").read_text())]

        runner.send_signal(signum)
        _, stderr = runner.communicate(timeout=10)

        assert runner.returncode != 0
        if signum == signal.SIGINT:
            assert runner.returncode == 1 and "interrupted" in stderr
        assert files_under(out) == {}
        wait_for(lambda: not any(process_alive(pid) for pid in pids), timeout=3)
        alive = [pid for pid in pids if process_alive(pid)]
        assert alive == [], f"still running after the run was stopped: {alive}"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if pids:
            try:
                os.killpg(pids[0], signal.SIGKILL)
            except ProcessLookupError:
                pass


# The first day is quick; the next one records its PID and its child's and hangs.
FIRST_QUICK_THEN_HANGS = """\
#!/bin/sh
if [ "$1" != 2026-01-03 ]; then
  sleep 30 &
  echo "$$ $!" > pids.tmp && mv pids.tmp pids
  wait
fi
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""


def test_a_run_stopped_while_it_merges_kills_the_next_command_already_running(tmp_path, monkeypatch):
    # With --jobs 1 the next interval's command runs while the run merges
    # the one before: stopped just then, the run kills it too. A Ctrl-C
    # cannot be timed to land inside a merge (microseconds), so the merge
    # raises it itself once the next script runs (the only stand-in here).
    from reportupdater import runner

    config = """\
reports:
  hangs:
    type: script
    granularity: days
    starts: 2026-01-03
    backfill_order: oldest
"""
    folder = make_folder(tmp_path, config, scripts={"hangs": FIRST_QUICK_THEN_HANGS})
    out = tmp_path / "out"
    pids: list[int] = []
    stopped: list[float] = []

    def interrupted_merge(*args, **kwargs):
        assert wait_for(lambda: (folder / "pids").exists(), timeout=15)
        pids.extend(int(pid) for pid in (folder / "pids").read_text().split())
        stopped.append(time.monotonic())
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_take_result", interrupted_merge)
    try:
        with pytest.raises(KeyboardInterrupt):
            run(RunOptions(query_folder=folder, output_folder=out, now=parse_now(NOW), jobs=1))
        assert time.monotonic() - stopped[0] < 10  # not waiting for the script's 30 s
        assert len(pids) == 2
        wait_for(lambda: not any(process_alive(pid) for pid in pids), timeout=3)
        alive = [pid for pid in pids if process_alive(pid)]
        assert alive == [], f"still running after the run was stopped: {alive}"
    finally:
        processes.allow_commands()  # the stop refuses commands until the next run: this process runs more
        if pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pids[0], signal.SIGKILL)


# On its second day the script leaves a child that prints one more row
# 50 ms after the script has exited.
LATE_ROW_ON_DAY_2 = """\
#!/bin/sh
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
if [ "$1" = 2026-01-04 ]; then
  (sleep 0.05; printf '2026-01-04\\t999\\n') &
fi
"""


def test_a_row_written_after_the_script_exited_fails_its_interval_while_the_run_is_busy(tmp_path):
    # With --jobs 1 the next day's script runs while the day before is
    # merged; its output must still be read from its exit on, so that the
    # child's late row fails the day instead of being stored as the
    # script's, however long the run takes between two days (here a slow
    # progress display).
    config = """\
reports:
  late:
    type: script
    granularity: days
    starts: 2026-01-03
    backfill_order: oldest
"""
    folder = make_folder(tmp_path, config, scripts={"late": LATE_ROW_ON_DAY_2})
    out = tmp_path / "out"
    summary = run(RunOptions(query_folder=folder, output_folder=out, now=parse_now(NOW), jobs=1,
                             progress=lambda report, done, planned: time.sleep(0.3)))
    assert summary.reports["late"].failed == 1
    assert "999" not in (out / "late.tsv").read_text()
    assert (out / "late.tsv").read_text() == tsv("date\tvalue", "2026-01-03\t1")


SLEEPS = """\
#!/bin/sh
sleep 0.3
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""


def test_serial_jobs_count_their_whole_time_inside_the_script(tmp_path):
    # The time inside queries and scripts (the summary's "S s inside them")
    # counts each script from its start to its end, also while the run
    # merged the result before it.
    config = """\
reports:
  sleeps:
    type: script
    granularity: days
    starts: 2026-01-02
"""
    folder = make_folder(tmp_path, config, scripts={"sleeps": SLEEPS})
    summary = run(RunOptions(query_folder=folder, output_folder=tmp_path / "out", now=parse_now(NOW),
                             jobs=1, progress=lambda report, done, planned: time.sleep(0.2)))
    outcome = summary.reports["sleeps"]
    assert outcome.computed == 3
    assert outcome.engine_seconds >= 3 * 0.3


def test_an_internal_error_in_one_report_leaves_the_next_reports_their_scripts(tmp_path, monkeypatch):
    # A report that crashes (an internal error: a bug) has its commands
    # killed on the way out; the reports after it must still run theirs.
    # A bug cannot be had for real, so one is injected where the first
    # report's result is taken (the only stand-in in this test).
    from reportupdater import runner

    config = """\
reports:
  a_crashes:
    type: script
    execute: ok
    granularity: days
    starts: 2026-01-03
  b_runs:
    type: script
    execute: ok
    granularity: days
    starts: 2026-01-03
"""
    folder = make_folder(tmp_path, config, scripts={"ok": FINE})
    take_result = runner._take_result

    def crash_for_a(job, *args, **kwargs):
        if job.report.key == "a_crashes":
            raise RuntimeError("injected")
        return take_result(job, *args, **kwargs)

    monkeypatch.setattr(runner, "_take_result", crash_for_a)
    for jobs in (1, 4):
        out = tmp_path / f"out-{jobs}"
        summary = run(RunOptions(query_folder=folder, output_folder=out, now=parse_now(NOW), jobs=jobs))
        assert summary.reports["a_crashes"].crashed
        assert summary.reports["b_runs"].failed == 0, jobs
        assert summary.reports["b_runs"].computed == 2, jobs


SIGNAL_MASK = """\
#!/bin/sh
blocked=$(sed -n 's/^SigBlk:[[:space:]]*//p' /proc/self/status)
printf 'date\\tblocked\\n%s\\t%s\\n' "$1" "$blocked"
"""


@pytest.mark.parametrize("jobs", ["1", "4"])
def test_scripts_start_with_no_signal_blocked(tmp_path, jobs):
    # A process inherits the signal mask of the thread that starts it: a
    # script started by a thread that blocks SIGTERM could not be stopped by
    # `timeout` or `kill` inside it. (sed runs as the script's child, with
    # the script's mask.)
    config = """\
reports:
  mask:
    type: script
    granularity: days
    starts: 2026-01-01
"""
    folder = make_folder(tmp_path, config, scripts={"mask": SIGNAL_MASK})
    out = tmp_path / "out"
    code, _, stderr = run_cli_process("run", folder, out, "--now", NOW, "--jobs", jobs)
    assert code == 0, stderr
    lines = (out / "mask.tsv").read_text().splitlines()
    assert len(lines) > 2
    assert {line.split("\t")[1] for line in lines[1:]} == {"0000000000000000"}
