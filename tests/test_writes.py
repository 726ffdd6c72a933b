# Writes and read-backs, for real (real links, FIFOs, mounts and sockets).
#
# - Every file the tool writes goes through reportupdater/atomic.py: a fresh
#   temp file with a random name beside the target (O_CREAT|O_EXCL|
#   O_NOFOLLOW), fsync, rename, fsync the folder. A link planted at a temp
#   name, at the target itself or at the lock is never followed.
# - A run writes nothing into the query folder but `.reruns/` and what the
#   config asks for (a sqlite `seed:` database); one run per OUTPUT folder.
# - Every file the tool reads back from its output folder (the state file,
#   the Graphite queue, the TSVs) is read without following a link or
#   waiting on a FIFO; a damaged one costs one warning naming it, never a
#   command.

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from reportupdater import atomic, publish
from reportupdater.store import OutputFile, StoreError

from testkit import (DAILY_EDITS_SQL, NOW, SQLITE_DB, files_under, make_edits_db, make_folder,
                     read, run_cli, start_cli, tsv, wait_for)

ROOT = Path(__file__).resolve().parents[1]
PRECIOUS = "precious: not the tool's to write\n"
LINK_REFUSED = "is a symbolic link, which reportupdater does not follow"

OK_SCRIPT = """\
#!/bin/sh
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""

# Fails for 2026-01-03, so that the run writes its state file.
FAILS_ON_THE_3RD = """\
#!/bin/sh
if [ "$1" = 2026-01-03 ]; then echo "no data" >&2; exit 1; fi
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""

TWO_REPORTS = """\
reports:
  flaky:
    type: script
    granularity: days
    starts: 2026-01-02
  fine:
    type: script
    execute: ok
    granularity: days
    starts: 2026-01-03
"""


def victim(tmp_path: Path, text: str = PRECIOUS) -> Path:
    """A file outside every folder of the run, that a link points at."""
    path = tmp_path / "victim"
    path.write_text(text)
    return path


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line or " CRITICAL " in line]


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " WARNING " in line]


# ------------------------------------------------------------ atomic.write

def test_write_puts_the_file_in_place_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out" / "deep" / "r.tsv"
    atomic.write(target, b"date\tn\n", inside=tmp_path / "out")
    atomic.write(target, b"date\tm\n", inside=tmp_path / "out")
    assert read(target) == "date\tm\n"
    assert os.listdir(target.parent) == ["r.tsv"]


def test_temp_names_are_fresh_and_recognised(tmp_path):
    names = {atomic.temp_name("r.tsv") for _ in range(50)}
    assert len(names) == 50  # unpredictable: nobody can plant a link at the next one
    assert all(atomic.temp_target(name) == "r.tsv" for name in names)
    assert atomic.temp_target(".r.tsv.tmp") == "r.tsv"  # what older versions left
    assert atomic.temp_target("r.tsv") is None and atomic.temp_target(".tmp") is None


def test_write_refuses_a_link_at_the_target_and_leaves_both_alone(tmp_path):
    target = tmp_path / "r.tsv"
    target.symlink_to(victim(tmp_path))
    with pytest.raises(atomic.SymlinkRefused) as caught:
        atomic.write(target, b"date\tn\n")
    assert caught.value.strerror.startswith(f"it {LINK_REFUSED}")
    assert target.is_symlink() and read(tmp_path / "victim") == PRECIOUS
    assert sorted(os.listdir(tmp_path)) == ["r.tsv", "victim"]  # no temp file left


def test_write_refuses_a_link_on_the_way_below_the_trusted_folder(tmp_path):
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / "report").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(atomic.SymlinkRefused) as caught:
        atomic.write(out / "report" / "enwiki.tsv", b"date\tn\n", inside=out)
    assert caught.value.strerror.startswith(f"{out / 'report'} {LINK_REFUSED}")
    assert os.listdir(elsewhere) == []
    # The trusted folder itself may be a link (an operator's choice).
    linked_out = tmp_path / "linked-out"
    linked_out.symlink_to(out, target_is_directory=True)
    atomic.write(linked_out / "plain.tsv", b"date\tn\n", inside=linked_out)
    assert read(out / "plain.tsv") == "date\tn\n"


def test_write_under_a_new_name_never_replaces_a_file(tmp_path):
    target = tmp_path / "1767571200000"
    target.write_text("2026-01-01\n2026-01-02\n")
    with pytest.raises(atomic.TargetExists):
        atomic.write(target, b"other\n", replace=False)
    assert read(target) == "2026-01-01\n2026-01-02\n"
    atomic.write(tmp_path / "new", b"x\n", replace=False)
    assert sorted(os.listdir(tmp_path)) == ["1767571200000", "new"]


def test_write_keeps_the_permissions_of_the_file_it_replaces(tmp_path):
    target = tmp_path / "r.tsv"
    target.write_text("old\n")
    target.chmod(0o640)
    atomic.write(target, b"new\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    umask = os.umask(0o027)
    try:
        atomic.write(tmp_path / "fresh.tsv", b"new\n")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "fresh.tsv").stat().st_mode) == 0o640  # 0666 minus the umask


def test_read_refuses_links_and_never_waits_on_a_fifo(tmp_path):
    (tmp_path / "link").symlink_to(victim(tmp_path))
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(atomic.SymlinkRefused):
        atomic.read(tmp_path / "link")
    with pytest.raises(atomic.NotRegularFile):
        atomic.read(tmp_path / "fifo")  # returns at once: nobody writes into it


def test_stale_temp_cleaning_removes_only_our_temp_files_and_never_a_link(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    ours = [".r.tsv.0123456789abcdef.tmp", ".r.tsv.tmp"]
    others = [".other.tsv.0123456789abcdef.tmp", "notes.tmp", ".r.tsv.backup", "r.tsv"]
    for name in ours + others:
        (folder / name).write_text("x")
    (folder / ".r.tsv.fedcba9876543210.tmp").symlink_to(victim(tmp_path))
    atomic.remove_stale_temps(folder, "r.tsv")
    assert sorted(os.listdir(folder)) == sorted(others + [".r.tsv.fedcba9876543210.tmp"])
    assert read(tmp_path / "victim") == PRECIOUS


def test_output_file_below_a_linked_folder_is_neither_read_nor_written(tmp_path):
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "enwiki.tsv").write_text(tsv("date\tn", "2026-01-01\t1"))
    out.mkdir()
    (out / "report").symlink_to(elsewhere, target_is_directory=True)
    path = out / "report" / "enwiki.tsv"
    with pytest.raises(StoreError) as caught:
        OutputFile.load(path, root=out)
    assert str(caught.value) == f"{path}: cannot read: {out / 'report'} {LINK_REFUSED} " \
                                "(replace it with a real file or folder)"
    fresh = OutputFile(path, ["date", "n"], {"2026-01-02": [["2026-01-02", "2"]]}, root=out)
    fresh.dirty = True
    with pytest.raises(StoreError, match="cannot write: .* is a symbolic link"):
        fresh.save()
    assert os.listdir(elsewhere) == ["enwiki.tsv"]


# ------------------------------------------------------------ links planted for a run

def _folder_with_a_partial_rerun(tmp_path: Path) -> Path:
    folder = make_folder(tmp_path, TWO_REPORTS, scripts={"flaky": FAILS_ON_THE_3RD, "ok": OK_SCRIPT})
    # 2026-01-03 fails: the request is kept, rewritten for what is left.
    (folder / ".reruns").mkdir()
    (folder / ".reruns" / "1767571200000").write_text("2026-01-02\n2026-01-04\nflaky\n")
    return folder


@pytest.mark.parametrize("where", ["state", "tsv", "metrics", "rerun"])
def test_a_link_planted_at_a_temp_name_of_the_old_versions_is_not_followed(tmp_path, where):
    folder = _folder_with_a_partial_rerun(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "fine.tsv").write_text(tsv("date\tvalue", "2026-01-03\t1"))
    metrics = tmp_path / "metrics" / "reportupdater.prom"
    metrics.parent.mkdir()
    planted = {"state": out / "..reportupdater-state.json.tmp", "tsv": out / ".fine.tsv.tmp",
               "metrics": metrics.with_name(f".{metrics.name}.tmp"),
               "rerun": folder / ".reruns" / ".1767571200000.tmp"}[where]
    planted.symlink_to(victim(tmp_path))

    code, _, stderr = run_cli("run", folder, out, "--now", NOW, "--metrics-file", metrics)

    assert code == 1, stderr  # flaky 2026-01-03 failed
    assert "Traceback" not in stderr
    assert read(tmp_path / "victim") == PRECIOUS
    assert planted.is_symlink()  # not ours: left where it is
    state = json.loads(read(out / ".reportupdater-state.json"))
    assert list(state["reports"]["flaky"]["failures"]) == ["2026-01-03"]
    assert files_under(out) == {"fine.tsv": tsv("date\tvalue", "2026-01-03\t1", "2026-01-04\t1"),
                                "flaky.tsv": tsv("date\tvalue", "2026-01-02\t1", "2026-01-04\t1")}
    assert "reportupdater_intervals_failed" in read(metrics)
    assert read(folder / ".reruns" / "1767571200000").endswith("\nflaky\n")  # kept: 01-03 failed
    for path in (out / ".reportupdater-state.json", out / "fine.tsv", metrics,
                 folder / ".reruns" / "1767571200000"):
        assert not path.is_symlink() and path.is_file(), path


def test_a_link_at_an_output_file_is_refused_naming_it_and_left_alone(tmp_path):
    folder = make_folder(tmp_path, TWO_REPORTS, scripts={"flaky": OK_SCRIPT, "ok": OK_SCRIPT})
    out = tmp_path / "out"
    out.mkdir()
    outside = victim(tmp_path, tsv("date\tvalue", "2026-01-02\t7"))  # a TSV the run could read
    (out / "flaky.tsv").symlink_to(outside)

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 1, stderr
    assert error_lines(stderr) == [line for line in stderr.splitlines() if line.strip()]
    assert [line.split(" ", 1)[1] for line in error_lines(stderr)] == [
        f"ERROR flaky: {out / 'flaky.tsv'}: cannot read: it {LINK_REFUSED} "
        "(replace it with a real file or folder)"]
    assert (out / "flaky.tsv").is_symlink() and read(outside) == tsv("date\tvalue", "2026-01-02\t7")
    assert read(out / "fine.tsv") == tsv("date\tvalue", "2026-01-03\t1", "2026-01-04\t1")
    # The read-only views say so in one line too.
    code, stdout, stderr = run_cli("run", "--dry-run", folder, out, "--now", NOW)
    assert (code, "Traceback" in stderr) == (0, False), stderr
    assert f"flaky: cannot plan: {out / 'flaky.tsv'}: cannot read: it {LINK_REFUSED}" in stdout
    code, stdout, stderr = run_cli("status", "--json", folder, out, "--now", NOW)
    assert "Traceback" not in stderr and LINK_REFUSED in stdout, stderr


def test_a_link_at_the_state_file_is_neither_read_nor_replaced(tmp_path):
    folder = make_folder(tmp_path, TWO_REPORTS, scripts={"flaky": OK_SCRIPT, "ok": OK_SCRIPT})
    out = tmp_path / "out"
    out.mkdir()
    # A state file elsewhere that would keep 'flaky' waiting, were it read.
    memory = {"reports": {"flaky": {"last_started": None, "failures": {"2026-01-04": {
        "error": "x", "attempts": 5, "first_failed": "2026-01-01T00:00:00Z",
        "last_failed": "2026-01-05T04:00:00Z", "retry_after": "2026-01-06T00:00:00Z"}}}}}
    outside = victim(tmp_path, json.dumps(memory))
    state = out / ".reportupdater-state.json"
    state.symlink_to(outside)

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert warning_lines(stderr)[0].endswith(f"WARNING {state}: run state ignored: it {LINK_REFUSED} "
                                             "(replace it with a real file or folder); failed "
                                             "intervals are retried now and schedules start afresh")
    assert read(out / "flaky.tsv") == tsv("date\tvalue", "2026-01-02\t1", "2026-01-03\t1",
                                          "2026-01-04\t1")
    assert state.is_symlink() and read(outside) == json.dumps(memory)


def test_the_lock_is_the_output_folders_and_a_link_there_is_refused(tmp_path):
    folder = make_folder(tmp_path, TWO_REPORTS, scripts={"flaky": OK_SCRIPT, "ok": OK_SCRIPT})
    out = tmp_path / "out"
    out.mkdir()
    (folder / ".reportupdater.lock").symlink_to(victim(tmp_path))  # the old place: never used
    (out / ".reportupdater.lock").symlink_to(tmp_path / "victim")

    code, stdout, stderr = run_cli("run", folder, out, "--now", NOW)

    assert (code, stdout) == (2, ""), stderr
    assert [line.split(" ", 1)[1] for line in stderr.splitlines()] == [
        f"ERROR {out / '.reportupdater.lock'}: cannot open the lock file: it is a symbolic "
        "link, which reportupdater does not follow (remove it)"]
    assert read(tmp_path / "victim") == PRECIOUS
    assert files_under(out) == {}

    (out / ".reportupdater.lock").unlink()
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)
    assert code == 0, stderr
    assert read(tmp_path / "victim") == PRECIOUS
    assert read(out / ".reportupdater.lock").strip().isdigit()  # the run's PID
    assert (folder / ".reportupdater.lock").is_symlink()


def test_a_metrics_file_that_is_a_link_is_refused_in_one_line(tmp_path):
    folder = make_folder(tmp_path, TWO_REPORTS, scripts={"flaky": OK_SCRIPT, "ok": OK_SCRIPT})
    metrics = tmp_path / "reportupdater.prom"
    metrics.symlink_to(victim(tmp_path))
    code, _, stderr = run_cli("run", folder, tmp_path / "out", "--now", NOW, "--metrics-file", metrics)
    assert code == 1, stderr
    assert [line.split(" ", 1)[1] for line in error_lines(stderr)] == [
        f"ERROR {metrics}: cannot write the metrics file: it {LINK_REFUSED} "
        "(replace it with a real file or folder)"]
    assert metrics.is_symlink() and read(tmp_path / "victim") == PRECIOUS


# ------------------------------------------------------------ the Graphite queue

class Carbon:
    """A TCP server on 127.0.0.1 keeping every line sent to it (Graphite's
    plaintext protocol), one connection at a time."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return  # closed
            with connection:
                data = b""
                while chunk := connection.recv(65536):
                    data += chunk
            self.lines += data.decode("utf-8", errors="replace").splitlines()

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def carbon():
    server = Carbon()
    yield server
    server.close()


GRAPHITE_REPORT = """\
graphite:
  host: 127.0.0.1
  port: {port}
reports:
  counted:
    type: script
    execute: ok
    granularity: days
    starts: 2026-01-04
    graphite:
      path: "ru.{{_metric}}"
      metrics: {{value: value}}
"""
STAMP_0104 = 1767484800  # 2026-01-04T00:00Z


def test_queue_files_that_are_links_or_damaged_cost_a_warning_and_send_only_points(tmp_path, carbon):
    folder = make_folder(tmp_path, GRAPHITE_REPORT.format(port=carbon.port), scripts={"ok": OK_SCRIPT})
    out = tmp_path / "out"
    queue = publish.Queue(out, folder).folder
    queue.mkdir(parents=True)
    secret = victim(tmp_path, "secret.password 42 1767225600\n")  # looks like points
    (queue / "20260101T000000000000-1.txt").symlink_to(secret)
    (queue / "20260101T000000000000-2.txt").write_bytes(
        b"old.point 1 1767225600\nhalf a li\n\xff\xfe not UTF-8\n\nold.point 2 1767312000\n")
    os.mkfifo(queue / "20260101T000000000000-3.txt")
    (queue / "20260101T000000000000-4.txt").mkdir()

    code, _, stderr = run_cli("run", folder, out, "--now", NOW, timeout=60)

    assert code == 0, stderr
    assert "Traceback" not in stderr and "CRITICAL" not in stderr, stderr
    warnings = [line.split(" ", 1)[1] for line in warning_lines(stderr)]
    assert warnings == [
        f"WARNING {queue / '20260101T000000000000-1.txt'}: queued Graphite points not read: "
        f"it {LINK_REFUSED} (replace it with a real file or folder)",
        f"WARNING {queue / '20260101T000000000000-2.txt'}: 2 damaged lines of the Graphite queue "
        "dropped (not 'PATH VALUE TIMESTAMP')",
        f"WARNING {queue / '20260101T000000000000-3.txt'}: queued Graphite points not read: "
        "not a regular file",
        f"WARNING {queue / '20260101T000000000000-4.txt'}: queued Graphite points not read: "
        "not a regular file"], stderr
    wanted = ["old.point 1 1767225600", "old.point 2 1767312000", f"ru.value 1 {STAMP_0104}"]
    assert wait_for(lambda: len(carbon.lines) >= 3)
    assert carbon.lines == wanted
    assert read(secret) == "secret.password 42 1767225600\n"
    assert sorted(os.listdir(queue)) == ["20260101T000000000000-1.txt", "20260101T000000000000-3.txt",
                                         "20260101T000000000000-4.txt"]


def test_stale_queue_temp_files_are_removed_but_not_links_or_batches(tmp_path, carbon):
    folder = make_folder(tmp_path, GRAPHITE_REPORT.format(port=carbon.port), scripts={"ok": OK_SCRIPT})
    out = tmp_path / "out"
    queue = publish.Queue(out, folder).folder
    queue.mkdir(parents=True)
    (queue / ".20260101T000000000000-9.txt.0123456789abcdef.tmp").write_text("half a ba")
    (queue / ".20260101T000000000000-8.tmp").write_text("half")  # an older version's name
    (queue / ".20260101T000000000000-7.txt.fedcba9876543210.tmp").symlink_to(victim(tmp_path))
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)
    assert code == 0, stderr
    assert os.listdir(queue) == [".20260101T000000000000-7.txt.fedcba9876543210.tmp"]
    assert read(tmp_path / "victim") == PRECIOUS


def test_a_linked_queue_folder_is_neither_written_nor_read(tmp_path, caplog):
    folder = make_folder(tmp_path, GRAPHITE_REPORT.format(port=closed_port()), scripts={"ok": OK_SCRIPT})
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out).mkdir()
    (out / ".graphite-queue").symlink_to(elsewhere, target_is_directory=True)
    queue = publish.Queue(out, folder)
    with pytest.raises(atomic.SymlinkRefused) as caught:
        queue.add([publish.Point("ru.value", "1", STAMP_0104)])
    assert caught.value.strerror.startswith(f"{out / '.graphite-queue'} {LINK_REFUSED}")
    assert queue.files() == [] and queue.files() == []
    assert [record.getMessage() for record in caplog.records] == [
        f"{queue.folder}: Graphite queue not read: {out / '.graphite-queue'} {LINK_REFUSED} "
        "(replace it with a real file or folder)"]  # once, not per flush
    assert os.listdir(elsewhere) == []


# ------------------------------------------------------------ the state file, damaged

STATE_REPORTS = """\
reports:
  steady:
    type: script
    execute: ok
    granularity: days
    starts: 2026-01-04
  damaged:
    type: script
    execute: ok
    granularity: days
    starts: 2026-01-04
"""

# steady failed before and waits until after NOW: a state file that is kept
# keeps it waiting.
STEADY = {"last_started": None, "failures": {"2026-01-04": {
    "error": "earlier failure", "attempts": 3, "first_failed": "2026-01-04T01:00:00Z",
    "last_failed": "2026-01-05T04:00:00Z", "retry_after": "2026-01-06T00:00:00Z"}}}
A_FAILURE = {"error": "x", "attempts": 2, "first_failed": "2026-01-04T01:00:00Z",
             "last_failed": "2026-01-05T01:00:00Z", "retry_after": "2026-01-06T00:00:00Z"}

ENTRY_DEFECTS = {
    "retry_after without seconds": {"failures": {"2026-01-04": {**A_FAILURE, "retry_after": "2026-01-06T00:00Z"}}},
    "negative attempts": {"failures": {"2026-01-04": {**A_FAILURE, "attempts": -1}}},
    "attempts as text": {"failures": {"2026-01-04": {**A_FAILURE, "attempts": "3"}}},
    "attempts as boolean": {"failures": {"2026-01-04": {**A_FAILURE, "attempts": True}}},
    "error not text": {"failures": {"2026-01-04": {**A_FAILURE, "error": 12}}},
    "field missing": {"failures": {"2026-01-04": {k: v for k, v in A_FAILURE.items() if k != "retry_after"}}},
    "failure not an object": {"failures": {"2026-01-04": "failed"}},
    "failures a list": {"failures": ["2026-01-04"]},
    "last_started not a time": {"last_started": "yesterday"},
    "waiting not a time": {"waiting": {"2026-01-04": 5}},
    "report not an object": [1, 2],
}


def _state_folder(tmp_path: Path, state_text: str | bytes) -> tuple[Path, Path, Path]:
    folder = make_folder(tmp_path, STATE_REPORTS, scripts={"ok": OK_SCRIPT})
    out = tmp_path / "out"
    out.mkdir()
    state = out / ".reportupdater-state.json"
    if isinstance(state_text, bytes):
        state.write_bytes(state_text)
    else:
        state.write_text(state_text)
    return folder, out, state


@pytest.mark.parametrize("defect", list(ENTRY_DEFECTS))
def test_a_damaged_state_entry_is_dropped_with_one_warning_and_the_rest_kept(tmp_path, defect):
    text = json.dumps({"reports": {"steady": STEADY, "damaged": ENTRY_DEFECTS[defect]}})
    folder, out, state = _state_folder(tmp_path, text)

    for command in (["status"], ["status", "--json"], ["run", "--dry-run"], ["run"]):
        code, stdout, stderr = run_cli(*command, folder, out, "--now", NOW, timeout=30)
        assert "Traceback" not in stderr and "CRITICAL" not in stderr, (command, stderr)
        warnings = warning_lines(stderr)
        assert len(warnings) == 1 and f"WARNING {state}: run state entries ignored (not valid): " \
            "reports.damaged" in warnings[0], (command, stderr)
        # steady still waits for its retry time (kept): status and run say so.
        assert code == (0 if command == ["run", "--dry-run"] else 1), (command, stderr)
        if command == ["run", "--dry-run"]:
            assert stdout == ("steady: 0 intervals (1 waiting to retry: 2026-01-04)\n"
                              "damaged: 1 intervals: 2026-01-04\n")

    assert files_under(out) == {"damaged.tsv": tsv("date\tvalue", "2026-01-04\t1")}
    kept = json.loads(read(state))
    assert kept["reports"]["steady"] == STEADY and "damaged" not in kept["reports"]
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)
    assert (code, warning_lines(stderr)) == (1, []), stderr  # written afresh: no warning again


@pytest.mark.parametrize("content", [
    "{", b"\xff\xfe\x00garbage", "[]", '{"reports": []}', "null", "[" * 100_000,
    "directory", "fifo", "link"])
def test_an_unreadable_state_file_is_ignored_with_a_warning(tmp_path, content):
    folder, out, state = _state_folder(tmp_path, "")
    if content == "directory":
        state.unlink()
        state.mkdir()
    elif content == "fifo":
        state.unlink()
        os.mkfifo(state)  # reading it the plain way would wait for ever
    elif content == "link":
        state.unlink()
        state.symlink_to(victim(tmp_path, json.dumps({"reports": {"steady": STEADY}})))
    elif isinstance(content, bytes):
        state.write_bytes(content)
    else:
        state.write_text(content)

    for command in (["status"], ["run", "--dry-run"], ["run"]):
        code, stdout, stderr = run_cli(*command, folder, out, "--now", NOW, timeout=30)
        assert "Traceback" not in stderr and "CRITICAL" not in stderr, (command, stderr)
        warnings = warning_lines(stderr)
        assert warnings and all(str(state) in line for line in warnings), (command, stderr)
        assert f"WARNING {state}: run state ignored: " in warnings[0], (command, stderr)
        if command == ["run", "--dry-run"]:
            assert (code, stdout) == (0, "steady: 1 intervals: 2026-01-04\n"
                                         "damaged: 1 intervals: 2026-01-04\n"), stderr
        if command == ["run"]:
            assert code == 0, stderr
    assert files_under(out) == {"damaged.tsv": tsv("date\tvalue", "2026-01-04\t1"),
                                "steady.tsv": tsv("date\tvalue", "2026-01-04\t1")}


def test_a_huge_attempt_count_in_the_state_file_does_not_hang_the_run(tmp_path):
    # 2 ** (attempts - 2) hours of backoff, capped: computed without the power.
    failing = """\
    #!/bin/sh
    echo "still broken" >&2
    exit 1
    """
    folder = make_folder(tmp_path, """\
        reports:
          broken:
            type: script
            granularity: days
            starts: 2026-01-04
        """, scripts={"broken": failing})
    out = tmp_path / "out"
    out.mkdir()
    (out / ".reportupdater-state.json").write_text(json.dumps({"reports": {"broken": {
        "last_started": None, "failures": {"2026-01-04": {
            **A_FAILURE, "attempts": 10 ** 30, "retry_after": "2026-01-05T00:00:00Z"}}}}}))
    code, _, stderr = run_cli("run", folder, out, "--now", NOW, timeout=30)
    assert code == 1, stderr
    failure = json.loads(read(out / ".reportupdater-state.json"))["reports"]["broken"]["failures"]
    assert failure["2026-01-04"]["attempts"] == 10 ** 30 + 1
    assert failure["2026-01-04"]["retry_after"] == "2026-01-06T05:00:00Z"  # the 24 h cap


def test_an_output_file_that_is_a_fifo_fails_that_file_in_one_line(tmp_path):
    folder = make_folder(tmp_path, TWO_REPORTS, scripts={"flaky": OK_SCRIPT, "ok": OK_SCRIPT})
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "flaky.tsv")
    code, _, stderr = run_cli("run", folder, out, "--now", NOW, timeout=30)
    assert code == 1, stderr
    assert [line.split(" ", 1)[1] for line in error_lines(stderr)] == [
        f"ERROR flaky: {out / 'flaky.tsv'}: cannot read: not a regular file"]
    assert read(out / "fine.tsv") == tsv("date\tvalue", "2026-01-03\t1", "2026-01-04\t1")
    for command in (["status"], ["run", "--dry-run"]):
        code, _, stderr = run_cli(*command, folder, out, "--now", NOW, timeout=30)
        assert "Traceback" not in stderr and "CRITICAL" not in stderr, stderr


def test_validate_reads_output_headers_without_following_links_or_waiting_on_a_fifo(tmp_path):
    config = GRAPHITE_REPORT.format(port=closed_port()).replace('"ru.{_metric}"', '"ru.{kind}.{_metric}"')
    folder = make_folder(tmp_path, config, scripts={"ok": OK_SCRIPT})
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "counted.tsv")
    code, stdout, stderr = run_cli("validate", folder, out, timeout=30)
    assert code == 1 and "Traceback" not in stderr, stderr
    assert "{kind} is not an explode_by placeholder, _metric, or a column of the output files" in stdout
    (out / "counted.tsv").unlink()
    (out / "counted.tsv").symlink_to(victim(tmp_path, tsv("date\tkind\tvalue")))
    code, stdout, _ = run_cli("validate", folder, out, timeout=30)
    assert code == 1 and "{kind} is not" in stdout  # the linked file's header is not taken


# ------------------------------------------------------------ nothing written into the query folder

def listing(folder: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every entry under folder, links not followed: (type, size, mtime, mode)."""
    entries = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(root) / name
            status = path.lstat()
            entries[str(path.relative_to(folder))] = (stat.S_IFMT(status.st_mode), status.st_size,
                                                      status.st_mtime_ns, status.st_mode)
    return entries


def changes(before: dict, after: dict) -> list[str]:
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once this returns


def test_the_demo_writes_only_its_seed_database_and_reruns_into_its_folder(tmp_path):
    demo = tmp_path / "demo"
    shutil.copytree(ROOT / "queries" / "demo", demo, ignore=shutil.ignore_patterns("demo.db"))
    out = tmp_path / "out"
    now = ("--now", "2026-11-01T05:00")
    before = listing(demo)
    for command in (["run", demo, out], ["run", demo, out], ["run", "--dry-run", demo, out],
                    ["status", demo, out], ["status", "--json", "-v", demo, out],
                    ["validate", demo, out], ["smoke", demo, "daily_edits", "2026-10-01"],
                    ["grafana", demo],
                    ["rerun", demo, "2026-10-01", "2026-10-03", "-r", "daily_edits"],
                    ["run", demo, out, "-l", "info"]):
        code, _, stderr = run_cli(*command, *now)
        assert code == 0 and "Traceback" not in stderr, (command, stderr)
    # The seed's database, and the rerun request.
    changed = changes(before, listing(demo))
    assert "demo.db" in changed and ".reruns" in changed
    assert [name for name in changed if name != "demo.db" and not name.startswith(".reruns")] == []


PY_SCRIPT = """\
#!/usr/bin/env python3
import sys
import helper  # a module beside the script: no __pycache__/ may appear
print("date\\tvalue")
print(f"{sys.argv[1]}\\t{helper.VALUE}")
"""


def test_scripts_sql_and_graphite_write_nothing_into_the_query_folder(tmp_path):
    config = SQLITE_DB + f"""\
graphite:
  host: 127.0.0.1
  port: {closed_port()}
reports:
  daily_edits:
    db: db
    granularity: days
    starts: 2026-01-01
    graphite:
      path: "edits.{{_metric}}"
      metrics: {{edits: edits}}
  python:
    type: script
    granularity: days
    starts: 2026-01-03
    explode_by:
      wiki: wikis.txt
  shell:
    type: script
    execute: ok
    granularity: days
    starts: 2026-01-03
"""
    folder = make_folder(tmp_path, config, files={"daily_edits.sql": DAILY_EDITS_SQL,
                                                  "wikis.txt": "enwiki\ndewiki\n",
                                                  "helper.py": "VALUE = 7\n"},
                         scripts={"python": PY_SCRIPT, "ok": OK_SCRIPT})
    make_edits_db(folder)
    out = tmp_path / "out"
    before = listing(folder)
    for command in (["run", folder, out], ["run", folder, out], ["run", "--dry-run", folder, out],
                    ["status", folder, out], ["validate", folder, out],
                    ["smoke", folder, "python", "2026-01-03"],
                    ["smoke", folder, "daily_edits", "2026-01-03", "--show-graphite"],
                    ["graphite-backfill", folder, out]):
        code, _, stderr = run_cli(*command, "--now", NOW)
        assert "Traceback" not in stderr and "CRITICAL" not in stderr, (command, stderr)
    assert read(out / "python" / "enwiki.tsv") == tsv("date\tvalue", "2026-01-03\t7", "2026-01-04\t7")
    assert list((out / ".graphite-queue").rglob("*.txt"))  # Graphite is down: queued beside the outputs
    assert changes(before, listing(folder)) == []


@pytest.mark.parametrize("inherited", [False, True])
def test_commands_get_no_bytecode_from_the_library_and_from_the_command_line(tmp_path, monkeypatch,
                                                                              inherited):
    """The library passes commands an environment with
    PYTHONDONTWRITEBYTECODE=1; the command line sets it in its own
    environment instead, which commands then inherit."""
    from reportupdater import processes

    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    monkeypatch.setenv("REPORTUPDATER_TEST_MARK", "kept")
    if inherited:
        processes.inherit_child_environment()  # undone by monkeypatch's delenv
    printed = processes.run_command(
        ["sh", "-c", 'echo "$PYTHONDONTWRITEBYTECODE $REPORTUPDATER_TEST_MARK"'], tmp_path, 30, "test", "sh")
    assert printed == "1 kept\n"
    assert (os.environ.get("PYTHONDONTWRITEBYTECODE") == "1") is inherited


def _mount_tmpfs(folder: Path) -> None:
    folder.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder on a tmpfs, made read-only by remount(): root cannot write it
    either (chmod would not stop root)."""
    mount = tmp_path / "ro"
    _mount_tmpfs(mount)

    def remount() -> None:
        done = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")

    yield mount, remount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_query_folder_on_a_read_only_mount_runs(tmp_path, read_only_folder):
    mount, remount = read_only_folder
    folder = make_folder(mount, SQLITE_DB + """\
reports:
  daily_edits:
    db: db
    granularity: days
    starts: 2026-01-03
  shell:
    type: script
    execute: ok
    granularity: days
    starts: 2026-01-03
""", files={"daily_edits.sql": DAILY_EDITS_SQL}, scripts={"ok": OK_SCRIPT})
    make_edits_db(folder)
    remount()
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert files_under(out) == {"daily_edits.tsv": tsv("date\tedits", "2026-01-03\t0", "2026-01-04\t3"),
                                "shell.tsv": tsv("date\tvalue", "2026-01-03\t1", "2026-01-04\t1")}
    # A rerun request cannot be written there: one line, naming the file.
    code, _, stderr = run_cli("rerun", folder, "2026-01-03", "2026-01-04", "--now", NOW)
    assert code == 2
    assert len(stderr.splitlines()) == 1, stderr
    assert f" ERROR {folder / '.reruns'}/" in stderr, stderr
    assert stderr.rstrip().endswith(": cannot write the rerun request: Read-only file system"), stderr


def test_a_missing_sqlite_database_is_not_created(tmp_path):
    folder = make_folder(tmp_path, SQLITE_DB + """\
reports:
  daily_edits:
    db: db
    granularity: days
    starts: 2026-01-04
""", files={"daily_edits.sql": DAILY_EDITS_SQL})
    code, _, stderr = run_cli("run", folder, tmp_path / "out", "--now", NOW)
    assert code == 1, stderr
    assert f"sqlite database {folder / 'data.db'} does not exist" in stderr, stderr
    assert sorted(os.listdir(folder)) == ["config.yaml", "daily_edits.sql"]


# ------------------------------------------------------------ one run per output folder

# Holds its interval until RELEASE exists (only when HOLD is set).
HOLDS = """\
#!/bin/sh
if [ -n "$HOLD" ]; then
  touch "$HOLD/started"
  n=0
  while [ ! -e "$HOLD/release" ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n + 1)); done
fi
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""

HOLDING = """\
reports:
  held:
    type: script
    granularity: days
    starts: 2026-01-04
"""


def _start_holding_run(tmp_path: Path, folder: Path, out: Path):
    signals = tmp_path / "signals"
    signals.mkdir()
    process = start_cli("run", folder, out, "--now", NOW, env={"HOLD": str(signals)})
    assert wait_for(lambda: (signals / "started").exists(), timeout=30), "the first run never started"
    return process, signals


def test_two_output_folders_of_one_query_folder_may_run_at_once(tmp_path):
    folder = make_folder(tmp_path, HOLDING, scripts={"held": HOLDS})
    first, signals = _start_holding_run(tmp_path, folder, tmp_path / "out1")
    try:
        code, _, stderr = run_cli("run", folder, tmp_path / "out2", "--now", NOW)
        assert code == 0 and "another run" not in stderr, stderr
        assert files_under(tmp_path / "out2") == {"held.tsv": tsv("date\tvalue", "2026-01-04\t1")}
        assert first.poll() is None, "the first run ended too early for this test to mean anything"
    finally:
        (signals / "release").touch()
        first.communicate(timeout=60)
    assert first.returncode == 0
    assert files_under(tmp_path / "out1") == {"held.tsv": tsv("date\tvalue", "2026-01-04\t1")}


def test_two_query_folders_into_one_output_folder_take_turns(tmp_path):
    holding = make_folder(tmp_path, HOLDING, scripts={"held": HOLDS}, name="q1")
    other = make_folder(tmp_path, TWO_REPORTS, scripts={"flaky": OK_SCRIPT, "ok": OK_SCRIPT},
                        name="q2")
    out = tmp_path / "out"
    first, signals = _start_holding_run(tmp_path, holding, out)
    try:
        code, stdout, stderr = run_cli("run", other, out, "--now", NOW)
        assert (code, stdout) == (0, ""), stderr
        assert [line.split(" ", 1)[1] for line in stderr.splitlines()] == [
            f"WARNING {out / '.reportupdater.lock'}: another run holds this output folder; "
            "exiting without touching anything"]
        assert files_under(out) == {}
    finally:
        (signals / "release").touch()
        first.communicate(timeout=60)
    code, _, stderr = run_cli("run", other, out, "--now", NOW)
    assert code == 0, stderr
    assert sorted(files_under(out)) == ["fine.tsv", "flaky.tsv", "held.tsv"]
