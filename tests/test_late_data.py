# Late data: readiness checks (`ready_when: {script: ...}`, `ready_timeout`),
# `lookback` recomputing the newest intervals, bounded backfills
# (`max_intervals_per_run`, `--max-intervals`, `backfill_order`), rerun and
# run diffs, and `backfill_new_columns`. Real SQLite files and real scripts,
# the command line in a subprocess, always with --now.

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

from testkit import (DAILY_EDITS_SQL, NOW, SQLITE_DB, files_under, make_edits_db, make_folder,
                     read, run_cli, sql, tsv, unspent)

STATE = ".reportupdater-state.json"


def status_of(folder: Path, out: Path, now: str) -> dict:
    code, stdout, stderr = run_cli("status", folder, out, "--json", "--now", now)
    assert code in (0, 1), stderr
    (report,) = json.loads(stdout)["reports"]
    return report


def info_lines(stderr: str, text: str) -> list[str]:
    return [line for line in stderr.splitlines() if text in line]


# ------------------------------------------------- ready_when: {script: ...}

# The report prints the value a file holds for its day; the readiness check
# exits 0 only when that file exists (the day's data has landed).
VALUE_SCRIPT = """\
#!/bin/sh
printf 'date\\tvalue\\n%s\\t%s\\n' "$1" "$(cat "values/$1")"
"""
CHECK_SCRIPT = """\
#!/bin/sh
echo "$@" >> checks.log
test -f "values/$1"
"""


def ready_folder(tmp_path: Path, extra: str = "", days=("01", "02", "03")) -> Path:
    config = ("reports:\n  counts:\n    type: script\n    granularity: days\n"
              "    starts: 2026-01-01\n    ready_when: {script: check}\n" + extra)
    folder = make_folder(tmp_path, config, scripts={"counts": VALUE_SCRIPT, "check": CHECK_SCRIPT})
    (folder / "values").mkdir()
    for day in days:
        land(folder, f"2026-01-{day}", f"v{day}")
    return folder


def land(folder: Path, label: str, value: str) -> None:
    (folder / "values" / label).write_text(value + "\n")


READY_3 = tsv("date\tvalue", "2026-01-01\tv01", "2026-01-02\tv02", "2026-01-03\tv03")
READY_4 = READY_3 + "2026-01-04\tv04\n"


def test_ready_when_script_waits_for_the_day_then_computes_it(tmp_path):
    folder = ready_folder(tmp_path)
    out = tmp_path / "out"
    for _attempt in (1, 2):
        code, stdout, stderr = run_cli("run", folder, out, "--now", NOW, "-l", "info")
        # Waiting is not a failure: exit 0, no ERROR, nothing stored for the day
        # (not even the empty row an empty result gets).
        assert (code, stdout) == (0, ""), stderr
        assert " ERROR " not in stderr and " WARNING " not in stderr
        assert info_lines(stderr, "counts 2026-01-04: waiting for its data (since 2026-01-05T05:00Z)")
        assert "1 waiting for data" in stderr
        assert files_under(out) == {"counts.tsv": READY_3}
    report = status_of(folder, out, NOW)
    assert (report["waiting"], report["missing"], report["failing"]) == (1, 1, 0)
    # The check got the same arguments as the report's script: START END FOLDER.
    checks = read(folder / "checks.log").splitlines()
    assert f"2026-01-04 2026-01-05 {folder}" in checks
    assert checks.count(f"2026-01-04 2026-01-05 {folder}") == 2
    assert not any(line.startswith("2026-01-01") for line in checks[4:])  # done days: not checked

    land(folder, "2026-01-04", "v04")
    code, _, stderr = run_cli("run", folder, out, "--now", NOW, "-l", "info")
    assert code == 0, stderr
    assert "counts: 1 computed, 0 failed, 0 waiting to retry, 0 waiting for data" in stderr
    assert files_under(out) == {"counts.tsv": READY_4}
    report = status_of(folder, out, NOW)
    assert (report["waiting"], report["missing"], report["ok"]) == (0, 0, True)
    # Nothing left in the run's memory about the wait.
    assert not (out / STATE).exists() or "2026-01-04" not in read(out / STATE)


def test_ready_timeout_turns_the_wait_into_a_failure(tmp_path):
    folder = ready_folder(tmp_path, extra="    ready_timeout: 3600\n")
    out = tmp_path / "out"
    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-05T05:00", "-l", "info")
    assert code == 0, stderr
    assert "counts 2026-01-04: waiting for its data (since 2026-01-05T05:00Z)" in stderr

    # Within the timeout: still waiting.
    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-05T05:59")
    assert (code, stderr) == (0, "")

    # Past it: a failure, exit 1, naming since when it waits.
    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-05T06:01")
    assert code == 1
    assert ("ERROR counts 2026-01-04: failed: data not ready since 2026-01-05T05:00Z "
            "(ready_timeout 3600 s)") in stderr
    assert files_under(out) == {"counts.tsv": READY_3}
    report = status_of(folder, out, "2026-01-05T06:01")
    assert report["failing"] == 1 and not report["ok"]
    assert "data not ready since" in report["last_failure"]["error"]

    # The data lands: the next run computes the day.
    land(folder, "2026-01-04", "v04")
    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-05T06:02")
    assert (code, stderr) == (0, "")
    assert files_under(out) == {"counts.tsv": READY_4}


def test_an_interval_computed_after_its_ready_timeout_forgets_its_wait(tmp_path):
    # BUG: State.clear_failure pops the failure, and `or` then skips popping
    # the waiting entry, so "waiting since" outlives the computation.
    folder = ready_folder(tmp_path, extra="    ready_timeout: 3600\n")
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", "2026-01-05T05:00")[0] == 0
    assert run_cli("run", folder, out, "--now", "2026-01-05T07:00")[0] == 1  # timed out
    land(folder, "2026-01-04", "v04")
    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-05T08:00")
    assert (code, stderr) == (0, "")
    assert files_under(out) == {"counts.tsv": READY_4}

    # A day later the day's data is being loaded again and a rerun asks for
    # it: its fresh wait must not count from the wait of the day before.
    (folder / "values" / "2026-01-04").unlink()
    assert run_cli("rerun", folder, "2026-01-04", "2026-01-05", "--now", "2026-01-06T05:00")[0] == 0
    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-06T05:00", "-l", "info")
    assert "counts 2026-01-04: waiting for its data (since 2026-01-06T05:00Z)" in stderr, \
        f"the new wait failed at once, counted from the wait that ended a day before:\n{stderr}"
    assert code == 0, stderr


def test_a_rerun_whose_day_waits_for_its_data_is_kept_until_recomputed(tmp_path):
    # BUG: _consume_reruns deletes a request unless an interval of it failed;
    # an interval that only waited for its data was not recomputed either, so
    # the request is lost and the stale row stays for good.
    folder = ready_folder(tmp_path, days=("01", "02", "03", "04"))
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW) == (0, "", "")
    assert files_under(out) == {"counts.tsv": READY_4}
    # 2026-01-03 is being reloaded upstream (not ready) when its rerun is asked.
    (folder / "values" / "2026-01-03").unlink()
    assert run_cli("rerun", folder, "2026-01-03", "2026-01-04", "--now", NOW)[0] == 0
    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-05T06:00", "-l", "info")
    assert code == 0, stderr
    assert "counts 2026-01-03: waiting for its data" in stderr
    assert files_under(out) == {"counts.tsv": READY_4}  # the old row stays meanwhile
    # The reload finishes: the next run must recompute the day.
    land(folder, "2026-01-03", "reloaded")
    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-05T07:00")
    assert code == 0, stderr
    assert read(out / "counts.tsv") == READY_4.replace("2026-01-03\tv03", "2026-01-03\treloaded"), \
        "the rerun request was consumed while its day was still waiting for data"


# ----------------------------------------------------------------- lookback

LOOKBACK_CONFIG = SQLITE_DB + """\
reports:
  daily_edits:
    granularity: days
    starts: 2026-01-01
    db: db
    lookback: 2
"""

DAILY = tsv("date\tedits", "2026-01-01\t2", "2026-01-02\t1", "2026-01-03\t0", "2026-01-04\t3")


def test_lookback_picks_up_a_late_row(tmp_path):
    folder = make_folder(tmp_path, LOOKBACK_CONFIG, files={"daily_edits.sql": DAILY_EDITS_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW) == (0, "", "")
    assert files_under(out) == {"daily_edits.tsv": DAILY}
    path = out / "daily_edits.tsv"
    # Stored text the database would not give for the older days: if they were
    # recomputed, it would change.
    path.write_text(DAILY.replace("2026-01-01\t2", "2026-01-01\t02")
                    .replace("2026-01-02\t1", "2026-01-02\t1.0"))
    stored = read(path)

    # Late rows: one for 2026-01-03 (within the newest 2), one for 2026-01-01 (not).
    sql(folder, "INSERT INTO edits VALUES ('20260103120000', 'enwiki', 'human', 9);"
                "INSERT INTO edits VALUES ('20260101120000', 'enwiki', 'human', 9);")
    code, stdout, stderr = run_cli("run", folder, out, "--now", NOW, "-l", "info", "--diff")
    assert code == 0, stderr
    assert "daily_edits: 2 of 4 intervals to compute" in stderr
    assert "daily_edits: 2 computed, 0 failed" in stderr
    assert info_lines(stderr, "daily_edits 2026-01-03: recomputed: 1 rows and 1 cells changed")
    assert not info_lines(stderr, "daily_edits 2026-01-04: recomputed")  # same rows: no change
    assert stdout == ("--- daily_edits 2026-01-03 (stored)\n+++ daily_edits 2026-01-03 (recomputed)\n"
                      "  date\tedits\n- 2026-01-03\t0\n+ 2026-01-03\t1\n")
    text = read(path)
    assert text == stored.replace("2026-01-03\t0", "2026-01-03\t1")
    # Older rows byte for byte.
    assert text.splitlines(keepends=True)[:3] == stored.splitlines(keepends=True)[:3]

    # A day later: the new day, and again the newest 2 computed ones (so a
    # day is looked at again on 2 more runs after its own).
    sql(folder, "INSERT INTO edits VALUES ('20260103130000', 'enwiki', 'human', 9);"
                "INSERT INTO edits VALUES ('20260102130000', 'enwiki', 'human', 9);")
    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-06T05:00", "-l", "info")
    assert code == 0, stderr
    assert "daily_edits: 3 of 5 intervals to compute" in stderr
    assert read(path) == text.replace("2026-01-03\t1", "2026-01-03\t2") + "2026-01-05\t1\n"


# --------------------------------------------------- bounded, ordered backfills

# Its value is the end date, so every row depends on its interval only.
DAILY_SCRIPT = """\
#!/bin/sh
printf 'date\\tuntil\\n%s\\t%s\\n' "$1" "$2"
"""

LAST_DUE = date(2026, 1, 4)  # at NOW
ALL_400 = [(LAST_DUE - timedelta(days=n)).isoformat() for n in range(399, -1, -1)]  # oldest first


def backfill_folder(tmp_path: Path, extra: str = "") -> Path:
    config = ("reports:\n  daily:\n    type: script\n    granularity: days\n"
              f"    starts: {ALL_400[0]}\n" + extra)
    return make_folder(tmp_path, config, scripts={"daily": DAILY_SCRIPT})


def stored_dates(out: Path) -> list[str]:
    path = out / "daily.tsv"
    if not path.exists():
        return []
    lines = read(path).splitlines()
    assert lines[0] == "date\tuntil"
    return [line.split("\t")[0] for line in lines[1:]]


def expected_rows(dates: list[str]) -> str:
    return tsv("date\tuntil", *[(day, (date.fromisoformat(day) + timedelta(days=1)).isoformat())
                                for day in dates])


def test_400_intervals_newest_first_in_runs_of_50(tmp_path):
    assert len(ALL_400) == 400 and ALL_400[0] == "2024-12-01"
    folder = backfill_folder(tmp_path, "    max_intervals_per_run: 50\n")
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("run", folder, out, "--now", NOW, "-l", "info")
    assert (code, stdout) == (0, ""), stderr
    assert "daily: 350 intervals left for later runs (max 50 per run)" in stderr
    assert "daily: 50 computed, 0 failed" in stderr
    assert stored_dates(out) == ALL_400[-50:]
    for number in range(2, 9):
        code, _, stderr = run_cli("run", folder, out, "--now", NOW)
        assert (code, stderr) == (0, "")
        assert stored_dates(out) == ALL_400[-50 * number:], f"after run {number}"
    assert read(out / "daily.tsv") == expected_rows(ALL_400)
    code, _, stderr = run_cli("run", folder, out, "--now", NOW, "-l", "info")
    assert code == 0 and "daily: 0 computed" in stderr and "left for later runs" not in stderr


def test_max_intervals_on_the_command_line(tmp_path):
    folder = backfill_folder(tmp_path)
    out = tmp_path / "out"
    code, _, stderr = run_cli("run", folder, out, "--now", NOW, "--max-intervals", "10", "-l", "info")
    assert code == 0, stderr
    assert "daily: 390 intervals left for later runs (max 10 per run)" in stderr
    assert stored_dates(out) == ALL_400[-10:]
    # The smaller of the report's limit and the command line's wins.
    (folder / "config.yaml").write_text(read(folder / "config.yaml") + "    max_intervals_per_run: 5\n")
    assert run_cli("run", folder, out, "--now", NOW, "--max-intervals", "10")[0] == 0
    assert stored_dates(out) == ALL_400[-15:]
    # Bad values are usage errors.
    code, _, stderr = run_cli("run", folder, out, "--now", NOW, "--max-intervals", "0")
    assert code == 2 and "is not a whole number >= 1" in stderr
    assert stored_dates(out) == ALL_400[-15:]


def test_backfill_order_oldest_fills_history_first(tmp_path):
    folder = backfill_folder(tmp_path, "    backfill_order: oldest\n    max_intervals_per_run: 50\n")
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW) == (0, "", "")
    assert stored_dates(out) == ALL_400[:50]
    assert run_cli("run", folder, out, "--now", NOW, "--max-intervals", "7") == (0, "", "")
    assert stored_dates(out) == ALL_400[:57]
    assert read(out / "daily.tsv") == expected_rows(ALL_400[:57])


VERSIONED_SCRIPT = """\
#!/bin/sh
printf 'date\\tversion\\n%s\\t%s\\n' "$1" "$(cat version.txt)"
"""


def test_a_rerun_larger_than_max_intervals_per_run_completes_over_runs(tmp_path):
    # BUG: the request is consumed by the first run, which recomputed only the
    # newest 4 of its 10 days (and were it kept, every run would take the same
    # newest 4 again: the request says nothing of what is done already).
    folder = make_folder(tmp_path, """\
        reports:
          daily:
            type: script
            granularity: days
            starts: 2025-12-26
        """, scripts={"daily": VERSIONED_SCRIPT})
    (folder / "version.txt").write_text("1\n")
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW) == (0, "", "")
    days = [(date(2025, 12, 26) + timedelta(days=n)).isoformat() for n in range(10)]
    assert read(out / "daily.tsv") == tsv("date\tversion", *[(day, 1) for day in days])

    config = folder / "config.yaml"
    config.write_text(read(config) + "    max_intervals_per_run: 4\n")
    (folder / "version.txt").write_text("2\n")
    assert run_cli("rerun", folder, days[0], "2026-01-05", "--now", NOW)[0] == 0
    for _ in range(3):  # 4 + 4 + 2
        assert run_cli("run", folder, out, "--now", NOW) == (0, "", "")
    assert read(out / "daily.tsv") == tsv("date\tversion", *[(day, 2) for day in days]), \
        "three runs of 4 did not recompute the 10 days of the rerun"
    assert unspent(folder, out) == {}


# ------------------------------------------------------------------- diffs

DIFF_CONFIG = SQLITE_DB + """\
reports:
  daily_edits:
    granularity: days
    starts: 2026-01-01
    db: db
"""


def test_rerun_diff_and_run_diff_after_a_query_change(tmp_path):
    folder = make_folder(tmp_path, DIFF_CONFIG, files={"daily_edits.sql": DAILY_EDITS_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW) == (0, "", "")
    assert files_under(out) == {"daily_edits.tsv": DAILY}

    # The fix: count English Wikipedia only (2026-01-01: 2 -> 1, 2026-01-04: 3 -> 2).
    (folder / "daily_edits.sql").write_text(DAILY_EDITS_SQL + "AND wiki = 'enwiki'\n")
    code, stdout, stderr = run_cli("rerun", folder, "2026-01-02", "2026-01-05", "-r", "daily_edits",
                                   "--diff", "--output-folder", out, "--now", NOW, "-l", "info")
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].startswith("daily_edits: marked to be recomputed for 2026-01-02..2026-01-05")
    assert lines[1:] == ["--- daily_edits 2026-01-04 (stored)",
                         "+++ daily_edits 2026-01-04 (recomputed)",
                         "  date\tedits",
                         "- 2026-01-04\t3",
                         "+ 2026-01-04\t2"]
    assert info_lines(stderr, "daily_edits 2026-01-04: recomputed: 1 rows and 1 cells changed")
    assert not info_lines(stderr, "2026-01-02: recomputed") and not info_lines(stderr, "2026-01-03: recomputed")
    assert "daily_edits: 3 computed, 0 failed" in stderr
    assert unspent(folder, out) == {}  # recomputed now: the request is done
    assert files_under(out) == {"daily_edits.tsv": DAILY.replace("2026-01-04\t3", "2026-01-04\t2")}

    # A request for the rest, then `run --diff`.
    code, stdout, _ = run_cli("rerun", folder, "2026-01-01", "2026-01-02", "--now", NOW)
    assert code == 0 and "--- " not in stdout
    code, stdout, stderr = run_cli("run", folder, out, "--now", NOW, "--diff", "-l", "info")
    assert code == 0, stderr
    assert stdout == ("--- daily_edits 2026-01-01 (stored)\n+++ daily_edits 2026-01-01 (recomputed)\n"
                      "  date\tedits\n- 2026-01-01\t2\n+ 2026-01-01\t1\n")
    assert info_lines(stderr, "daily_edits 2026-01-01: recomputed: 1 rows and 1 cells changed")
    assert files_under(out) == {"daily_edits.tsv": tsv("date\tedits", "2026-01-01\t1", "2026-01-02\t1",
                                                       "2026-01-03\t0", "2026-01-04\t2")}


# ------------------------------------------------------- backfill_new_columns

NEW_COLUMN_SQL = DAILY_EDITS_SQL.replace(
    "COUNT(*) AS edits", "COUNT(*) AS edits, COALESCE(SUM(size), 0) AS bytes")


def new_column_folder(tmp_path: Path, extra: str = "") -> Path:
    folder = make_folder(tmp_path, SQLITE_DB + f"""\
reports:
  daily_edits:
    granularity: days
    starts: 2026-01-01
    db: db
    backfill_new_columns: true
{extra}""", files={"daily_edits.sql": DAILY_EDITS_SQL})
    make_edits_db(folder)
    return folder


WITH_BYTES = tsv("date\tedits\tbytes", "2026-01-01\t2\t30", "2026-01-02\t1\t5", "2026-01-03\t0\t0",
                 "2026-01-04\t3\t11", "2026-01-05\t1\t100")


def test_a_new_column_is_filled_in_history(tmp_path):
    folder = new_column_folder(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW) == (0, "", "")
    assert files_under(out) == {"daily_edits.tsv": DAILY}

    (folder / "daily_edits.sql").write_text(NEW_COLUMN_SQL)
    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-06T05:00", "-l", "info")
    assert code == 0, stderr
    assert "daily_edits: new columns bytes: intervals before 2026-01-05 will be computed again" in stderr
    assert files_under(out) == {"daily_edits.tsv": tsv(
        "date\tedits\tbytes", "2026-01-01\t2\t", "2026-01-02\t1\t", "2026-01-03\t0\t",
        "2026-01-04\t3\t", "2026-01-05\t1\t100")}
    (request,) = files_under(folder / ".reruns").values()
    assert request == "2026-01-01\n2026-01-05\ndaily_edits\n"

    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-06T05:00", "-l", "info")
    assert code == 0, stderr
    assert "daily_edits: 4 computed, 0 failed" in stderr
    assert "new columns" not in stderr  # nothing new any more: no further request
    assert files_under(out) == {"daily_edits.tsv": WITH_BYTES}
    assert unspent(folder, out) == {}  # consumed

    code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-06T05:00", "-l", "info")
    assert code == 0 and "daily_edits: 0 computed" in stderr
    assert files_under(out) == {"daily_edits.tsv": WITH_BYTES}


def test_a_new_column_filled_in_history_a_few_intervals_per_run(tmp_path):
    # BUG: the request for the older intervals is consumed by the first run
    # that recomputes any of them, even when max_intervals_per_run left the
    # others for later runs: those rows keep an empty column for good.
    folder = new_column_folder(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW) == (0, "", "")
    assert files_under(out) == {"daily_edits.tsv": DAILY}

    (folder / "daily_edits.sql").write_text(NEW_COLUMN_SQL)
    config = folder / "config.yaml"
    config.write_text(read(config) + "    max_intervals_per_run: 2\n")
    for _ in range(4):  # 1 new interval, then 4 older ones 2 by 2, and a spare run
        code, _, stderr = run_cli("run", folder, out, "--now", "2026-01-06T05:00")
        assert (code, stderr) == (0, "")
    assert files_under(out) == {"daily_edits.tsv": WITH_BYTES}, \
        "the rerun request was consumed before every older interval was recomputed"
    assert unspent(folder, out) == {}
