# `smoke --compare` (issue 19, item 6): today's query for one date beside the
# rows the output folder stores for it, end to end with real SQLite databases
# and real scripts. Nothing may be written: every test checks the output
# folder (hidden bookkeeping files included) and the query folder afterwards.

from __future__ import annotations

from pathlib import Path

import pytest
from testkit import (DAILY_EDITS_SQL, NOW, PER_WIKI_SQL, SQLITE_DB, files_under, make_edits_db,
                     make_folder, run_cli)

DAILY_CONFIG = SQLITE_DB + """
reports:
  daily:
    granularity: days
    starts: 2026-01-01
    db: db
  per_wiki:
    granularity: days
    starts: 2026-01-01
    db: db
"""


def _sql_folder(tmp_path: Path) -> tuple[Path, Path]:
    folder = make_folder(tmp_path, DAILY_CONFIG,
                         files={"daily.sql": DAILY_EDITS_SQL, "per_wiki.sql": PER_WIKI_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"
    done = run_cli("run", folder, out, "--now", NOW)
    assert (done.returncode, done.stderr) == (0, "")
    return folder, out


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under folder, hidden ones included."""
    return {str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None
            for path in sorted(folder.rglob("*"))}


def _compare(folder: Path, out: Path, report: str, day: str, *extra: str, now: str = NOW):
    """smoke --compare, checking that it wrote nothing anywhere (the output
    folder byte for byte, its state and bookkeeping files included)."""
    before = snapshot(out), snapshot(folder)
    assert any(name.startswith(".") for name in before[0]) or not before[0]  # the state is there
    result = run_cli("smoke", folder, report, day, "--compare", "--output-folder", out,
                     "--now", now, *extra)
    assert (snapshot(out), snapshot(folder)) == before
    return result


def test_a_changed_template_shows_the_stored_and_new_row_and_what_differs(tmp_path):
    folder, out = _sql_folder(tmp_path)
    (folder / "daily.sql").write_text(DAILY_EDITS_SQL.replace(
        "COUNT(*) AS edits", "COUNT(*) + 1 AS edits, SUM(size) AS bytes"))

    code, stdout, stderr = _compare(folder, out, "daily", "2026-01-01")

    assert (code, stderr) == (3, "")  # 3: it ran, and something differs
    assert stdout == (
        "== daily.tsv 2026-01-01: 2 values differ; new column bytes\n"
        "          date        edits  +bytes\n"
        "  stored  2026-01-01  2      \"\"\n"
        "  new     2026-01-01  3      30\n"
        "                      ^      ^^\n"
        "  (+ new column, \"\" in the stored rows)\n")


def test_an_unchanged_query_shows_the_row_once_and_exits_0(tmp_path):
    folder, out = _sql_folder(tmp_path)
    code, stdout, stderr = _compare(folder, out, "daily", "2026-01-04")
    assert (code, stderr) == (0, "")
    assert stdout == ("== daily.tsv 2026-01-04: same\n"
                      "        date        edits\n"
                      "  same  2026-01-04  3\n")


def test_a_column_the_new_query_lacks_is_shown_as_gone(tmp_path):
    folder, out = _sql_folder(tmp_path)
    (folder / "daily.sql").write_text(DAILY_EDITS_SQL.replace("COUNT(*) AS edits", "1 AS rows_seen"))
    code, stdout, _ = _compare(folder, out, "daily", "2026-01-02")
    assert code == 3
    assert stdout == (
        "== daily.tsv 2026-01-02: 2 values differ; new column rows_seen; column gone edits\n"
        "          date        -edits  +rows_seen\n"
        "  stored  2026-01-02  1       \"\"\n"
        "  new     2026-01-02  \"\"      1\n"
        "                      ^^      ^^\n"
        "  (+ new column, \"\" in the stored rows; - not in the new result, kept in the file "
        "with \"\" for this date)\n")


def test_several_rows_per_date_are_paired_by_their_key_columns_not_by_position(tmp_path):
    folder, out = _sql_folder(tmp_path)
    # Same rows in the other order, dewiki's count changed, a new wiki.
    (folder / "per_wiki.sql").write_text(
        PER_WIKI_SQL.replace("COUNT(*) AS edits", "COUNT(*) + (wiki = 'dewiki') AS edits")
        .replace("ORDER BY wiki DESC", "UNION ALL SELECT '{from_date}', 'frwiki', 7\nORDER BY wiki"))
    assert (out / "per_wiki.tsv").read_text().splitlines()[1:3] == [
        "2026-01-01\tenwiki\t1", "2026-01-01\tdewiki\t1"]

    code, stdout, _ = _compare(folder, out, "per_wiki", "2026-01-01")

    assert code == 3
    assert stdout == (
        "== per_wiki.tsv 2026-01-01: 1 value differs; 1 new row not stored\n"
        "          date        wiki    edits\n"
        "  same    2026-01-01  enwiki  1\n"
        "  stored  2026-01-01  dewiki  1\n"
        "  new     2026-01-01  dewiki  2\n"
        "                              ^\n"
        "  new     2026-01-01  frwiki  7      (no stored row)\n")


def test_a_stored_row_the_new_query_no_longer_gives_is_shown(tmp_path):
    folder, out = _sql_folder(tmp_path)
    (folder / "per_wiki.sql").write_text(PER_WIKI_SQL.replace("GROUP BY", "AND wiki = 'enwiki'\nGROUP BY"))
    code, stdout, _ = _compare(folder, out, "per_wiki", "2026-01-04")
    assert code == 3
    assert stdout == (
        "== per_wiki.tsv 2026-01-04: 1 stored row not in the new result\n"
        "          date        wiki    edits\n"
        "  same    2026-01-04  enwiki  2\n"
        "  stored  2026-01-04  dewiki  1      (not in the new result)\n")


def test_rows_without_a_text_column_are_paired_by_position_and_say_so(tmp_path):
    config = SQLITE_DB + """
reports:
  sizes:
    granularity: days
    starts: 2026-01-01
    db: db
"""
    query = ("SELECT substr('{from_timestamp}', 1, 4) || '-' || substr('{from_timestamp}', 5, 2)"
             " || '-' || substr('{from_timestamp}', 7, 2) AS date, size FROM edits\n"
             "WHERE ts >= '{from_timestamp}' AND ts < '{to_timestamp}' ORDER BY size\n")
    folder = make_folder(tmp_path, config, files={"sizes.sql": query})
    make_edits_db(folder)
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", NOW).returncode == 0
    (folder / "sizes.sql").write_text(query.replace("ORDER BY size", "ORDER BY size DESC"))
    code, stdout, _ = _compare(folder, out, "sizes", "2026-01-04")
    assert code == 3
    assert stdout == (
        "== sizes.tsv 2026-01-04: 2 values differ\n"
        "          date        size\n"
        "  stored  2026-01-04  1\n"
        "  new     2026-01-04  7\n"
        "                      ^\n"
        "  same    2026-01-04  3\n"
        "  stored  2026-01-04  7\n"
        "  new     2026-01-04  1\n"
        "                      ^\n"
        "  (rows paired by position: no column holds text to tell them apart)\n")


def test_a_date_with_no_stored_row_says_so(tmp_path):
    folder, out = _sql_folder(tmp_path)  # computed up to 2026-01-04
    code, stdout, stderr = _compare(folder, out, "daily", "2026-01-05", now="2026-01-06T05:00")
    assert (code, stderr) == (3, "")
    assert stdout == ("== daily.tsv 2026-01-05: no stored row for this date\n"
                      "       date        edits\n"
                      "  new  2026-01-05  1\n")


def test_a_report_with_no_output_file_yet(tmp_path):
    folder = make_folder(tmp_path, DAILY_CONFIG,
                         files={"daily.sql": DAILY_EDITS_SQL, "per_wiki.sql": PER_WIKI_SQL})
    make_edits_db(folder)
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, _ = _compare(folder, out, "per_wiki", "2026-01-01")
    assert code == 3
    assert stdout == ("== per_wiki.tsv 2026-01-01: no stored row for this date\n"
                      "       date        wiki    edits\n"
                      "  new  2026-01-01  enwiki  1\n"
                      "  new  2026-01-01  dewiki  1\n")
    assert list(out.iterdir()) == []


# A script report exploded by wiki: the edits of the interval's first day,
# one row per kind, from a data file beside it.
EXPLODED_CONFIG = """
reports:
  kinds:
    type: script
    granularity: days
    starts: 2026-01-01
    explode_by:
      wiki: enwiki, dewiki
"""
KINDS_SCRIPT = """\
#!/bin/sh
printf 'date\\tkind\\tedits\\n'
grep "^$1 $3 " "$4/edits.txt" | while read -r day wiki kind edits; do
  printf '%s\\t%s\\t%s\\n' "$day" "$kind" "$edits"
done
"""
EDITS_TXT = """\
2026-01-01 enwiki human 4
2026-01-01 enwiki bot 2
2026-01-01 dewiki human 3
2026-01-02 enwiki human 5
"""


def _script_folder(tmp_path: Path) -> tuple[Path, Path]:
    folder = make_folder(tmp_path, EXPLODED_CONFIG, files={"edits.txt": EDITS_TXT},
                         scripts={"kinds": KINDS_SCRIPT})
    out = tmp_path / "out"
    done = run_cli("run", folder, out, "--now", "2026-01-03T00:00")
    assert (done.returncode, done.stderr) == (0, "")
    assert sorted(files_under(out)) == ["kinds/dewiki.tsv", "kinds/enwiki.tsv"]
    return folder, out


def test_an_exploded_script_report_is_compared_per_output_file(tmp_path):
    folder, out = _script_folder(tmp_path)
    # The fixed script: enwiki's bots are counted twice as much; dewiki unchanged.
    (folder / "kinds").write_text(KINDS_SCRIPT.replace(
        "done\n", "done | awk -F'\\t' 'BEGIN {OFS=\"\\t\"} $2 == \"bot\" {$3 = $3 * 2} 1'\n"))

    code, stdout, stderr = _compare(folder, out, "kinds", "2026-01-01",
                                    now="2026-01-03T00:00")

    assert (code, stderr) == (3, "")
    assert stdout == (
        "== kinds/enwiki.tsv 2026-01-01: 1 value differs\n"
        "          date        kind   edits\n"
        "  same    2026-01-01  human  4\n"
        "  stored  2026-01-01  bot    2\n"
        "  new     2026-01-01  bot    4\n"
        "                             ^\n"
        "== kinds/dewiki.tsv 2026-01-01: same\n"
        "        date        kind   edits\n"
        "  same  2026-01-01  human  3\n"
    )

    # One combination only: the other is not computed; it is the same, so 0.
    code, stdout, _ = _compare(folder, out, "kinds", "2026-01-01", "--explode", "wiki=dewiki",
                               now="2026-01-03T00:00")
    assert code == 0
    assert stdout.startswith("== kinds/dewiki.tsv 2026-01-01: same\n")
    assert "enwiki" not in stdout


def test_a_failing_combination_exits_1_and_the_others_are_still_compared(tmp_path):
    folder, out = _script_folder(tmp_path)
    (folder / "kinds").write_text(KINDS_SCRIPT.replace(
        "printf 'date", "[ \"$3\" = enwiki ] && { echo 'no such table' >&2; exit 4; }\nprintf 'date"))
    code, stdout, stderr = _compare(folder, out, "kinds", "2026-01-01", now="2026-01-03T00:00")
    assert code == 1
    assert stdout.startswith("== kinds/dewiki.tsv 2026-01-01: same\n")
    assert "kinds/enwiki.tsv:" in stderr and "no such table" in stderr
    assert len([line for line in stderr.splitlines() if " ERROR " in line]) == 1


def test_a_pivot_report_compares_the_cells_as_the_store_fills_them(tmp_path):
    script = """\
#!/bin/sh
printf 'date\\tbrowser\\tviews\\n%s\\tChrome\\t20\\n' "$1"
[ "$1" = 2026-01-01 ] && printf '%s\\tFirefox\\t10\\n' "$1"
exit 0
"""
    folder = make_folder(tmp_path, """
reports:
  browsers:
    type: script
    granularity: days
    starts: 2026-01-01
    pivot: {index: date, columns: browser, values: views, fill: 0}
""", scripts={"browsers": script})
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", "2026-01-03T00:00").returncode == 0
    assert (out / "browsers.tsv").read_text() == ("date\tChrome\tFirefox\n"
                                                  "2026-01-01\t20\t10\n2026-01-02\t20\t0\n")
    # A day without Firefox: its stored 0 is the fill, not a difference.
    code, stdout, _ = _compare(folder, out, "browsers", "2026-01-02", now="2026-01-03T00:00")
    assert (code, stdout) == (0, "== browsers.tsv 2026-01-02: same\n"
                                 "        date        Chrome  Firefox\n"
                                 "  same  2026-01-02  20      0\n")
    (folder / "browsers").write_text(script.replace("2026-01-01 ]", "2026-01-09 ]"))
    code, stdout, _ = _compare(folder, out, "browsers", "2026-01-01", now="2026-01-03T00:00")
    assert code == 3
    assert stdout == ("== browsers.tsv 2026-01-01: 1 value differs\n"
                      "          date        Chrome  Firefox\n"
                      "  stored  2026-01-01  20      10\n"
                      "  new     2026-01-01  20      0\n"
                      "                              ^^\n")
    # A new category is a new column, and its stored cells hold the fill.
    (folder / "browsers").write_text(script.replace("Firefox", "Edge"))
    code, stdout, _ = _compare(folder, out, "browsers", "2026-01-01", now="2026-01-03T00:00")
    assert code == 3
    assert stdout == ("== browsers.tsv 2026-01-01: 2 values differ; new column Edge\n"
                      "          date        Chrome  Firefox  +Edge\n"
                      "  stored  2026-01-01  20      10       0\n"
                      "  new     2026-01-01  20      0        10\n"
                      "                              ^^       ^^\n"
                      "  (+ new column, 0 in the stored rows)\n")


def test_hourly_reports_compare_the_hour_starting_at_midnight(tmp_path):
    folder = make_folder(tmp_path, """
reports:
  hourly:
    type: script
    granularity: hours
    starts: 2026-01-01
""", scripts={"hourly": "#!/bin/sh\nprintf 'date\\tn\\n%s\\t1\\n' \"$1\"\n"})
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--now", "2026-01-01T03:00").returncode == 0
    code, stdout, _ = _compare(folder, out, "hourly", "2026-01-01", now="2026-01-01T03:00")
    assert (code, stdout) == (0, "== hourly.tsv 2026-01-01T00:00:00: same\n"
                                 "        date                 n\n"
                                 "  same  2026-01-01T00:00:00  1\n")


def test_the_compare_flag_may_come_anywhere_and_the_output_folder_defaults_to_output(tmp_path):
    folder, out = _sql_folder(tmp_path)
    before = snapshot(out)
    # The default output folder is ./output of the working directory.
    out.rename(tmp_path / "output")
    code, stdout, stderr = run_cli("smoke", "--compare", folder, "daily", "2026-01-04",
                                   "--now", NOW, cwd=tmp_path)
    assert (code, stderr) == (0, "")
    assert stdout.startswith("== daily.tsv 2026-01-04: same\n")
    assert snapshot(tmp_path / "output") == before


@pytest.mark.parametrize(("args", "message"), [
    (("nope", "2026-01-01"), "report 'nope' is not in 'reports'"),
    (("daily", "2025-12-31"), "report 'daily': 2025-12-31 is before the report starts (2026-01-01)"),
    (("daily", "2026-01-05"), "report 'daily': the interval 2026-01-05 holding 2026-01-05 is not due "
                              "at 2026-01-05T05:00Z (the newest is 2026-01-04)"),
    (("daily", "2026-01-02", "--output-folder", "missing"), "missing: output folder does not exist"),
    (("daily", "2026-01-02", "--explode", "wiki=enwiki"), "report 'daily' has no explode_by placeholder"),
])
def test_bad_input_is_one_line_naming_what_is_wrong_and_exits_2(tmp_path, args, message):
    folder, out = _sql_folder(tmp_path)
    before = snapshot(out)
    if "--output-folder" not in args:
        args = (*args, "--output-folder", str(out))
    code, stdout, stderr = run_cli("smoke", folder, *args, "--compare", "--now", NOW, cwd=tmp_path)
    assert (code, stdout) == (2, "")
    assert len(stderr.splitlines()) == 1 and message in stderr, stderr
    assert "Traceback" not in stderr
    assert snapshot(out) == before


def test_output_folder_without_compare_is_a_usage_error(tmp_path):
    folder, out = _sql_folder(tmp_path)
    code, stdout, stderr = run_cli("smoke", folder, "daily", "2026-01-02", "--output-folder", out)
    assert (code, stdout) == (2, "")
    assert "--output-folder is read only with --compare" in stderr and len(stderr.splitlines()) == 1


def test_plain_smoke_is_unchanged(tmp_path):
    folder, out = _sql_folder(tmp_path)
    code, stdout, stderr = run_cli("smoke", folder, "daily", "2026-01-04", "--now", NOW)
    assert (code, stdout, stderr) == (0, "date\tedits\n2026-01-04\t3\n", "")


def test_a_stored_file_that_cannot_be_read_is_a_failure_naming_its_line(tmp_path):
    folder, out = _sql_folder(tmp_path)
    with open(out / "daily.tsv", "a") as handle:
        handle.write("2026-01-09\tone\ttoo many\n")
    code, stdout, stderr = _compare(folder, out, "daily", "2026-01-02")
    assert (code, stdout) == (1, "")
    assert len(stderr.splitlines()) == 1
    assert f"{out / 'daily.tsv'}:6: 3 fields, but the header has 2" in stderr
