# Silent gaps: work that no run ever does while every run says "ok"
# (issue 14: bounded reruns that never finish, reruns spent by a run into
# another output folder, results that never hold their own interval's date,
# a dry run that shows other work than the run does, a --now in the future).
# Real scripts and SQLite files; the CLI in a subprocess, as cron runs it.

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, UTC

import pytest

from testkit import (NOW, files_under, make_folder, read, run_cli, tsv, unspent)

# A script report whose value for every date is the text of the file `value`:
# change the file and recomputed dates show it.
FROM_FILE = """\
#!/bin/sh
printf 'date\\tvalue\\n'
printf '%s\\t%s\\n' "$1" "$(cat "$(dirname "$0")/value")"
"""

# The same for hours: the first column is the hour's start.
FROM_FILE_HOURLY = """\
#!/bin/sh
printf 'date\\tvalue\\n'
printf '%sT%s:00:00\\t%s\\n' "$(echo "$1" | cut -c1-10)" "$(echo "$1" | cut -c12-13)" \
  "$(cat "$(dirname "$0")/value")"
"""


def days(first: str, count: int) -> list[str]:
    start = datetime.strptime(first, "%Y-%m-%d")
    return [(start + timedelta(days=n)).strftime("%Y-%m-%d") for n in range(count)]


def values(path) -> dict[str, str]:
    return dict(line.split("\t") for line in read(path).splitlines()[1:])


def bounded_folder(tmp_path, granularity="days", starts="2026-08-01", limit=1, script=FROM_FILE):
    config = f"""\
reports:
  r:
    type: script
    granularity: {granularity}
    starts: {starts}
    max_intervals_per_run: {limit}
"""
    return make_folder(tmp_path, config, files={"value": "old\n"}, scripts={"r": script})


# ------------------------------------------------------------ 1. bounded reruns finish


def test_a_rerun_bounded_to_one_interval_per_run_recomputes_its_whole_range(tmp_path):
    folder = bounded_folder(tmp_path)
    out = tmp_path / "out"
    now = "2026-08-21T05:00"  # due: 2026-08-01 .. 2026-08-20
    out.mkdir()
    (out / "r.tsv").write_text(tsv("date\tvalue", *(f"{day}\told" for day in days("2026-08-01", 20))))

    (folder / "value").write_text("new\n")
    code, _, stderr = run_cli("rerun", folder, "2026-08-01", "2026-08-06", "-r", "r", "--now", now)
    assert code == 0, stderr
    recomputed = []
    for run in range(5):
        code, _, stderr = run_cli("run", folder, out, "--now", now, "-l", "info")
        assert code == 0, stderr
        now_new = {day for day, value in values(out / "r.tsv").items() if value == "new"}
        # Newest first, one more interval every run: no run recomputes one again.
        assert len(now_new) == run + 1, (run, sorted(now_new), stderr)
        recomputed.append(sorted(now_new - set(recomputed))[0])
    assert recomputed == ["2026-08-05", "2026-08-04", "2026-08-03", "2026-08-02", "2026-08-01"]
    assert values(out / "r.tsv") == {day: "new" if day < "2026-08-06" else "old"
                                     for day in days("2026-08-01", 20)}
    assert unspent(folder, out) == {}
    # Spent: a later run computes nothing.
    code, _, stderr = run_cli("run", folder, out, "--now", now, "-l", "info")
    assert code == 0, stderr
    assert "r: 0 computed" in stderr


def test_a_bounded_rerun_of_an_hourly_report_moves_on_every_run(tmp_path):
    folder = bounded_folder(tmp_path, "hours", "2026-08-01", limit=2, script=FROM_FILE_HOURLY)
    out = tmp_path / "out"
    now = "2026-08-01T10:05"  # due: hours 00 .. 09
    for _ in range(5):
        assert run_cli("run", folder, out, "--now", now)[0] == 0
    assert len(values(out / "r.tsv")) == 10
    (folder / "value").write_text("new\n")
    # One day (24 hours of which 10 are due) to recompute, two hours per run.
    assert run_cli("rerun", folder, "2026-08-01", "2026-08-02", "--now", "2026-08-02T00:00")[0] == 0
    seen = []
    for _ in range(5):
        code, _, stderr = run_cli("run", folder, out, "--now", now)
        assert code == 0, stderr
        seen.append(sum(1 for value in values(out / "r.tsv").values() if value == "new"))
    assert seen == [2, 4, 6, 8, 10]
    assert unspent(folder, out) == {}


# ------------------------------------------------------------ 2. spent per output folder


def test_a_trial_run_into_a_scratch_folder_does_not_spend_the_production_rerun(tmp_path):
    folder = bounded_folder(tmp_path, limit=100)
    production, scratch = tmp_path / "production", tmp_path / "scratch"
    now = "2026-08-06T05:00"
    assert run_cli("run", folder, production, "--now", now)[0] == 0
    (folder / "value").write_text("new\n")
    assert run_cli("rerun", folder, "2026-08-02", "2026-08-04", "--now", now)[0] == 0

    # The operator guide's trial run: a scratch output folder.
    assert run_cli("run", folder, scratch, "--now", now)[0] == 0
    assert set(values(scratch / "r.tsv").values()) == {"new"}
    assert unspent(folder, scratch) == {}
    assert len(unspent(folder, production)) == 1

    code, stdout, _ = run_cli("status", folder, production, "--json", "--now", now)
    assert json.loads(stdout)["reports"][0]["pending_reruns"] == 1
    code, stdout, _ = run_cli("status", folder, scratch, "--json", "--now", now)
    assert json.loads(stdout)["reports"][0]["pending_reruns"] == 0

    code, _, stderr = run_cli("run", folder, production, "--now", now)
    assert code == 0, stderr
    assert values(production / "r.tsv") == {"2026-08-01": "old", "2026-08-02": "new",
                                            "2026-08-03": "new", "2026-08-04": "old",
                                            "2026-08-05": "old"}
    assert unspent(folder, production) == {}
    # The request file stays as it was written (the original's format).
    assert list(files_under(folder / ".reruns").values()) == ["2026-08-02\n2026-08-04\nr\n"]


# ------------------------------------------------------------ 3. results off their interval

EARLY = """\
#!/bin/sh
# Dates its row one day before the interval (a classic off-by-one).
printf 'date\\tvalue\\n'
printf '%s\\t1\\n' "$(date -u -d "$1 - 1 day" +%Y-%m-%d)"
"""


def test_a_result_dated_a_day_early_fails_and_stores_nothing(tmp_path):
    config = """\
reports:
  early:
    type: script
    granularity: days
    starts: 2026-01-01
"""
    folder = make_folder(tmp_path, config, scripts={"early": EARLY})
    out = tmp_path / "out"
    metrics = tmp_path / "metrics.prom"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW, "--metrics-file", metrics)

    assert code == 1, stderr
    assert re.search(r"ERROR early 2026-01-02: failed: result has rows dated 2026-01-01, outside "
                     r"the interval 2026-01-02", stderr), stderr
    assert files_under(out) == {}
    assert 'reportupdater_intervals_failed{folder="' in read(metrics)
    assert re.search(r'reportupdater_intervals_failed\{[^}]*report="early"\} 4', read(metrics))
    code, stdout, _ = run_cli("status", folder, out, "--json", "--now", NOW)
    assert code == 1
    report = json.loads(stdout)["reports"][0]
    assert (report["missing"], report["failing"], report["ok"]) == (4, 4, False)


def test_a_batch_with_rows_outside_its_days_fails_whole(tmp_path):
    config = """\
reports:
  early:
    type: script
    granularity: days
    starts: 2026-01-01
    batch: 4
"""
    folder = make_folder(tmp_path, config, scripts={"early": EARLY})
    out = tmp_path / "out"
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)
    assert code == 1
    assert "outside the interval 2026-01-01..2026-01-04" in stderr
    assert files_under(out) == {}


# ------------------------------------------------------------ 4. dry run = run

LOOKBACK_CONFIG = """\
reports:
  r:
    type: script
    granularity: days
    starts: 2026-01-01
    lookback: 3
    max_intervals_per_run: 4
  other:
    type: script
    granularity: days
    starts: 2025-12-20
    backfill_order: oldest
    batch: 3
"""


def computed_by_run(stderr: str) -> set[tuple[str, str]]:
    found = set()
    for line in stderr.splitlines():
        match = re.search(r" INFO (\w+) (\S+?)(?:\.\.(\S+))?: computed \d+ rows", line)
        if match:
            report, first, last = match.groups()
            for day in days(first, 1 + (datetime.strptime(last, "%Y-%m-%d")
                                        - datetime.strptime(first, "%Y-%m-%d")).days if last else 1):
                found.add((report, day))
    return found


def planned_by_dry_run(stdout: str) -> set[tuple[str, str]]:
    found = set()
    for line in stdout.splitlines():
        report, _, rest = line.partition(": ")
        count, _, spans = rest.partition(" intervals")
        spans = spans.split(" (")[0].lstrip(": ")
        for span in filter(None, spans.split(", ")):
            first, _, last = span.partition("..")
            last = last or first
            for day in days(first, 1 + (datetime.strptime(last, "%Y-%m-%d")
                                        - datetime.strptime(first, "%Y-%m-%d")).days):
                found.add((report, day))
        assert len([d for r, d in found if r == report]) >= int(count)
    return found


@pytest.mark.parametrize("extra", [[], ["--max-intervals", "2"]])
def test_dry_run_prints_exactly_what_the_run_computes(tmp_path, extra):
    folder = make_folder(tmp_path, LOOKBACK_CONFIG, files={"value": "v\n"},
                         scripts={"r": FROM_FILE, "other": FROM_FILE})
    out = tmp_path / "out"
    for now in ("2026-01-05T05:00", "2026-01-08T05:00", "2026-01-09T05:00"):
        code, stdout, stderr = run_cli("run", folder, out, "--now", now, "--dry-run", *extra)
        assert code == 0, stderr
        planned = planned_by_dry_run(stdout)
        code, _, stderr = run_cli("run", folder, out, "--now", now, "-l", "info", *extra)
        assert code == 0, stderr
        assert computed_by_run(stderr) == planned, (now, stdout, stderr)
        assert planned  # every step computes something: lookback, backfill or new days


# ------------------------------------------------------------ 6. --now in the future


def test_a_now_later_than_the_clock_writes_nothing(tmp_path):
    config = """\
reports:
  r:
    type: script
    granularity: days
    starts: 2026-01-01
    max_data_points: 30
"""
    folder = make_folder(tmp_path, config, files={"value": "v\n"}, scripts={"r": FROM_FILE})
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW)[0] == 0
    before = files_under(out, hidden=True)
    future = (datetime.now(UTC) + timedelta(days=365 * 36)).strftime("%Y-%m-%dT%H:%M")

    code, stdout, stderr = run_cli("run", folder, out, "--now", future)

    assert code == 2
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert f"--now {future}Z is later than this machine's clock" in stderr
    assert files_under(out, hidden=True) == before
    code, _, stderr = run_cli("rerun", folder, "2026-01-01", "2026-01-02", "--now", future)
    assert code == 2 and "later than this machine's clock" in stderr
    assert not (folder / ".reruns").exists()
    # Looking ahead is fine: status, the dry run and smoke take it.
    assert run_cli("status", folder, out, "--now", future)[0] == 1
    code, stdout, stderr = run_cli("run", folder, out, "--now", future, "--dry-run")
    assert code == 0, stderr
    assert "r: 30 intervals" in stdout
    assert files_under(out, hidden=True) == before


def test_a_now_slightly_ahead_of_the_clock_is_accepted(tmp_path):
    config = """\
reports:
  r:
    type: script
    granularity: days
    starts: 2026-01-01
    max_data_points: 3
"""
    folder = make_folder(tmp_path, config, files={"value": "v\n"}, scripts={"r": FROM_FILE})
    soon = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M")
    code, _, stderr = run_cli("run", folder, tmp_path / "out", "--now", soon)
    assert code == 0, stderr
