# Reruns: the `rerun` command writes a request into QUERY/.reruns/, the next
# `run` recomputes the covered intervals and deletes the request. Requests in
# the original rerun_reports.py format must be honoured as they are.

from __future__ import annotations

import os
import re

import pytest

from testkit import (DAILY_EDITS_SQL, NOW, PER_WIKI_SQL, SQLITE_DB, assert_failed, files_under,
                     make_edits_db, make_folder, read, run_cli, sql, tsv, unspent)

CONFIG = SQLITE_DB + """\
reports:
  daily_edits:
    granularity: days
    starts: 2026-01-01
    db: db
  per_wiki:
    granularity: days
    starts: 2026-01-01
    db: db
"""

DAILY = tsv("date\tedits", "2026-01-01\t2", "2026-01-02\t1", "2026-01-03\t0", "2026-01-04\t3")
PER_WIKI = tsv(
    "date\twiki\tedits",
    "2026-01-01\tenwiki\t1",
    "2026-01-01\tdewiki\t1",
    "2026-01-02\tenwiki\t1",
    "2026-01-03\t\t",
    "2026-01-04\tenwiki\t2",
    "2026-01-04\tdewiki\t1",
)

# Written by the original rerun_reports.py: epoch milliseconds as the name.
ORIGINAL_NAME = "1767571200000"


def sql_folder(tmp_path, config=CONFIG):
    folder = make_folder(tmp_path, config, files={"daily_edits.sql": DAILY_EDITS_SQL,
                                                  "per_wiki.sql": PER_WIKI_SQL})
    make_edits_db(folder)
    return folder


def rerun_files(folder):
    return files_under(folder / ".reruns")


# ------------------------------------------------------------ the command


def test_rerun_writes_a_request_in_the_original_format(tmp_path):
    folder = sql_folder(tmp_path)

    code, stdout, stderr = run_cli("rerun", folder, "2026-01-02", "2026-01-04", "-r", "per_wiki",
                                   "--now", NOW)

    assert code == 0, stderr
    assert "per_wiki" in stdout
    requests = rerun_files(folder)
    assert list(requests.values()) == ["2026-01-02\n2026-01-04\nper_wiki\n"]
    (name,) = requests
    assert re.fullmatch(r"\d{13}", name), name  # epoch milliseconds, like the original


def test_rerun_of_several_named_reports(tmp_path):
    folder = sql_folder(tmp_path)

    code, _, stderr = run_cli("rerun", folder, "2026-01-01", "2026-01-05", "-r", "per_wiki",
                              "-r", "daily_edits", "--now", NOW)

    assert code == 0, stderr
    assert list(rerun_files(folder).values()) == ["2026-01-01\n2026-01-05\nper_wiki\ndaily_edits\n"]


def test_rerun_without_report_names_every_report(tmp_path):
    folder = sql_folder(tmp_path)

    # END may be today (it is exclusive).
    code, _, stderr = run_cli("rerun", folder, "2026-01-04", "2026-01-05", "--now", NOW)

    assert code == 0, stderr
    assert list(rerun_files(folder).values()) == ["2026-01-04\n2026-01-05\ndaily_edits\nper_wiki\n"]


@pytest.mark.parametrize("args, message", [
    (["2026-01-02", "2026-01-06", "-r", "per_wiki"], "after today"),
    (["2026-01-03", "2026-01-03", "-r", "per_wiki"], "not before"),
    (["2026-01-04", "2026-01-02", "-r", "per_wiki"], "not before"),
    (["2026-01-02", "2026-01-04", "-r", "nope"], "'nope'"),
    (["2026-01-01", "2026-01-03", "-r", "late"], "late"),   # starts 2026-01-03, not before END
    (["2026-01-01", "2026-01-02", "-r", "late"], "late"),
    (["2025-12-01", "2025-12-31"], "2025-12-31"),           # no report starts before END
    (["2026-01-32", "2026-02-04"], "2026-01-32"),
])
def test_rerun_refused(tmp_path, args, message):
    config = CONFIG + """\
  late:
    granularity: days
    starts: 2026-01-03
    db: db
    execute: daily_edits
"""
    folder = sql_folder(tmp_path, config)

    code, stdout, stderr = run_cli("rerun", folder, *args, "--now", NOW)

    assert code == 2
    assert stdout == ""
    assert message in stderr
    assert "Traceback" not in stderr
    assert rerun_files(folder) == {}


def test_rerun_of_every_report_leaves_out_those_starting_after_the_range(tmp_path):
    # The reference checks only named reports; with none named, a report
    # that has no data before END is simply not part of the request.
    config = CONFIG + """\
  late:
    granularity: days
    starts: 2026-01-03
    db: db
    execute: daily_edits
"""
    folder = sql_folder(tmp_path, config)
    code, _, stderr = run_cli("rerun", folder, "2026-01-01", "2026-01-03", "--now", NOW)
    assert code == 0, stderr
    assert list(rerun_files(folder).values()) == ["2026-01-01\n2026-01-03\ndaily_edits\nper_wiki\n"]


def test_rerun_of_a_missing_query_folder(tmp_path):
    code, _, stderr = run_cli("rerun", tmp_path / "missing", "2026-01-01", "2026-01-02", "--now", NOW)

    assert code == 2
    assert "does not exist" in stderr and "Traceback" not in stderr


# ------------------------------------------------------- runs honour requests


def test_request_in_the_original_format_recomputes_exactly_its_dates(tmp_path):
    folder = sql_folder(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW)[0] == 0
    assert files_under(out) == {"daily_edits.tsv": DAILY, "per_wiki.tsv": PER_WIKI}

    # New data on every day: only 2026-01-02 and 2026-01-03 may pick it up.
    sql(folder, """
        UPDATE edits SET wiki = 'frwiki' WHERE wiki = 'dewiki';
        INSERT INTO edits VALUES ('20260101100000', 'enwiki', 'bot', 1),
                                 ('20260102130000', 'frwiki', 'bot', 1),
                                 ('20260103100000', 'enwiki', 'bot', 1),
                                 ('20260104100000', 'enwiki', 'bot', 1);
    """)
    (folder / ".reruns").mkdir()
    (folder / ".reruns" / ORIGINAL_NAME).write_text("2026-01-02\n2026-01-04\nper_wiki\n")

    code, _, stderr = run_cli("run", folder, out, "--now", NOW, "-l", "info")

    assert code == 0, stderr
    assert "per_wiki: 2 computed, 0 failed" in stderr
    assert "daily_edits: 0 computed, 0 failed" in stderr
    assert files_under(out) == {
        "daily_edits.tsv": DAILY,
        "per_wiki.tsv": tsv(
            "date\twiki\tedits",
            "2026-01-01\tenwiki\t1",
            "2026-01-01\tdewiki\t1",
            "2026-01-02\tfrwiki\t1",
            "2026-01-02\tenwiki\t1",
            "2026-01-03\tenwiki\t1",
            "2026-01-04\tenwiki\t2",
            "2026-01-04\tdewiki\t1",
        ),
    }
    assert unspent(folder, out) == {}


def test_rerun_command_then_run_replaces_every_row_of_the_dates(tmp_path):
    folder = sql_folder(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW)[0] == 0
    sql(folder, "DELETE FROM edits WHERE wiki = 'dewiki';")

    assert run_cli("rerun", folder, "2026-01-04", "2026-01-05", "--now", NOW)[0] == 0
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    # 2026-01-04 had two rows per wiki; the new result has one, which replaces both.
    assert files_under(out) == {
        "daily_edits.tsv": DAILY.replace("2026-01-04\t3", "2026-01-04\t2"),
        "per_wiki.tsv": PER_WIKI.replace("2026-01-04\tdewiki\t1\n", ""),
    }
    assert unspent(folder, out) == {}


def test_rerun_of_a_date_not_yet_computed_just_computes_it(tmp_path):
    folder = sql_folder(tmp_path)
    out = tmp_path / "out"
    (folder / ".reruns").mkdir()
    (folder / ".reruns" / ORIGINAL_NAME).write_text("2026-01-03\n2026-01-05\ndaily_edits\n")

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert files_under(out) == {"daily_edits.tsv": DAILY, "per_wiki.tsv": PER_WIKI}
    assert unspent(folder, out) == {}


def test_request_naming_no_report_covers_every_report(tmp_path):
    folder = sql_folder(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW)[0] == 0
    sql(folder, "DELETE FROM edits WHERE wiki = 'dewiki';")
    (folder / ".reruns").mkdir()
    (folder / ".reruns" / ORIGINAL_NAME).write_text("2026-01-04\n2026-01-05\n")

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert files_under(out) == {
        "daily_edits.tsv": DAILY.replace("2026-01-04\t3", "2026-01-04\t2"),
        "per_wiki.tsv": PER_WIKI.replace("2026-01-04\tdewiki\t1\n", ""),
    }
    assert unspent(folder, out) == {}


def test_unparseable_request_is_skipped_with_a_warning(tmp_path):
    folder = sql_folder(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW)[0] == 0
    sql(folder, "INSERT INTO edits VALUES ('20260101100000', 'enwiki', 'bot', 1);")
    reruns = folder / ".reruns"
    reruns.mkdir()
    (reruns / "1767571200001").write_text("yesterday\ntoday\nper_wiki\n")
    (reruns / "1767571200002").write_text("2026-01-03\n")
    (reruns / "1767571200003").write_text("2026-01-04\n2026-01-02\nper_wiki\n")
    (reruns / "1767571200004").write_text("2026-01-01\n2026-01-02\ndaily_edits\n")  # valid

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 3, stderr
    for name, warning in zip(["1767571200001", "1767571200002", "1767571200003"], warnings, strict=True):
        assert f"{reruns / name}: rerun request skipped" in warning
    assert files_under(out) == {
        "daily_edits.tsv": DAILY.replace("2026-01-01\t2", "2026-01-01\t3"),
        "per_wiki.tsv": PER_WIKI,
    }
    assert "1767571200004" not in unspent(folder, out)


FROM_FILE = """\
#!/bin/sh
if [ -e "broken-$1" ]; then
  echo "no data for $1" >&2
  exit 1
fi
printf 'date\\tvalue\\n%s\\t%s\\n' "$1" "$(cat value)"
"""


def test_failed_recomputation_keeps_the_old_row_and_the_request(tmp_path):
    config = """\
reports:
  from_file:
    type: script
    granularity: days
    starts: 2026-01-01
"""
    folder = make_folder(tmp_path, config, files={"value": "v1\n"}, scripts={"from_file": FROM_FILE})
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW)[0] == 0
    (folder / "value").write_text("v2\n")
    (folder / "broken-2026-01-02").write_text("")
    (folder / ".reruns").mkdir()
    request = "2026-01-02\n2026-01-04\nfrom_file\n"
    (folder / ".reruns" / ORIGINAL_NAME).write_text(request)

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 1
    assert_failed(stderr, "from_file 2026-01-02", "script exited with status 1: no data for 2026-01-02")
    assert read(out / "from_file.tsv") == tsv(
        "date\tvalue", "2026-01-01\tv1", "2026-01-02\tv1", "2026-01-03\tv2", "2026-01-04\tv1")
    assert rerun_files(folder) == {ORIGINAL_NAME: request}

    (folder / "broken-2026-01-02").unlink()
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert read(out / "from_file.tsv") == tsv(
        "date\tvalue", "2026-01-01\tv1", "2026-01-02\tv2", "2026-01-03\tv2", "2026-01-04\tv1")
    assert unspent(folder, out) == {}


def test_request_is_kept_while_its_report_is_not_run(tmp_path):
    folder = sql_folder(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW)[0] == 0
    sql(folder, "INSERT INTO edits VALUES ('20260101100000', 'enwiki', 'bot', 1);")
    (folder / ".reruns").mkdir()
    request = "2026-01-01\n2026-01-02\ndaily_edits\n"
    (folder / ".reruns" / ORIGINAL_NAME).write_text(request)

    code, _, stderr = run_cli("run", folder, out, "--now", NOW, "-r", "per_wiki")
    assert code == 0, stderr
    assert files_under(out) == {"daily_edits.tsv": DAILY, "per_wiki.tsv": PER_WIKI}
    assert rerun_files(folder) == {ORIGINAL_NAME: request}

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)
    assert code == 0, stderr
    assert files_under(out) == {"daily_edits.tsv": DAILY.replace("2026-01-01\t2", "2026-01-01\t3"),
                                "per_wiki.tsv": PER_WIKI}
    assert unspent(folder, out) == {}


def test_rerun_of_an_exploded_report_recomputes_every_combination(tmp_path):
    config = """\
reports:
  by_wiki:
    type: script
    execute: from_file
    granularity: days
    starts: 2026-01-02
    explode_by:
      wiki: enwiki, dewiki
"""
    script = FROM_FILE.replace('"$(cat value)"', '"$2 $(cat value)"')
    folder = make_folder(tmp_path, config, files={"value": "v1\n"}, scripts={"from_file": script})
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW)[0] == 0
    (folder / "value").write_text("v2\n")
    assert run_cli("rerun", folder, "2026-01-03", "2026-01-04", "--now", NOW)[0] == 0

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    expected = tsv("date\tvalue", "2026-01-02\t2026-01-03 v1", "2026-01-03\t2026-01-04 v2",
                   "2026-01-04\t2026-01-05 v1")
    assert files_under(out) == {"by_wiki/dewiki.tsv": expected, "by_wiki/enwiki.tsv": expected}
    assert unspent(folder, out) == {}


@pytest.mark.parametrize("start, end, recomputed", [
    ("2025-12-24", "2025-12-26", {"2025-12-21"}),                # Wednesday..Friday
    ("2025-12-27", "2025-12-28", {"2025-12-21"}),                # the week's last day
    ("2025-12-27", "2025-12-29", {"2025-12-21", "2025-12-28"}),  # Saturday and Sunday
    ("2025-12-28", "2025-12-29", {"2025-12-28"}),                # a week's first day
])
def test_rerun_of_a_weekly_report_recomputes_every_overlapping_week(tmp_path, start, end, recomputed):
    config = """\
reports:
  weekly:
    type: script
    execute: from_file
    granularity: weeks
    starts: 2025-12-14
"""
    folder = make_folder(tmp_path, config, files={"value": "v1\n"}, scripts={"from_file": FROM_FILE})
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW)[0] == 0
    weeks = ["2025-12-14", "2025-12-21", "2025-12-28"]
    assert read(out / "weekly.tsv") == tsv("date\tvalue", *[f"{week}\tv1" for week in weeks])
    (folder / "value").write_text("v2\n")
    (folder / ".reruns").mkdir()
    (folder / ".reruns" / ORIGINAL_NAME).write_text(f"{start}\n{end}\nweekly\n")

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert read(out / "weekly.tsv") == tsv(
        "date\tvalue", *[f"{week}\t{'v2' if week in recomputed else 'v1'}" for week in weeks])
    assert unspent(folder, out) == {}


def test_request_naming_a_report_no_longer_in_the_config_is_consumed(tmp_path):
    folder = sql_folder(tmp_path)
    out = tmp_path / "out"
    (folder / ".reruns").mkdir()
    (folder / ".reruns" / ORIGINAL_NAME).write_text("2026-01-01\n2026-01-02\ngone\n")

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 0, stderr
    assert "'gone' is not in the config" in stderr
    assert files_under(out) == {"daily_edits.tsv": DAILY, "per_wiki.tsv": PER_WIKI}
    assert unspent(folder, out) == {}
    assert os.path.isdir(folder / ".reruns")
