"""reportupdater.store: reading, merging and atomically writing output TSV files."""

from __future__ import annotations

import os
import stat
from datetime import datetime, UTC
from pathlib import Path

import pytest

from reportupdater.datatypes import Interval, Result
from reportupdater.engines.base import build_result
from reportupdater.store import OutputFile, StoreError, output_path

UTC = UTC


def day(label: str) -> Interval:
    start = datetime.strptime(label, "%Y-%m-%d").replace(tzinfo=UTC)
    return Interval(start, start.replace(day=start.day + 1))


def result(header: list[str], *rows: list[str]) -> Result:
    return Result(header=tuple(header), rows=tuple(tuple(row) for row in rows))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tsv(*lines: str) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def saved(output: OutputFile) -> bytes:
    output.save()
    return output.path.read_bytes()


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda value: os.umask(value)
    os.umask(old)


# ------------------------------------------------------------------- load


def test_load_of_a_missing_file_is_empty(tmp_path):
    output = OutputFile.load(tmp_path / "nope.tsv")
    assert output.path == tmp_path / "nope.tsv"
    assert output.header == []
    assert output.rows == []
    assert output.dates == set()
    assert output.dirty is False


def test_load_of_an_empty_file_is_empty(tmp_path):
    output = OutputFile.load(write(tmp_path / "r.tsv", b""))
    assert output.header == [] and output.rows == []


def test_load_reads_header_rows_and_dates(tmp_path):
    path = write(tmp_path / "r.tsv", tsv("date\twiki\tedits",
                                         "2026-01-01\tenwiki\t10",
                                         "2026-01-01\tdewiki\t5",
                                         "2026-01-02\tenwiki\t11"))
    output = OutputFile.load(path)
    assert output.header == ["date", "wiki", "edits"]
    assert output.rows == [["2026-01-01", "enwiki", "10"], ["2026-01-01", "dewiki", "5"],
                           ["2026-01-02", "enwiki", "11"]]
    assert output.dates == {"2026-01-01", "2026-01-02"}


def test_load_accepts_crlf_line_ends(tmp_path):
    path = write(tmp_path / "r.tsv", b"date\ta\tb\r\n2026-01-01\t1\t\r\n2026-01-02\t2\tx\r\n")
    output = OutputFile.load(path)
    assert output.header == ["date", "a", "b"]
    assert output.rows == [["2026-01-01", "1", ""], ["2026-01-02", "2", "x"]]
    output.merge(result(["date", "a", "b"], ["2026-01-03", "3", "y"]), {"2026-01-03"})
    assert saved(output) == tsv("date\ta\tb", "2026-01-01\t1\t", "2026-01-02\t2\tx", "2026-01-03\t3\ty")


def test_load_accepts_a_missing_final_newline(tmp_path):
    path = write(tmp_path / "r.tsv", b"date\ta\n2026-01-01\t1")
    assert OutputFile.load(path).rows == [["2026-01-01", "1"]]


# ------------------------------------------------------------- round trip


ODD_FILE = (
    b"date\tint\tfloat\tzeros\tempty\tnull\tnan\tbool\tquoted\tbytes\tunicode\n"
    b"2026-01-01\t1\t1.0\t007\t\tNULL\tnan\tTrue\t\"x\"\t\xff\xfe\x80abc\tcaf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80\n"
    b"2026-01-02\t-0\t1e3\t0.10\t\tnull\tNaN\tFalse\t'y\" \t\xc3\t  spaced  \n"
)


def test_untouched_lines_round_trip_byte_for_byte(tmp_path):
    path = write(tmp_path / "r.tsv", ODD_FILE)
    output = OutputFile.load(path)
    header = output.header
    assert header[0] == "date" and len(header) == 11
    new_row = ["2026-01-03", "2", "2.50", "08", "", "NULL", "inf", "1", "\"z\"", "b", "ü"]
    output.merge(result(header, new_row), {"2026-01-03"})
    output.save()
    assert path.read_bytes() == ODD_FILE + "\t".join(new_row).encode("utf-8") + b"\n"


def test_cells_hold_the_exact_text_of_the_file(tmp_path):
    output = OutputFile.load(write(tmp_path / "r.tsv", ODD_FILE))
    assert output.rows[0][1:10] == ["1", "1.0", "007", "", "NULL", "nan", "True", "\"x\"",
                                    "\udcff\udcfe\udc80abc"]
    assert output.rows[0][10] == "café ☃ 😀"
    assert output.rows[1][-1] == "  spaced  "


def test_load_then_save_without_changes_writes_nothing(tmp_path):
    path = write(tmp_path / "r.tsv", ODD_FILE)
    before = path.stat().st_mtime_ns
    os.utime(path, ns=(before - 10**9, before - 10**9))
    output = OutputFile.load(path)
    output.save()
    assert path.stat().st_mtime_ns == before - 10**9
    assert path.read_bytes() == ODD_FILE


# -------------------------------------------------------- header evolution


def test_new_column_is_added_and_old_rows_get_empty(tmp_path):
    path = write(tmp_path / "r.tsv", tsv("date\ta", "2026-01-01\t1"))
    output = OutputFile.load(path)
    output.merge(result(["date", "a", "b"], ["2026-01-02", "2", "x"]), {"2026-01-02"})
    assert saved(output) == tsv("date\ta\tb", "2026-01-01\t1\t", "2026-01-02\t2\tx")


def test_dropped_column_is_kept_at_the_end_and_new_rows_are_empty_there(tmp_path):
    path = write(tmp_path / "r.tsv", tsv("date\ta\tb\tc", "2026-01-01\t1\tx\ty"))
    output = OutputFile.load(path)
    output.merge(result(["date", "c"], ["2026-01-02", "z"]), {"2026-01-02"})
    assert saved(output) == tsv("date\tc\ta\tb", "2026-01-01\ty\t1\tx", "2026-01-02\tz\t\t")


def test_reordered_columns_reorder_old_rows(tmp_path):
    path = write(tmp_path / "r.tsv", tsv("date\ta\tb", "2026-01-01\t1\tx"))
    output = OutputFile.load(path)
    output.merge(result(["date", "b", "a"], ["2026-01-02", "y", "2"]), {"2026-01-02"})
    assert saved(output) == tsv("date\tb\ta", "2026-01-01\tx\t1", "2026-01-02\ty\t2")


def test_added_dropped_and_reordered_at_once(tmp_path):
    path = write(tmp_path / "r.tsv", tsv("date\ta\tb", "2026-01-01\t1\tx"))
    output = OutputFile.load(path)
    output.merge(result(["date", "new", "a"], ["2026-01-02", "n", "2"]), {"2026-01-02"})
    assert saved(output) == tsv("date\tnew\ta\tb", "2026-01-01\t\t1\tx", "2026-01-02\tn\t2\t")
    # The next run with the same result header keeps the evolved header.
    output = OutputFile.load(output.path)
    output.merge(result(["date", "new", "a"], ["2026-01-03", "m", "3"]), {"2026-01-03"})
    assert saved(output) == tsv("date\tnew\ta\tb", "2026-01-01\t\t1\tx", "2026-01-02\tn\t2\t",
                                "2026-01-03\tm\t3\t")


def test_renamed_date_column_keeps_the_dates_of_old_rows(tmp_path):
    # The first column is the date whatever its name. Renaming it in the
    # query must not blank the dates of the old rows: that would make the
    # file unreadable ("first field '' is not a date") on every later run.
    path = write(tmp_path / "r.tsv", tsv("date\ta", "2026-01-01\t1"))
    output = OutputFile.load(path)
    output.merge(result(["day", "a"], ["2026-01-02", "2"]), {"2026-01-02"})
    output.save()
    reloaded = OutputFile.load(path)
    assert [row[0] for row in reloaded.rows] == ["2026-01-01", "2026-01-02"]


def test_result_with_duplicate_columns_against_a_different_header(tmp_path):
    path = write(tmp_path / "r.tsv", tsv("date\ta", "2026-01-01\t1"))
    output = OutputFile.load(path)
    with pytest.raises(StoreError) as caught:
        output.merge(result(["date", "b", "b"], ["2026-01-02", "1", "2"]), {"2026-01-02"})
    assert str(caught.value).startswith(f"{path}: ")
    assert "duplicate column names" in str(caught.value)


# ------------------------------------------------------------------ merge


def test_merge_into_a_new_file(tmp_path):
    output = OutputFile.load(tmp_path / "sub" / "r.tsv")
    output.merge(result(["date", "v"], ["2026-01-01", "1"]), {"2026-01-01"})
    assert output.dirty is True
    assert saved(output) == tsv("date\tv", "2026-01-01\t1")
    assert output.dirty is False


def test_several_rows_per_date_keep_their_order(tmp_path):
    output = OutputFile.load(tmp_path / "r.tsv")
    output.merge(result(["date", "wiki", "n"], ["2026-01-02", "zz", "1"], ["2026-01-02", "aa", "2"],
                        ["2026-01-02", "mm", "3"]), {"2026-01-02"})
    output.merge(result(["date", "wiki", "n"], ["2026-01-01", "yy", "4"], ["2026-01-01", "bb", "5"]),
                 {"2026-01-01"})
    assert saved(output) == tsv("date\twiki\tn", "2026-01-01\tyy\t4", "2026-01-01\tbb\t5",
                                "2026-01-02\tzz\t1", "2026-01-02\taa\t2", "2026-01-02\tmm\t3")


def test_merge_replaces_every_row_of_the_same_date(tmp_path):
    path = write(tmp_path / "r.tsv", tsv("date\twiki\tn", "2026-01-01\ten\t1", "2026-01-02\ten\t2",
                                         "2026-01-02\tde\t3", "2026-01-02\tfr\t4", "2026-01-03\ten\t5"))
    output = OutputFile.load(path)
    output.merge(result(["date", "wiki", "n"], ["2026-01-02", "it", "9"]), {"2026-01-02"})
    assert saved(output) == tsv("date\twiki\tn", "2026-01-01\ten\t1", "2026-01-02\tit\t9",
                                "2026-01-03\ten\t5")


def test_merge_replace_dates_drops_rows_the_result_does_not_have(tmp_path):
    path = write(tmp_path / "r.tsv", tsv("date\tn", "2026-01-01\t1", "2026-01-02\t2"))
    output = OutputFile.load(path)
    output.merge(result(["date", "n"], ["2026-01-03", "3"]), {"2026-01-02", "2026-01-03"})
    assert saved(output) == tsv("date\tn", "2026-01-01\t1", "2026-01-03\t3")


def test_merge_result_rows_of_other_dates_replace_those_dates_too(tmp_path):
    path = write(tmp_path / "r.tsv", tsv("date\tn", "2026-01-01\t1", "2026-01-02\t2"))
    output = OutputFile.load(path)
    output.merge(result(["date", "n"], ["2026-01-02", "20"], ["2026-01-02", "21"]), {"2026-01-01"})
    assert saved(output) == tsv("date\tn", "2026-01-02\t20", "2026-01-02\t21")


def test_empty_result_is_stored_as_one_empty_row(tmp_path):
    empty = build_result(["date", "a", "b"], [], day("2026-01-02"))
    assert empty.rows == (("2026-01-02", "", ""),)
    path = write(tmp_path / "r.tsv", tsv("date\ta\tb", "2026-01-01\t1\t2"))
    output = OutputFile.load(path)
    output.merge(empty, {"2026-01-02"})
    assert saved(output) == tsv("date\ta\tb", "2026-01-01\t1\t2", "2026-01-02\t\t")
    assert OutputFile.load(path).dates == {"2026-01-01", "2026-01-02"}


def test_rows_stay_sorted_by_date_whatever_the_merge_order(tmp_path):
    path = write(tmp_path / "r.tsv", tsv("date\tn", "2026-01-05\t5", "2026-01-02\t2"))
    output = OutputFile.load(path)
    for label in ["2026-01-04", "2025-12-31", "2026-01-03", "2026-01-10"]:
        output.merge(result(["date", "n"], [label, label[-2:]]), {label})
    assert saved(output) == tsv("date\tn", "2025-12-31\t31", "2026-01-02\t2", "2026-01-03\t03",
                                "2026-01-04\t04", "2026-01-05\t5", "2026-01-10\t10")


# ------------------------------------------------------------- trim_before


def test_trim_before_drops_older_dates(tmp_path):
    path = write(tmp_path / "r.tsv", tsv("date\tn", "2026-01-01\t1", "2026-01-02\t2",
                                         "2026-01-02\t2b", "2026-01-03\t3"))
    output = OutputFile.load(path)
    output.trim_before("2026-01-02")
    assert output.dirty is True
    assert saved(output) == tsv("date\tn", "2026-01-02\t2", "2026-01-02\t2b", "2026-01-03\t3")


def test_trim_before_with_nothing_to_drop_changes_nothing(tmp_path):
    path = write(tmp_path / "r.tsv", tsv("date\tn", "2026-01-02\t2"))
    output = OutputFile.load(path)
    output.trim_before("2026-01-02")
    assert output.dirty is False
    assert output.rows == [["2026-01-02", "2"]]


# ---------------------------------------------------------------- corrupt


def test_wrong_number_of_fields_names_path_and_line(tmp_path):
    path = write(tmp_path / "r.tsv", tsv("date\ta\tb", "2026-01-01\t1\t2", "2026-01-02\t1"))
    with pytest.raises(StoreError) as caught:
        OutputFile.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: 2 fields, but the header has 3")
    assert "\n" not in message


def test_too_many_fields_names_path_and_line(tmp_path):
    path = write(tmp_path / "r.tsv", tsv("date\ta", "2026-01-01\t1\t2"))
    with pytest.raises(StoreError, match=r":2: 3 fields, but the header has 2") as caught:
        OutputFile.load(path)
    assert str(caught.value).startswith(f"{path}:2:")


@pytest.mark.parametrize("first", ["total", "", "01/02/2026", "2026-1-2"])
def test_non_date_first_column_names_path_line_and_value(tmp_path, first):
    path = write(tmp_path / "r.tsv", tsv("date\ta", "2026-01-01\t1", f"{first}\t2"))
    with pytest.raises(StoreError) as caught:
        OutputFile.load(path)
    assert str(caught.value).startswith(f"{path}:3: first field {first!r} is not a date YYYY-MM-DD")


@pytest.mark.parametrize("first", ["2026-02-30", "2025-02-29", "2100-02-29", "2026-13-01",
                                   "2026-01-01T24:00:00", "2026-01-01T05:61:00", "２０２６-01-01"])
def test_impossible_dates_are_refused_in_every_file_that_holds_them(tmp_path, first):
    # Dates are checked once per run and remembered: a second file with the
    # same bad date must be refused too, and a good date must not make a bad
    # one pass.
    for name in ("a.tsv", "b.tsv"):
        path = write(tmp_path / name, tsv("date\ta", "2024-02-29\t1", f"{first}\t2"))
        with pytest.raises(StoreError, match=f":3: first field {first!r} is not a date"):
            OutputFile.load(path)


def test_dates_of_mixed_shapes_one_column_and_hours_are_found(tmp_path):
    mixed = write(tmp_path / "mixed.tsv", tsv("date\ta", "2026-01-01\t1", "2026-01-02T05:00:00\t2"))
    assert OutputFile.load(mixed).dates == {"2026-01-01", "2026-01-02T05:00:00"}
    single = write(tmp_path / "single.tsv", b"date\r\n2026-01-01\r\n2026-01-02\r\n")
    assert OutputFile.load(single).dates == {"2026-01-01", "2026-01-02"}
    hours = write(tmp_path / "hours.tsv", tsv("date\ta", "2026-01-01T23:00:00\t1", "2024-02-29T00:00:00\t2"))
    assert OutputFile.load(hours).dates == {"2026-01-01T23:00:00", "2024-02-29T00:00:00"}


def test_a_blank_line_names_its_line(tmp_path):
    path = write(tmp_path / "r.tsv", tsv("date\ta", "2026-01-01\t1", "", "2026-01-02\t1"))
    with pytest.raises(StoreError, match=r":3: 1 fields, but the header has 2"):
        OutputFile.load(path)
    trailing = write(tmp_path / "t.tsv", tsv("date\ta", "2026-01-01\t1", ""))
    with pytest.raises(StoreError, match=r":3: 1 fields, but the header has 2"):
        OutputFile.load(trailing)


def test_fields_miscounted_on_two_lines_are_caught_before_a_merge_writes(tmp_path):
    # One row short of a field and another with one too many have the right
    # number of tabs in all: loading finds the dates, merging checks lines.
    data = tsv("date\ta\tb", "2026-01-01\t1", "2026-01-02\t1\t2\t3")
    path = write(tmp_path / "r.tsv", data)
    output = OutputFile.load(path)
    assert output.dates == {"2026-01-01", "2026-01-02"}
    with pytest.raises(StoreError, match=r":2: 2 fields, but the header has 3"):
        output.merge(result(["date", "a", "b"], ["2026-01-03", "1", "2"]), set())
    assert path.read_bytes() == data


def test_empty_header_names_line_one(tmp_path):
    path = write(tmp_path / "r.tsv", b"\ta\n2026-01-01\t1\n")
    with pytest.raises(StoreError) as caught:
        OutputFile.load(path)
    assert str(caught.value).startswith(f"{path}:1: ")


def test_unreadable_path_is_a_store_error(tmp_path):
    (tmp_path / "r.tsv").mkdir()
    with pytest.raises(StoreError) as caught:
        OutputFile.load(tmp_path / "r.tsv")
    assert str(caught.value).startswith(f"{tmp_path / 'r.tsv'}: cannot read")


# ------------------------------------------------------------------- save


def test_save_leaves_no_temp_file(tmp_path):
    output = OutputFile.load(tmp_path / "out" / "a" / "r.tsv")
    output.merge(result(["date", "n"], ["2026-01-01", "1"]), {"2026-01-01"})
    output.save()
    assert sorted(os.listdir(tmp_path / "out" / "a")) == ["r.tsv"]


def test_save_is_not_disturbed_by_a_stale_temp_file(tmp_path):
    # Temp names are fresh and random (tests/test_writes.py): a stale one is
    # left for remove_stale_temp, which runs under the lock.
    path = write(tmp_path / "r.tsv", tsv("date\tn", "2026-01-01\t1"))
    write(tmp_path / ".r.tsv.tmp", b"half a fi")
    output = OutputFile.load(path)
    output.merge(result(["date", "n"], ["2026-01-02", "2"]), {"2026-01-02"})
    output.save()
    assert sorted(os.listdir(tmp_path)) == [".r.tsv.tmp", "r.tsv"]
    assert path.read_bytes() == tsv("date\tn", "2026-01-01\t1", "2026-01-02\t2")
    output.remove_stale_temp()
    assert sorted(os.listdir(tmp_path)) == ["r.tsv"]


def test_remove_stale_temp(tmp_path):
    write(tmp_path / ".r.tsv.tmp", b"half")
    OutputFile.load(tmp_path / "r.tsv").remove_stale_temp()
    assert os.listdir(tmp_path) == []


def test_save_replaces_the_file_instead_of_rewriting_it(tmp_path):
    # A reader that opened the old file keeps reading the whole old file.
    old = tsv("date\tn", "2026-01-01\t1")
    path = write(tmp_path / "r.tsv", old)
    inode = path.stat().st_ino
    output = OutputFile.load(path)
    output.merge(result(["date", "n"], ["2026-01-02", "2"]), {"2026-01-02"})
    with open(path, "rb") as reader:
        output.save()
        assert reader.read() == old
    assert path.stat().st_ino != inode
    assert path.read_bytes() == tsv("date\tn", "2026-01-01\t1", "2026-01-02\t2")


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664])
def test_save_keeps_the_mode_of_an_existing_file(tmp_path, umask, mode):
    umask(0o077)
    path = write(tmp_path / "r.tsv", tsv("date\tn", "2026-01-01\t1"))
    path.chmod(mode)
    output = OutputFile.load(path)
    output.merge(result(["date", "n"], ["2026-01-02", "2"]), {"2026-01-02"})
    output.save()
    assert stat.S_IMODE(path.stat().st_mode) == mode


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_new_file_respects_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    output = OutputFile.load(tmp_path / "r.tsv")
    output.merge(result(["date", "n"], ["2026-01-01", "1"]), {"2026-01-01"})
    output.save()
    assert stat.S_IMODE((tmp_path / "r.tsv").stat().st_mode) == mode


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    old = tsv("date\tn", "2026-01-01\t1")
    path = write(tmp_path / "r.tsv", old)
    output = OutputFile.load(path)
    output.merge(result(["date", "n"], ["2026-01-02", "2"]), {"2026-01-02"})
    with pytest.raises(StoreError) as caught:
        output.save(group="no-such-group-reportupdater-test")
    assert str(caught.value).startswith(f"{path}: cannot write: ")
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["r.tsv"]
    assert output.dirty is True


def test_unwritable_folder_is_a_store_error_naming_the_path(tmp_path):
    write(tmp_path / "blocker", b"a file where a folder should be")
    output = OutputFile(tmp_path / "blocker" / "r.tsv")
    output.merge(result(["date", "n"], ["2026-01-01", "1"]), {"2026-01-01"})
    with pytest.raises(StoreError) as caught:
        output.save()
    assert str(caught.value).startswith(f"{tmp_path / 'blocker' / 'r.tsv'}: cannot write: ")


# ------------------------------------------------------------ output_path


def test_output_path_without_explode(tmp_path):
    assert output_path(tmp_path, "daily_edits", ()) == tmp_path / "daily_edits.tsv"


def test_output_path_with_one_placeholder(tmp_path):
    assert output_path(tmp_path, "edits", (("wiki", "enwiki"),)) == tmp_path / "edits" / "enwiki.tsv"


def test_output_path_with_two_placeholders_last_is_the_file_name(tmp_path):
    explode = (("editor_type", "bot"), ("wiki", "enwiki"))  # sorted by placeholder name
    assert output_path(tmp_path, "edits", explode) == tmp_path / "edits" / "bot" / "enwiki.tsv"


def test_output_path_orders_values_by_placeholder_name_from_the_config(tmp_path):
    # From config to path: explode_by keys written in the 'wrong' order in
    # config.yaml still give values ordered by placeholder name.
    from reportupdater import config

    folder = tmp_path / "q"
    folder.mkdir()
    script = folder / "edits"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    (folder / "config.yaml").write_text(
        "reports:\n"
        "  edits:\n"
        "    type: script\n"
        "    granularity: days\n"
        "    starts: 2026-01-01\n"
        "    explode_by:\n"
        "      wiki: enwiki, dewiki\n"
        "      editor_type: bot\n")
    report = config.load(folder).reports["edits"]
    paths = [output_path(tmp_path / "out", "edits", explode)
             for explode in report.combinations()]
    assert sorted(paths) == [tmp_path / "out" / "edits" / "bot" / "dewiki.tsv",
                             tmp_path / "out" / "edits" / "bot" / "enwiki.tsv"]
