# Versions of a report's query: which version computed which stored rows
# (OUTPUT/.reportupdater-versions/), what `status` and `changes` say of them,
# and `on_query_change` (keep, rerun, rerun_since) recomputing what an older
# version computed through the normal path, over bounded runs and a run
# killed for real. Real runs through the CLI on SQLite and script reports.

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from reportupdater import config, journal, versions
from reportupdater.lock import FolderLock

from testkit import (DATE_EXPR, NOW, SQLITE_DB, make_edits_db, make_folder, read, run_cli, tsv)

REPO = Path(__file__).resolve().parent.parent
NEXT_DAY = "2026-01-06T05:00"  # 2026-01-05 due as well

EDITS_SQL = ("SELECT " + DATE_EXPR + " AS date, COUNT(*) AS edits\n"
             "FROM edits WHERE ts >= '{from_timestamp}' AND ts < '{to_timestamp}'\n")
FIXED_SQL = EDITS_SQL.replace("COUNT(*) AS edits", "COUNT(*) * 10 AS edits")

CONFIG = SQLITE_DB + """\
reports:
  daily:
    granularity: days
    starts: 2026-01-01
    db: db
"""

STORED = tsv("date\tedits", "2026-01-01\t2", "2026-01-02\t1", "2026-01-03\t0", "2026-01-04\t3")
FIXED = tsv("date\tedits", "2026-01-01\t20", "2026-01-02\t10", "2026-01-03\t0", "2026-01-04\t30",
            "2026-01-05\t10")


def sql_folder(tmp_path: Path, keys: str = "") -> Path:
    folder = make_folder(tmp_path, CONFIG + keys, files={"daily.sql": EDITS_SQL})
    make_edits_db(folder)
    return folder


def status_json(folder: Path, out: Path, now: str = NEXT_DAY, verbose: bool = False) -> dict:
    code, stdout, stderr = run_cli("status", folder, out, "--json", "--now", now,
                                   *(["-v"] if verbose else []))
    assert "Traceback" not in stderr
    return json.loads(stdout)["reports"][0]


def record(out: Path, report: str = "daily") -> dict:
    return json.loads((out / versions.FOLDER_NAME / f"{report}.json").read_text())


def ranges(out: Path, file: str = "daily.tsv", report: str = "daily") -> list[list[str]]:
    return record(out, report)["files"].get(file, [])


def run(folder: Path, out: Path, now: str = NEXT_DAY, *args: str):
    result = run_cli("run", folder, out, "--now", now, *args)
    assert result.returncode == 0, result.stderr
    return result


# ------------------------------------------------------------------ keep


def test_keep_recomputes_nothing_and_status_counts_the_old_rows(tmp_path):
    folder, out = sql_folder(tmp_path), tmp_path / "out"
    run(folder, out, NOW)
    assert read(out / "daily.tsv") == STORED
    first = record(out)["current"]
    assert ranges(out) == [["2026-01-01", "2026-01-04", first]]

    (folder / "daily.sql").write_text(FIXED_SQL)
    before = status_json(folder, out)
    assert before["versions"]["older"] == 4 and before["versions"]["in_use_since"] is None
    assert before["missing"] == 1 and before["next_run"]["compute"] == 1  # only the new day

    run(folder, out)
    assert read(out / "daily.tsv") == STORED + "2026-01-05\t10\n"
    second = record(out)["current"]
    assert second != first
    assert ranges(out) == [["2026-01-01", "2026-01-04", first], ["2026-01-05", "2026-01-05", second]]
    code, stdout, _ = run_cli("status", folder, out, "--now", NEXT_DAY)
    assert code == 0  # older rows are not missing
    assert ("daily: 4 intervals computed by an older version (on_query_change: keep: kept as they are; "
            "'reportupdater changes' shows the diff); the current version "
            f"{second} is in use since 2026-01-06T05:00:00Z") in stdout
    after = status_json(folder, out, verbose=True)
    assert after["versions"] == {"current": second, "in_use_since": "2026-01-06T05:00:00Z",
                                 "used_before": None, "older": 4,
                                 "unknown": 0, "on_query_change": "keep", "recompute_next_run": 0}
    assert after["combinations"][0]["versions"] == {"older": 4, "unknown": 0,
                                                    "older_ranges": "2026-01-01..2026-01-04"}


def test_scheduling_keys_are_not_part_of_the_version(tmp_path):
    folder, out = sql_folder(tmp_path), tmp_path / "out"
    run(folder, out, NOW)
    config = folder / "config.yaml"
    config.write_text(config.read_text() + "    batch: 2\n    lookback: 1\n    max_intervals_per_run: 5\n"
                                           "    timeout: 60\n    backfill_order: oldest\n")
    assert status_json(folder, out)["versions"]["older"] == 0
    config.write_text(config.read_text() + "    timezone: Europe/Paris\n")  # decides the result
    assert status_json(folder, out)["versions"]["older"] == 4


# ------------------------------------------------------------------ rerun


def test_rerun_recomputes_every_old_row_newest_first_over_bounded_runs(tmp_path):
    folder = sql_folder(tmp_path, "    on_query_change: rerun\n    max_intervals_per_run: 2\n")
    out = tmp_path / "out"
    run(folder, out, NOW)
    run(folder, out, NOW)
    assert read(out / "daily.tsv") == STORED
    (folder / "daily.sql").write_text(FIXED_SQL)

    code, stdout, _ = run_cli("run", folder, out, "--now", NEXT_DAY, "--dry-run")
    assert stdout == ("daily: 2 intervals: 2026-01-04..2026-01-05 (3 left for later runs: "
                      "2026-01-01..2026-01-03) (1 of them computed by an older version, recomputed "
                      "(on_query_change): 2026-01-04)\n")
    shown = status_json(folder, out, verbose=True)
    assert shown["versions"]["recompute_next_run"] == 1
    assert {"intervals": "2026-01-04", "reason": "computed by an older version of the report "
            "(on_query_change: the next run recomputes it)"} in shown["combinations"][0]["why_missing"]

    result = run(folder, out, NEXT_DAY, "--diff")
    assert "- 2026-01-04\t3\n+ 2026-01-04\t30" in result.stdout  # through the normal --diff path
    assert read(out / "daily.tsv") == tsv("date\tedits", "2026-01-01\t2", "2026-01-02\t1", "2026-01-03\t0",
                                          "2026-01-04\t30", "2026-01-05\t10")
    assert status_json(folder, out)["versions"]["older"] == 3
    run(folder, out, NEXT_DAY)  # 2026-01-03 and 2026-01-02
    assert status_json(folder, out)["versions"]["older"] == 1
    run(folder, out, NEXT_DAY, "--max-intervals", "1")
    assert read(out / "daily.tsv") == FIXED
    final = status_json(folder, out)
    assert final["versions"]["older"] == 0 and final["ok"]
    assert ranges(out) == [["2026-01-01", "2026-01-05", record(out)["current"]]]
    code, stdout, _ = run_cli("run", folder, out, "--now", NEXT_DAY, "--dry-run")
    assert stdout == "daily: 0 intervals\n"


def test_rerun_since_recomputes_only_from_its_date(tmp_path):
    folder = sql_folder(tmp_path, "    on_query_change: {rerun_since: 2026-01-03}\n")
    out = tmp_path / "out"
    run(folder, out, NOW)
    (folder / "daily.sql").write_text(FIXED_SQL)
    run(folder, out)
    assert read(out / "daily.tsv") == tsv("date\tedits", "2026-01-01\t2", "2026-01-02\t1", "2026-01-03\t0",
                                          "2026-01-04\t30", "2026-01-05\t10")
    shown = status_json(folder, out)
    assert shown["versions"]["older"] == 2 and shown["versions"]["recompute_next_run"] == 0
    assert shown["versions"]["on_query_change"] == "{rerun_since: 2026-01-03}"
    assert shown["ok"]


def test_recomputed_points_that_changed_are_published_again(tmp_path):
    folder = sql_folder(tmp_path, "    on_query_change: rerun\n"
                                  "    graphite:\n      path: 'test.daily.{_metric}'\n"
                                  "      metrics:\n        edits: edits\n")
    config = folder / "config.yaml"
    config.write_text("graphite:\n  host: 127.0.0.1\n  port: 9\n" + config.read_text())  # down: queued
    out = tmp_path / "out"
    run_cli("run", folder, out, "--now", NOW)
    queue = out / ".graphite-queue"
    sent_before = {path.name for path in queue.rglob("*.txt")}
    (folder / "daily.sql").write_text(FIXED_SQL)
    run_cli("run", folder, out, "--now", NEXT_DAY)
    new = "".join(path.read_text() for path in queue.rglob("*.txt") if path.name not in sent_before)
    assert "test.daily.edits 30 " in new and "test.daily.edits 20 " in new  # changed: sent again
    assert "test.daily.edits 0 " not in new  # 2026-01-03 did not change


# ------------------------------------------------------------------ killed runs

SCRIPT = """\
#!/bin/sh
# START END FOLDER; the value is the day of the month times the FACTOR factor.sh sets.
# calls.log is its own log: data, not part of its version.
if [ -f "$3/.kill-at-$1" ]; then kill -9 $PPID; sleep 5; fi
echo "$1" >> "$3/calls.log"
. "$3/factor.sh"
printf 'date\\tvalue\\n%s\\t%s\\n' "$1" "$(( $(echo "$1" | cut -c9-10 | sed 's/^0//') * FACTOR ))"
"""

SCRIPT_CONFIG = """\
reports:
  calc:
    type: script
    granularity: days
    starts: 2026-01-01
"""


def script_folder(tmp_path: Path, keys: str = "") -> Path:
    folder = make_folder(tmp_path, SCRIPT_CONFIG + keys, files={"factor.sh": "FACTOR=1\n"},
                         scripts={"calc": SCRIPT})
    return folder


def values(out: Path) -> list[str]:
    return [line.split("\t")[1] for line in read(out / "calc.tsv").splitlines()[1:]]


def test_a_killed_recomputation_labels_exactly_what_it_journaled_and_the_next_run_finishes(tmp_path):
    folder, out = script_folder(tmp_path, "    on_query_change: rerun\n"), tmp_path / "out"
    run(folder, out, NOW)
    old = record(out, "calc")["current"]
    (folder / "factor.sh").write_text("FACTOR=5\n")  # the helper file the script reads
    (folder / ".kill-at-2026-01-02").write_text("")
    # A run journaling every interval (newest first: 01-05, 01-04, 01-03), SIGKILLed by
    # the script of 2026-01-02.
    code = subprocess.run(
        [sys.executable, "-c",
         "import sys; from datetime import datetime, timezone; from pathlib import Path\n"
         "from reportupdater import runner\n"
         "runner.run(runner.RunOptions(Path(sys.argv[1]), Path(sys.argv[2]), "
         "now=datetime(2026, 1, 6, 5, tzinfo=timezone.utc), jobs=1, checkpoint_intervals=1))",
         str(folder), str(out)],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60).returncode
    assert code == -9
    assert (out / journal.JOURNAL_NAME).exists()
    assert values(out) == ["1", "2", "3", "4"]  # the files are written at the end: untouched
    assert ranges(out, "calc.tsv", "calc") == [["2026-01-01", "2026-01-04", old]]
    new = versions.fingerprint(config.load(folder).reports["calc"], folder).id
    assert record(out, "calc")["current"] == new  # noted before computing, with its texts
    assert record(out, "calc")["versions"][new]["sources"]["factor.sh"] == "FACTOR=5\n"

    # What the next run finds once it has replayed the journal (done here on a copy).
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(out), str(copy)], check=True)
    with FolderLock(copy) as lock:
        journal.replay_into(lock)
    assert values(copy) == ["1", "2", "15", "20", "25"]
    assert ranges(copy, "calc.tsv", "calc") == [["2026-01-01", "2026-01-02", old],
                                                ["2026-01-03", "2026-01-05", new]]

    (folder / ".kill-at-2026-01-02").unlink()
    run(folder, out)
    assert values(out) == ["5", "10", "15", "20", "25"]
    assert ranges(out, "calc.tsv", "calc") == [["2026-01-01", "2026-01-05", new]]


def test_a_journal_from_before_versions_replays_as_unknown_version(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "r.tsv").write_text(tsv("date\tvalue", "2026-01-01\t1"))
    payload = (b'F\t0\t["r", "r.tsv", "", false]\nH\t0\t["date", "value"]\n'
               b"R\t0\t0\t2026-01-02\t1\n2026-01-02\t2\n")
    frame = struct.pack(">4sII", journal.MAGIC, len(payload), zlib.crc32(payload)) + payload
    (out / journal.JOURNAL_NAME).write_bytes(frame)
    with FolderLock(out) as lock:
        replayed = journal.replay_into(lock)
    assert replayed.intervals == 1
    assert read(out / "r.tsv") == tsv("date\tvalue", "2026-01-01\t1", "2026-01-02\t2")
    assert record(out, "r")["files"] == {}  # nothing labelled: unknown version


# ------------------------------------------------------------------ scripts, changing back


def test_a_script_whose_helper_changes_and_changes_back(tmp_path):
    folder, out = script_folder(tmp_path), tmp_path / "out"
    run(folder, out, NOW)
    first = record(out, "calc")["current"]
    (folder / "factor.sh").write_text("FACTOR=5\n")
    shown = status_json(folder, out)
    assert shown["versions"]["older"] == 4 and shown["versions"]["current"] != first
    run(folder, out)  # keep: only 2026-01-05, with the new factor
    assert values(out) == ["1", "2", "3", "4", "25"]

    (folder / "factor.sh").write_text("FACTOR=1\n")  # back to the first version
    shown = status_json(folder, out)
    assert shown["versions"]["current"] == first
    assert shown["versions"]["older"] == 1  # its own old rows are current again; 2026-01-05 is not
    code, stdout, _ = run_cli("status", folder, out, "--now", NEXT_DAY, "-v")
    assert (f"calc: 1 intervals computed by an older version (on_query_change: keep: kept as they are; "
            f"'reportupdater changes' shows the diff); the current version {first} was in use until "
            "2026-01-05T05:00:00Z and computes again from the next run") in stdout
    assert f"calc {out / 'calc.tsv'}: 1 intervals by an older version: 2026-01-05" in stdout


def test_data_and_unrelated_files_beside_the_script_are_not_part_of_its_version(tmp_path):
    folder, out = script_folder(tmp_path), tmp_path / "out"
    run(folder, out, NOW)
    assert (folder / "calls.log").exists()  # the script's own log, named by it, rewritten every run
    (folder / "notes.md").write_text("nothing the script reads\n")
    (folder / "config.yaml").write_text((folder / "config.yaml").read_text() + "    lag: 60\n")
    assert status_json(folder, out)["versions"]["older"] == 0
    assert record(out, "calc")["versions"][record(out, "calc")["current"]]["sources"].keys() \
        == {"calc", "factor.sh", versions.KEYS_SOURCE}


# ------------------------------------------------------------------ unknown version


def test_outputs_without_a_record_are_of_unknown_version_never_recomputed(tmp_path):
    folder = sql_folder(tmp_path, "    on_query_change: rerun\n")
    out = tmp_path / "out"
    out.mkdir()
    original = tsv("date\tedits", "2026-01-01\t7", "2026-01-02\t7", "2026-01-03\t7", "2026-01-04\t7")
    (out / "daily.tsv").write_text(original)  # as the original tool left it: no state at all
    shown = status_json(folder, out, now=NOW, verbose=True)
    assert shown["versions"]["older"] == 0 and shown["versions"]["unknown"] == 4
    code, stdout, _ = run_cli("status", folder, out, "--now", NOW, "-v")
    assert "daily: 4 intervals of unknown version (written before versions were recorded, " \
           "or by the original tool)" in stdout
    run(folder, out, NEXT_DAY)
    assert read(out / "daily.tsv") == original + "2026-01-05\t1\n"  # nothing recomputed
    assert ranges(out) == [["2026-01-05", "2026-01-05", record(out)["current"]]]
    assert status_json(folder, out)["versions"]["unknown"] == 4


def test_an_unreadable_record_is_ignored_with_a_warning(tmp_path):
    folder = sql_folder(tmp_path, "    on_query_change: rerun\n")
    out = tmp_path / "out"
    run(folder, out, NOW)
    (out / versions.FOLDER_NAME / "daily.json").write_text("{not json")
    code, stdout, stderr = run_cli("status", folder, out, "--now", NOW, "--json")
    assert code == 0 and "version record ignored" in stderr
    assert json.loads(stdout)["reports"][0]["versions"]["unknown"] == 4


# ------------------------------------------------------------------ reruns and new columns


def test_a_rerun_request_records_the_version_it_used(tmp_path):
    folder, out = sql_folder(tmp_path), tmp_path / "out"
    run(folder, out, NOW)
    (folder / "daily.sql").write_text(FIXED_SQL)
    assert run_cli("rerun", folder, "2026-01-02", "2026-01-04", "--now", NOW)[0] == 0
    run(folder, out, NOW)
    current = record(out)["current"]
    old = [version for version in record(out)["versions"] if version != current][0]
    assert ranges(out) == [["2026-01-01", "2026-01-01", old], ["2026-01-02", "2026-01-03", current],
                           ["2026-01-04", "2026-01-04", old]]
    assert status_json(folder, out, now=NOW)["versions"]["older"] == 2


def test_backfill_new_columns_records_the_version_it_used(tmp_path):
    folder, out = sql_folder(tmp_path, "    backfill_new_columns: true\n"), tmp_path / "out"
    run(folder, out, NOW)
    (folder / "daily.sql").write_text(EDITS_SQL.replace("AS edits", "AS edits, 1 AS one"))
    run(folder, out)  # 2026-01-05 brings the column and asks for the history again
    run(folder, out)
    assert read(out / "daily.tsv").splitlines()[1] == "2026-01-01\t2\t1"
    assert ranges(out) == [["2026-01-01", "2026-01-05", record(out)["current"]]]
    assert status_json(folder, out)["versions"]["older"] == 0


# ------------------------------------------------------------------ changes


def test_changes_shows_the_diff_and_the_ranges_of_each_version(tmp_path):
    folder, out = sql_folder(tmp_path), tmp_path / "out"
    run(folder, out, NOW)
    code, stdout, _ = run_cli("changes", folder, out)
    assert (code, stdout) == (0, "no report has more than one version\n")
    first = record(out)["current"]
    (folder / "daily.sql").write_text(FIXED_SQL)
    run(folder, out)
    second = record(out)["current"]
    code, stdout, stderr = run_cli("changes", folder, out, "-r", "daily")
    assert code == 0, stderr
    assert stdout.startswith(
        "daily: 2 versions\n"
        f"  today  {second} (used 2026-01-06T05:00:00Z .. 2026-01-06T05:00:00Z)\n"
        "    2026-01-05 (1 file)\n"
        f"  older  {first} (used 2026-01-05T05:00:00Z .. 2026-01-05T05:00:00Z)\n"
        "    2026-01-01..2026-01-04 (1 file)\n"
        f"--- daily.sql ({first})\n"
        "+++ daily.sql (today)\n")
    assert "-SELECT " in stdout and "COUNT(*) * 10 AS edits" in stdout


def test_only_the_newest_texts_are_kept(tmp_path):
    folder, out = sql_folder(tmp_path), tmp_path / "out"
    for day in range(5, 12):
        (folder / "daily.sql").write_text(EDITS_SQL.replace("AS edits", f"+ {day} AS edits"))
        run(folder, out, f"2026-01-{day:02d}T05:00")
    kept = [version for version, entry in record(out)["versions"].items() if "sources" in entry]
    assert len(record(out)["versions"]) == 7 and len(kept) == versions.TEXTS_KEPT
    code, stdout, _ = run_cli("changes", folder, out)
    assert "are not kept (only the newest 5 versions' are)" in stdout


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("value, message", [
    ("sometimes", "key 'on_query_change': 'sometimes' is not keep, rerun or {rerun_since: YYYY-MM-DD}"),
    ("{rerun_since: 2026-02-30}", "key 'on_query_change.rerun_since': '2026-02-30' is not a date YYYY-MM-DD"),
    ("{since: 2026-01-01}", "key 'on_query_change': {since: ...} is not keep, rerun or"),
])
def test_a_bad_policy_is_one_line_naming_file_report_and_key(tmp_path, value, message):
    folder = sql_folder(tmp_path, f"    on_query_change: {value}\n")
    code, stdout, stderr = run_cli("validate", folder)
    assert code == 1
    line = [line for line in stdout.splitlines() if "on_query_change" in line]
    assert len(line) == 1 and "config.yaml" in line[0] and "report 'daily'" in line[0]
    assert message in line[0]


def test_the_policy_is_in_the_schema(tmp_path):
    code, stdout, _ = run_cli("schema")
    report = json.loads(stdout)["$defs"]["report"]["properties"]["on_query_change"]
    assert report["default"] == "keep" and "rerun_since" in json.dumps(report)


# ------------------------------------------------------------------ size


def test_the_record_of_900_files_over_ten_years_stays_small(tmp_path):
    """900 wikis x 3,650 days, three versions over the years, a few days
    recomputed by reruns here and there, some gaps: a few hundred KB."""
    from datetime import date, timedelta
    days = [(date(2016, 1, 1) + timedelta(days=n)).isoformat() for n in range(3650)]
    record_ = versions.ReportRecord(tmp_path, "wide")
    for wiki in range(900):
        path = tmp_path / "wide" / f"w{wiki:03d}wiki.tsv"
        stored = set(days) - {days[(wiki * 7 + n * 400) % 3650] for n in range(3)}  # gaps
        record_.computed(path, stored, stored, "a" * 16)
        record_.computed(path, days[1500:], stored, "b" * 16)
        record_.computed(path, days[3300:], stored, "c" * 16)
        record_.computed(path, {days[(wiki * 13) % 3650], days[(wiki * 29) % 3650]}, stored, "c" * 16)
    for version in ("a", "b", "c"):
        record_.versions[version * 16].sources = {"wide.sql": "SELECT 1\n" * 200}
    record_.save()
    size = record_.path.stat().st_size
    assert size < 2_000_000, size
    loaded = versions.load(tmp_path, "wide")
    assert loaded.files == record_.files
