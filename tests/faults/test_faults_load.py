# Load: 500 reports x 50 explode values = 25,000 complete output files of 30
# daily rows each. A run has nothing to do (and must not start a script),
# `run --dry-run` plans nothing, `status --json` says all is well; each in a
# child process limited to 256 open files, measured for peak RSS (wait4)
# and wall time. The figures are printed (pytest -s) and quoted in
# docs/reliability.md.

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from testkit import NOW

REPORTS = 500
VALUES = 50
DAYS = [date(2025, 12, 6) + timedelta(days=n) for n in range(30)]  # ..2026-01-04, the last due
FILE_LIMIT = 256
RSS_LIMIT_MB = 512

# Must never run: every interval is already in its file.
NOOP = """\
#!/bin/sh
touch "$(dirname "$0")/ran"
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


def measure(args: list[str], stdout: Path) -> tuple[int, float, float, str]:
    """Run `python -m reportupdater ARGS` with at most FILE_LIMIT open files:
    (exit status, wall seconds, peak RSS in MB, stderr)."""
    started = time.monotonic()
    with open(stdout, "wb") as out, open(f"{stdout}.err", "wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "reportupdater", *args], stdout=out,
                                   stderr=err, preexec_fn=limited)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    elapsed = time.monotonic() - started
    return process.returncode, elapsed, usage.ru_maxrss / 1024, Path(f"{stdout}.err").read_text()


def build(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "query"
    folder.mkdir()
    wikis = [f"wiki{n:02d}" for n in range(VALUES)]
    (folder / "wikis.txt").write_text("".join(f"{wiki}\n" for wiki in wikis))
    (folder / "noop").write_text(NOOP)
    (folder / "noop").chmod(0o755)
    (folder / "config.yaml").write_text(f"""\
defaults:
  type: script
  execute: noop
  granularity: days
  starts: {DAYS[0]}
  explode_by:
    wiki: wikis.txt
reports:
""" + "".join(f"  report{n:03d}: {{}}\n" for n in range(REPORTS)))
    out = tmp_path / "out"
    for n in range(REPORTS):
        report = out / f"report{n:03d}"
        report.mkdir(parents=True)
        for index, wiki in enumerate(wikis):
            rows = "".join(f"{day}\t{n * 7 + index}\t{(n + index + k) % 97}\n"
                           for k, day in enumerate(DAYS))
            (report / f"{wiki}.tsv").write_text(f"date\tedits\tusers\n{rows}")
    return folder, out


def snapshot(out: Path) -> dict[str, int]:
    return {entry.path: entry.stat().st_mtime_ns for report in os.scandir(out) if report.is_dir()
            for entry in os.scandir(report)}


def test_the_file_limit_is_real():
    code = subprocess.run([sys.executable, "-c", "import os; [os.open('/dev/null', 0) for _ in range(300)]"],
                          preexec_fn=limited, capture_output=True, text=True)
    assert code.returncode != 0 and "Too many open files" in code.stderr


# Out of the fast suite: building 25,000 files and three runs over them take
# minutes, as a live server's start does.
@pytest.mark.live
def test_25000_files_run_plan_and_status_within_limits(tmp_path):
    started = time.monotonic()
    folder, out = build(tmp_path)
    built = time.monotonic() - started
    before = snapshot(out)
    assert len(before) == REPORTS * VALUES

    figures = {}
    for name, file, args in (
            ("run", "run.out", ["run", str(folder), str(out), "--now", NOW]),
            ("run --dry-run", "plan.out", ["run", "--dry-run", str(folder), str(out), "--now", NOW]),
            ("status --json", "status.out", ["status", str(folder), str(out), "--json", "--now", NOW])):
        code, seconds, rss, stderr = measure(args, tmp_path / file)
        assert code == 0, f"{name}: exit {code}\n{stderr[-3000:]}"
        assert "Too many open files" not in stderr and "Traceback" not in stderr, stderr[-3000:]
        assert rss < RSS_LIMIT_MB, f"{name}: peak RSS {rss:.0f} MB"
        figures[name] = (seconds, rss)

    assert not (folder / "ran").exists(), "a script ran although every interval was done"
    assert snapshot(out) == before  # no output file was rewritten
    # Nothing else written but the run's lock.
    assert sorted(p.name for p in out.iterdir() if not p.is_dir()) == [".reportupdater.lock"]
    plan = (tmp_path / "plan.out").read_text().splitlines()
    assert len(plan) == REPORTS * VALUES and all(line.endswith(": 0 intervals") for line in plan)
    status = (tmp_path / "status.out").read_text()
    assert '"ok": true' in status and '"missing": 0' in status and '"missing": 1' not in status

    print(f"\nload: {REPORTS * VALUES} files of {len(DAYS)} rows built in {built:.1f} s; "
          f"open files limited to {FILE_LIMIT}")
    for name, (seconds, rss) in figures.items():
        print(f"load: {name}: {seconds:.1f} s wall, peak RSS {rss:.0f} MB")
