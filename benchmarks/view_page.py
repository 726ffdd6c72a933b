"""The `view` page of a big folder: its size, the time to build it, and the
time headless Chromium takes to render it.

    .venv/bin/python benchmarks/view_page.py [--reports 200] [--repeat 3] [--keep DIR]

Builds the folder of benchmark case (d) (200 daily reports x 20 wikis x 730
days, every file complete: columns date, wiki, edits, editors), runs
`reportupdater view` on it in a child process (as cron would), and loads the
page in Debian's chromium (--headless, a new empty profile, no network)
with a probe script appended to a copy of it, which logs the time from the
start of navigation (reading and parsing the file included) to the first
frame after the page's script, uPlot's drawing and the load event. Twice:
as it opens (the coverage of every report; charts are drawn as they scroll
into view) and with `#all` (all 400 charts drawn at once). Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
NOW = "2025-12-31T00:00"  # 730 days after 2024-01-01: case (d)'s now, every file complete


def build_folder(root: Path, reports: int, combos: int, days: int) -> tuple[Path, Path]:
    """Case (d)'s folder (benchmarks/cases.py): complete outputs, nothing to run."""
    folder, out = root / "queries", root / "out"
    folder.mkdir(parents=True)
    starts = date(2024, 1, 1)
    wikis = [f"wiki{i:02d}" for i in range(combos)]
    (folder / "wikis.txt").write_text("\n".join(wikis) + "\n")
    config = ["databases:", "  noop:", "    url: sqlite:///noop.db", "reports:"]
    for r in range(reports):
        key = f"report{r:03d}"
        config += [f"  {key}:", "    db: noop", "    granularity: days",
                   f"    starts: {starts.isoformat()}", "    explode_by:", "      wiki: wikis.txt"]
        (folder / f"{key}.sql").write_text(
            "SELECT '{from_date}' AS date, '{wiki}' AS wiki, 1 AS edits, 2 AS editors\n")
    (folder / "config.yaml").write_text("\n".join(config) + "\n")
    for wiki in wikis:
        lines = ["date\twiki\tedits\teditors"] + [
            f"{(starts + timedelta(days=i)).isoformat()}\t{wiki}\t{(i * 7919) % 1000}\t{(i * 104729) % 97}"
            for i in range(days)]
        text = "\n".join(lines) + "\n"
        for r in range(reports):
            path = out / f"report{r:03d}" / f"{wiki}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return folder, out


# Appended to a copy of the page: logs, on the console, the time from the
# start of navigation to the first frame after the page's script, uPlot's
# drawing (microtasks) and the load event.
# The times are those of Chromium's own log lines (wall clock): under
# --virtual-time-budget the page's performance.now() is virtual time.
START_PROBE = '<script>console.log("view-probe start")</script>'
PROBE = """<script>addEventListener("load", function () {
  requestAnimationFrame(function () { setTimeout(function () {
    console.log("view-probe end"); }, 0); }); });</script>"""
_LOG_TIME = re.compile(r"^\[\d+:\d+:\d{4}/(\d\d)(\d\d)(\d\d)\.(\d{6}):INFO:CONSOLE[^\]]*\] \"view-probe (\w+)\"",
                       re.M)


def render_ms(chromium: str, root: Path, page: Path, fragment: str, run: int) -> tuple[float, float]:
    """(ms from the page's first script to the first frame after it is built, wall
    seconds of the chromium process)."""
    probe = page.with_name(f"probe-{page.name}")
    text = page.read_text(encoding="utf-8")
    probe.write_text(text.replace("<head>", "<head>" + START_PROBE, 1)
                     .replace("</body>", PROBE + "</body>"), encoding="utf-8")
    profile = root / f"profile-{run}"
    profile.mkdir()
    started = time.monotonic()
    done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--window-size=1200,900",
                           "--enable-logging=stderr", "--virtual-time-budget=600000", "--dump-dom",
                           probe.as_uri() + fragment],
                          capture_output=True, text=True, timeout=900, check=True)
    wall = time.monotonic() - started
    shutil.rmtree(profile, ignore_errors=True)
    times = {}
    for hours, minutes, seconds, micros, what in _LOG_TIME.findall(done.stderr):
        times[what] = int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int(micros) / 1e6
    if set(times) != {"start", "end"}:
        raise RuntimeError(f"no probe lines from chromium: {done.stderr[-800:]}")
    return (times["end"] - times["start"]) % 86400 * 1000, wall


def screenshot_wall(chromium: str, root: Path, page: Path, run: int) -> float:
    """Wall seconds of chromium loading the page and taking a screenshot of it
    (no DOM dump: serialising the 20 MB of JSON text is most of a --dump-dom)."""
    profile = root / f"profile-shot-{run}"
    profile.mkdir()
    started = time.monotonic()
    subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--window-size=1200,900",
                    f"--screenshot={root / 'screenshot.png'}", page.as_uri()],
                   capture_output=True, timeout=900, check=True)
    wall = time.monotonic() - started
    shutil.rmtree(profile, ignore_errors=True)
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=200)
    parser.add_argument("--combos", type=int, default=20)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the folder and page here and keep them")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep: measure the page already there, do not build it again")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium is missing: apt-get install chromium", file=sys.stderr)
        return 2
    root = args.keep or Path(tempfile.mkdtemp(prefix="view-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        page = root / "report.html"
        builds, cpus = [], []
        reuse = args.reuse and args.keep is not None and page.exists()
        if not reuse:
            started = time.monotonic()
            folder, out = build_folder(root / "folder", args.reports, args.combos, args.days)
            print(f"folder built in {time.monotonic() - started:.1f} s", file=sys.stderr)
        for _ in range(0 if reuse else args.repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "reportupdater", "view", str(folder), str(out),
                            "-o", str(page), "--now", NOW], check=True, cwd=REPO,
                           env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
            builds.append(time.monotonic() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        size = page.stat().st_size
        empty = root / "empty.html"
        empty.write_text("<!DOCTYPE html><html><head></head><body></body></html>")
        baseline = [render_ms(chromium, root, empty, "", 100 + i) for i in range(args.repeat)]
        rows = [("an empty page (Chromium's own start)", statistics.median(m[0] for m in baseline),
                 statistics.median(m[1] for m in baseline))]
        run = 0
        for label, fragment in (("as it opens (charts drawn when scrolled to)", ""),
                                ("`#all`: all charts drawn at once", "#all")):
            measured = []
            for _ in range(args.repeat):
                run += 1
                measured.append(render_ms(chromium, root, page, fragment, run))
            rows.append((label, statistics.median(m[0] for m in measured),
                         statistics.median(m[1] for m in measured)))
        shots = [screenshot_wall(chromium, root, page, i) for i in range(args.repeat)]
        empty_shots = [screenshot_wall(chromium, root, empty, 100 + i) for i in range(args.repeat)]
        version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
        print(f"\n{args.reports} reports x {args.combos} files x {args.days} days; {version}; "
              f"median of {args.repeat}\n")
        with open("/proc/loadavg") as handle:
            load = handle.read().split()[:3]
        if builds:
            print(f"`reportupdater view` wall {statistics.median(builds):.1f} s "
                  f"(min {min(builds):.1f}, max {max(builds):.1f}), CPU {statistics.median(cpus):.1f} s")
        print(f"Page: {size / 1e6:.1f} MB; load average at the end {' '.join(load)} "
              f"({os.cpu_count()} CPUs)\n")
        print("| Page | First script to first frame | chromium process wall (`--dump-dom`) |")
        print("|---|---|---|")
        for label, ms, wall in rows:
            print(f"| {label} | {ms / 1000:.2f} s | {wall:.2f} s |")
        print(f"\nLoad and screenshot (`--screenshot`, no DOM dump), chromium process wall: "
              f"the page {statistics.median(shots):.2f} s, an empty page {statistics.median(empty_shots):.2f} s")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
