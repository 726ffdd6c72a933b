# Corrupt or foreign output files: never overwritten, never "repaired".
#
# A file in the output folder that is not a TSV this tool could have written
# (an unparseable header, a first field that is not a date, a row with the
# wrong number of fields, binary junk) is left byte for byte as it is, same
# inode, same modification time; its report fails with a message naming the
# file and the line; the other reports run; the exit status is 1.

from __future__ import annotations

import gzip
import re
import zlib

import pytest

from testkit import NOW, make_folder, run_cli, tsv

VALUE = """\
#!/bin/sh
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""

REPORT = """\
  {name}:
    type: script
    execute: value
    granularity: days
    starts: {starts}
"""

DONE = tsv("date\tvalue", "2026-01-03\t1", "2026-01-04\t1")


def png() -> bytes:
    """A real (1x1, grey) PNG: what lands in an output folder by mistake."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", bytes.fromhex("00000001000000010800000000"))
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


GOOD_ROWS = tsv("date\tvalue", "2026-01-01\t1", "2026-01-02\t1")
# A gzipped output (someone compressed it in place), with line breaks in it.
GZIPPED = gzip.compress("".join(f"2025-{m:02d}-{d:02d}\t{m * d * 7919}\n"
                                for m in range(1, 13) for d in range(1, 29)).encode(), mtime=0)
assert GZIPPED.count(b"\n") >= 2

# name -> (bytes of the file, line the error names)
CASES = {
    "empty header line": (b"\n2026-01-01\t1\n", 1),
    "header starting with a tab": (b"\tvalue\n2026-01-01\t1\n", 1),
    "a date that is not a date": (GOOD_ROWS.encode() + b"yesterday\t5\n", 4),
    "an impossible date": (GOOD_ROWS.encode() + b"2026-02-30\t5\n", 4),
    "a month 13": (b"date\tvalue\n2026-13-01\t5\n", 2),
    "too many fields": (GOOD_ROWS.encode() + b"2026-01-03\t1\t9\n", 4),
    "too few fields": (b"date\tvalue\tmore\n2026-01-01\t1\n", 2),
    "a CSV file": (b"date,value\n2026-01-01,1\n", 2),
    "a row cut short": (GOOD_ROWS.encode() + b"2026-01-0", 4),
    "a PNG image": (png(), 2),
    "a UTF-16 TSV": (GOOD_ROWS.encode("utf-16"), 2),
    "a gzipped TSV": (GZIPPED, None),
    "binary junk without a line break": (bytes(range(0, 256, 3)).replace(b"\n", b"") * 4, 1),
}


NAMES = {case: f"damaged_{number:02d}" for number, case in enumerate(CASES)}


@pytest.fixture(scope="module")
def damaged_run(tmp_path_factory):
    """One run over a folder with one report per damaged file, between two
    healthy reports; then `status --json` and `run --dry-run` of it."""
    tmp_path = tmp_path_factory.mktemp("damaged")
    config = "reports:\n" + REPORT.format(name="before", starts="2026-01-03") + "".join(
        REPORT.format(name=name, starts="2026-01-01") for name in NAMES.values()) + REPORT.format(
        name="after", starts="2026-01-03")
    folder = make_folder(tmp_path, config, scripts={"value": VALUE})
    out = tmp_path / "out"
    out.mkdir()
    stats = {}
    for case, name in NAMES.items():
        (out / f"{name}.tsv").write_bytes(CASES[case][0])
        stats[case] = (out / f"{name}.tsv").stat()
    return {"out": out, "stats": stats,
            "run": run_cli("run", folder, out, "--now", NOW),
            "status": run_cli("status", folder, out, "--json", "--now", NOW),
            "dry-run": run_cli("run", "--dry-run", folder, out, "--now", NOW)}


def test_healthy_reports_run_and_the_exit_status_is_1(damaged_run):
    out = damaged_run["out"]
    code, _, stderr = damaged_run["run"]
    assert code == 1, stderr
    assert "Traceback" not in stderr
    # The other reports ran, before and after the damaged ones; nothing else was left.
    assert (out / "before.tsv").read_text() == DONE
    assert (out / "after.tsv").read_text() == DONE
    assert sorted(path.name for path in out.iterdir()
                  if path.name not in (".reportupdater-state.json", ".reportupdater.lock",
                                       ".reportupdater-versions")) \
        == sorted(["after.tsv", "before.tsv", *(f"{name}.tsv" for name in NAMES.values())])
    code, stdout, stderr = damaged_run["status"]
    assert code == 1, stdout + stderr


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_output_file_is_never_overwritten(damaged_run, case):
    content, line = CASES[case]
    name = NAMES[case]
    damaged = damaged_run["out"] / f"{name}.tsv"
    before = damaged_run["stats"][case]

    assert damaged.read_bytes() == content, f"{case}: the file was changed"
    after = damaged.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (
        before.st_ino, before.st_mtime_ns, before.st_mode), f"{case}: the file was replaced"
    _, _, stderr = damaged_run["run"]
    where = re.escape(f"{damaged}:") + (r"\d+" if line is None else str(line))
    assert re.search(rf" ERROR {name}: {where}: ", stderr), \
        f"{case}: no error naming {damaged}:{line or 'N'} in:\n{stderr}"
    # status names it too; a dry run says it cannot plan it.
    _, status, _ = damaged_run["status"]
    assert str(damaged) in status
    _, plan, _ = damaged_run["dry-run"]
    assert re.search(rf"^{name}: cannot plan: {where}: ", plan, re.MULTILINE), plan
