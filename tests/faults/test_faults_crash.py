# Crash safety under SIGKILL at random moments.
#
# One query folder with four kinds of steps: sql on SQLite, sql on the live
# MariaDB, a script, and a script whose rows go to the live carbon-cache
# through the Graphite queue. Runs are killed with SIGKILL after a random
# delay (seeded: REPORTUPDATER_FAULT_SEED, printed on failure), most of them
# library runs with a checkpoint every 2 intervals (many checkpoints, so the
# kill lands before, inside and after file and queue writes), some of them
# the real command line. After every kill the output folder is checked;
# after a few kills in a row, one run must complete and leave exactly what
# an uninterrupted run leaves, and carbon must hold every point.
#
# The library runs are forked from a helper process that has already
# imported everything (importing pandas alone takes most of a second), so
# the random delays fall inside the work rather than inside `import`. The
# forked child is a real process killed by a real SIGKILL.
#
# Before each run the test waits until the output folder's lock is free: a killed
# run's lock can outlive it by milliseconds (a bug, proven on its own in
# test_faults_stuck.py), and a run that finds the folder busy rightly does
# nothing, which is not what this test is about.

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import time
from datetime import date, datetime, timedelta, UTC
from pathlib import Path

from reportupdater import journal, store
from reportupdater.lock import FolderLock

# The CLI in a subprocess (run_cli_process): runs here are killed and crash.
from testkit import NOW, files_under, make_db, run_cli_process, start_cli, wait_for

from faultkit import Zygote, kill_library, wait_lock_free

SEED = int(os.environ.get("REPORTUPDATER_FAULT_SEED", "20260105"))
KILLS = 50
CLI_KILLS = 8  # of which at least this many of the real command line
MAX_DELAY = 1.5
FIRST_DAY = date(2025, 11, 1)
LAST_DAY = date(2026, 1, 4)  # the last interval due at NOW
DAYS = [FIRST_DAY + timedelta(days=n) for n in range((LAST_DAY - FIRST_DAY).days + 1)]
WIKIS = ("enwiki", "dewiki")

# A value per date and wiki that Graphite stores exactly: 1MMDD * 10 + wiki.
VALUE_SCRIPT = """\
#!/bin/sh
rest=${1#*-}
case "$3" in enwiki) offset=1 ;; dewiki) offset=2 ;; *) offset=0 ;; esac
printf 'date\\twiki\\tvalue\\n%s\\t%s\\t%d\\n' "$1" "$3" $(( 1${rest%%-*}${rest#*-} * 10 + offset ))
"""

PLAIN_SCRIPT = """\
#!/bin/sh
printf 'date\\tfrom\\tto\\n%s\\t%s\\t%s\\n' "$1" "$1" "$2"
"""

LITE_SQL = """\
SELECT '{from_date}' AS date, '{wiki}' AS wiki, COUNT(*) AS edits, COALESCE(SUM(size), 0) AS bytes
FROM edits WHERE day >= '{from_date}' AND day < '{to_date}' AND wiki = '{wiki}'
"""

MARIA_SQL = """\
SELECT DATE('{from_date}') AS date, COUNT(*) AS events, COALESCE(SUM(n), 0) AS total
FROM events WHERE day >= '{from_date}' AND day < '{to_date}'
"""

CONFIG = """\
databases:
  lite:
    url: "sqlite:///data.db"
  maria:
    host: 127.0.0.1
    port: {maria_port}
    creds_file: {creds}
    db: faults_crash
graphite:
  host: 127.0.0.1
  port: {carbon_port}
  prefix: {prefix}
reports:
  lite:
    db: lite
    granularity: days
    starts: {first}
    explode_by:
      wiki: enwiki, dewiki
  graph:
    type: script
    execute: value
    granularity: days
    starts: {first}
    explode_by:
      wiki: enwiki, dewiki
    graphite:
      path: "graph.{{wiki}}.{{_metric}}"
      metrics: {{value: value}}
  maria:
    db: maria
    granularity: days
    starts: {first}
    backfill_order: oldest
  plain:
    type: script
    granularity: days
    starts: {first}
    backfill_order: oldest
"""
NEWEST_FIRST = ("lite/", "graph/")  # the default backfill_order; the others oldest first

def value(day: date, wiki: str) -> int:
    return int(f"1{day:%m%d}") * 10 + {"enwiki": 1, "dewiki": 2}[wiki]


def build_sources(folder: Path, mariadb) -> None:
    rows = ", ".join(f"('{day}', '{wiki}', {n})" for n, day in enumerate(DAYS) for wiki in WIKIS
                     if (n + len(wiki)) % 3)
    make_db(folder / "data.db", f"CREATE TABLE edits (day TEXT, wiki TEXT, size INTEGER);\n"
                                f"INSERT INTO edits VALUES {rows};\n")
    mariadb.execute("DROP DATABASE IF EXISTS faults_crash", "CREATE DATABASE faults_crash",
                    "CREATE TABLE faults_crash.events (day DATE, n INT)",
                    "INSERT INTO faults_crash.events VALUES " + ", ".join(
                        f"('{day}', {n * 7 % 11})" for n, day in enumerate(DAYS) if n % 4))


def write_config(folder: Path, mariadb, carbon, creds: Path, prefix: str) -> None:
    (folder / "config.yaml").write_text(CONFIG.format(
        maria_port=mariadb.port, creds=creds, carbon_port=carbon.port, prefix=prefix,
        first=FIRST_DAY))


# ------------------------------------------------------------- checks

def durable_view(out: Path) -> Path:
    """The output folder as the next run sees it once it has replayed the
    journal a killed run left (on a copy; `out` itself when there is none).
    The journal must be whole frames and at most a torn last one."""
    if not (out / journal.JOURNAL_NAME).exists():
        return out
    copy = out.with_name(out.name + "-durable")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(out, copy, symlinks=True)
    with FolderLock(copy) as lock:
        replayed = journal.replay_into(lock)
    assert replayed.damaged is None and not replayed.failed_files, replayed
    return copy


def check_after_kill(out: Path, reference: dict[str, str], before: dict[str, str],
                     prefix: str, where: str) -> dict[str, str]:
    """What the killed run left durably (its files, and its journal replayed
    on a copy): every file a whole checkpoint: the reference's header and a
    run of consecutive reference rows (the oldest ones for reports computed
    oldest first, the newest ones for the others), parseable; nothing that
    was durable before is lost; queue files are whole. Returns the files."""
    out = durable_view(out)
    after = files_under(out)
    for name, text in after.items():
        assert name in reference, f"{where}: unexpected file {name}"
        assert text.endswith("\n"), f"{where}: {name} is cut short: {text[-60:]!r}"
        assert store.OutputFile.load(out / name).rows is not None  # parses, every row checked (raises otherwise)
        want = reference[name].splitlines(keepends=True)
        got = text.splitlines(keepends=True)
        assert len(got) >= 2, f"{where}: {name} holds a header and no row"
        assert got[0] == want[0], f"{where}: {name}: header {got[0]!r}"
        rows = got[1:]
        first = want.index(rows[0]) if rows[0] in want else -1
        assert first >= 1 and want[first:first + len(rows)] == rows, \
            f"{where}: {name} is not a run of consecutive reference rows:\n{text}"
        newest_first = name.startswith(NEWEST_FIRST)
        assert first + len(rows) == len(want) if newest_first else first == 1, \
            f"{where}: {name} should hold the {'newest' if newest_first else 'oldest'} rows:\n{text}"
    for name, text in before.items():
        assert name in after, f"{where}: {name} was on disk before this run and is gone"
        old = set(text.splitlines(keepends=True))
        assert old <= set(after[name].splitlines(keepends=True)), f"{where}: {name} lost rows it had"
    for path in out.rglob("*"):
        relative = path.relative_to(out)
        if path.is_dir() or str(relative) in after:
            continue
        if relative.parts[0] == ".graphite-queue":
            if path.name.startswith("."):
                assert path.name.endswith(".tmp"), f"{where}: {relative}"
                continue
            for line in path.read_text().splitlines():  # a queue file is whole or absent
                assert re.fullmatch(re.escape(prefix) + r"\.graph\.(en|de)wiki\.value \d+ \d+", line), \
                    f"{where}: {relative}: {line!r}"
        elif relative.name == ".reportupdater-state.json":
            json.loads(path.read_text())
        elif relative.parts[0] == ".reportupdater-versions":
            # which version computed each date: whole JSON, or a temp beside it
            if path.name.startswith("."):
                assert re.fullmatch(r"\..+\.[0-9a-f]{16}\.tmp", path.name), f"{where}: {relative}"
            else:
                assert path.suffix == ".json", f"{where}: stray file {relative}"
                json.loads(path.read_text())
        elif str(relative) == ".reportupdater.lock":
            pass  # the output folder's lock
        else:
            assert re.fullmatch(r"\..+\.tsv\.[0-9a-f]{16}\.tmp", relative.name), \
                f"{where}: stray file {relative}"
    return after


def expected_points(reference: dict[str, str], prefix: str) -> dict[str, dict[int, float]]:
    points: dict[str, dict[int, float]] = {}
    for wiki in WIKIS:
        metric = f"{prefix}.graph.{wiki}.value"
        points[metric] = {}
        for line in reference[f"graph/{wiki}.tsv"].splitlines()[1:]:
            day, _, number = line.split("\t")
            stamp = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())
            points[metric][stamp] = float(number)
    return points


def kill_cli(folder: Path, out: Path, delay: float) -> tuple[int | None, str]:
    """The real command line, killed `delay` s after it took the folder's lock.
    Returns (its exit code when it ended before the kill, else None; its stderr)."""
    process = start_cli("run", folder, out, "--now", NOW)
    lock = out / ".reportupdater.lock"
    try:
        wait_for(lambda: process.poll() is not None or (
            lock.exists() and lock.read_text().strip() == str(process.pid)), timeout=30, interval=0.002)
        time.sleep(delay)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=30)
        return (None if process.returncode == -signal.SIGKILL else process.returncode), stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_sigkill_at_random_moments_loses_nothing(tmp_path, mariadb, carbon):
    rng = random.Random(SEED)
    folder = tmp_path / "query"
    folder.mkdir()
    (folder / "lite.sql").write_text(LITE_SQL)
    (folder / "maria.sql").write_text(MARIA_SQL)
    for name, text in (("value", VALUE_SCRIPT), ("plain", PLAIN_SCRIPT)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    creds = mariadb.creds_file(tmp_path)
    build_sources(folder, mariadb)
    run_prefix = f"crash{os.getpid()}x{rng.randrange(10**6)}"

    write_config(folder, mariadb, carbon, creds, f"{run_prefix}ref")
    code, _, stderr = run_cli_process("run", folder, tmp_path / "reference", "--now", NOW, "--no-graphite")
    assert code == 0, stderr
    reference = files_under(tmp_path / "reference")
    assert sorted(reference) == ["graph/dewiki.tsv", "graph/enwiki.tsv", "lite/dewiki.tsv",
                                 "lite/enwiki.tsv", "maria.tsv", "plain.tsv"]
    assert all(len(text.splitlines()) == 1 + len(DAYS) for text in reference.values())
    assert reference["graph/enwiki.tsv"].splitlines()[1] == f"{FIRST_DAY}\tenwiki\t{value(FIRST_DAY, 'enwiki')}"

    zygote = Zygote(folder, NOW, tmp_path / "zygote.log", checkpoint_intervals=2, jobs=1)
    kills = episodes = cli_kills = temp_left = lock_waits = 0
    points: dict[str, dict[int, float]] = {}
    started = time.monotonic()
    try:
        while kills < KILLS or cli_kills < CLI_KILLS:
            episodes += 1
            prefix = f"{run_prefix}e{episodes}"
            write_config(folder, mariadb, carbon, creds, prefix)
            out = tmp_path / f"out{episodes}"
            before: dict[str, str] = {}
            finished = False
            for _ in range(rng.randint(2, 5)):
                delay = rng.uniform(0, MAX_DELAY)
                cli = rng.random() < 0.2 or kills >= KILLS  # the CLI kills still missing
                where = f"seed {SEED} episode {episodes} kill {kills + 1} ({'cli' if cli else 'library'}, {delay:.3f} s)"
                lock_waits += wait_lock_free(out) > 0  # see test_faults_stuck.py
                code, log = kill_cli(folder, out, delay) if cli else kill_library(zygote, out, delay)
                if code is not None:  # ended before the kill: it is this episode's complete run
                    assert code == 0, f"{where}: exit {code}:\n{log}"
                    assert files_under(out) == reference, f"{where}: ended early:\n{log}"
                    finished = True
                    break
                kills += 1
                cli_kills += cli
                temp_left += bool(list(out.rglob(".*.tmp")))
                before = check_after_kill(out, reference, before, prefix, where)
            where = f"seed {SEED} episode {episodes}"
            lock_waits += wait_lock_free(out) > 0
            if not finished and rng.random() < 0.3:
                code, _, log = run_cli_process("run", folder, out, "--now", NOW, "-l", "info")
            elif not finished:
                code, log = kill_library(zygote, out, 600)
            assert code == 0 and "another run" not in log, f"{where}: exit {code}:\n{log}"
            assert files_under(out) == reference, f"{where}: incomplete after the last run:\n{log}"
            check_after_kill(out, reference, before, prefix, where)
            assert sorted(out.rglob("*.tmp")) == [], f"{where}: temp files left"
            queue = out / ".graphite-queue"
            assert sorted(queue.rglob("*.txt")) == [], f"{where}: points still queued"
            points.update(expected_points(reference, prefix))
    finally:
        zygote.close()
    elapsed = time.monotonic() - started

    start = int(datetime(2025, 11, 1, tzinfo=UTC).timestamp())
    end = int(datetime(2026, 1, 4, tzinfo=UTC).timestamp())
    for metric, expected in points.items():
        assert carbon.wait_for(metric, expected, start, end) == expected, f"seed {SEED}: {metric}"
    print(f"\ncrash: seed {SEED}: {kills} kills ({cli_kills} of the CLI) in {episodes} episodes, "
          f"{temp_left} left temp files, {lock_waits} left the lock held for a moment, "
          f"{len(points)} metrics checked, {elapsed:.1f} s")
