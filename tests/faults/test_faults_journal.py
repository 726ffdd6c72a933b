# The runner's journal under SIGKILL: a wide SQLite backfill (many files,
# many intervals, a checkpoint every few intervals) killed for real at
# random moments, with one job at a time and with several. After each kill
# what is durable (the files, and the journal replayed on a copy) holds only
# reference rows, never loses what an earlier kill left durable, and lacks
# at most one checkpoint of what the killed run merged; the next run
# replays the journal, completes the work, and its files equal an
# uninterrupted serial run's byte for byte. `status` of a folder a killed
# run left names the journal that awaits replay.

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from reportupdater import journal
from reportupdater.lock import FolderLock

from testkit import NOW, files_under, make_db, run_cli, run_cli_process

from faultkit import Zygote, kill_library, wait_lock_free

SEED = int(os.environ.get("REPORTUPDATER_FAULT_SEED", "20261202"))
WIKIS = [f"w{n:02d}wiki" for n in range(20)]
FIRST_DAY = date(2025, 7, 9)
LAST_DAY = date(2026, 1, 4)  # the last interval due at NOW
DAYS = [FIRST_DAY + timedelta(days=n) for n in range((LAST_DAY - FIRST_DAY).days + 1)]
CHECKPOINT = 25

CONFIG = f"""\
databases:
  lite:
    url: "sqlite:///data.db"
reports:
  wide:
    type: sql
    db: lite
    granularity: days
    starts: {FIRST_DAY}
    explode_by:
      wiki: {", ".join(WIKIS)}
  oldest:
    type: sql
    db: lite
    granularity: days
    starts: {FIRST_DAY}
    backfill_order: oldest
    explode_by:
      wiki: {", ".join(WIKIS[:3])}
"""

WIDE_SQL = """\
SELECT '{from_date}' AS date, '{wiki}' AS wiki, COUNT(*) AS edits, COALESCE(SUM(size), 0) AS bytes
FROM edits WHERE day >= '{from_date}' AND day < '{to_date}' AND wiki = '{wiki}'
"""


def make_query_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "query"
    folder.mkdir()
    (folder / "config.yaml").write_text(CONFIG)
    (folder / "wide.sql").write_text(WIDE_SQL)
    (folder / "oldest.sql").write_text(WIDE_SQL)
    rows = ", ".join(f"('{day}', '{wiki}', {n * 13 % 97})" for n, day in enumerate(DAYS)
                     for i, wiki in enumerate(WIKIS) if (n + i) % 4)
    make_db(folder / "data.db", "CREATE TABLE edits (day TEXT, wiki TEXT, size INTEGER);\n"
                                f"INSERT INTO edits VALUES {rows};\n")
    return folder


def durable(out: Path, where: str) -> dict[str, str]:
    """The files as the next run sees them once it has replayed the journal
    (replayed on a copy): whole frames only, nothing damaged."""
    copy = out.with_name(out.name + "-durable")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(out, copy, symlinks=True)
    with FolderLock(copy) as lock:
        replayed = journal.replay_into(lock)
    assert replayed.damaged is None and not replayed.failed_files, f"{where}: {replayed}"
    assert not (copy / journal.JOURNAL_NAME).exists()
    stray = [path.name for path in copy.rglob("*") if path.is_file() and not (
        path.suffix == ".tsv" or path.name in (".reportupdater.lock", ".reportupdater-state.json")
        or (path.parent.name == ".reportupdater-versions"
            and re.fullmatch(r"[^.].*\.json|\..+\.json\.[0-9a-f]{16}\.tmp", path.name))
        or re.fullmatch(r"\..+\.tsv\.[0-9a-f]{16}\.tmp", path.name))]
    assert stray == [], f"{where}: stray files {stray}"
    return files_under(copy)


def rows_of(files: dict[str, str]) -> set[tuple[str, str]]:
    return {(name, line) for name, text in files.items() for line in text.splitlines()[1:]}


def merged_by(log: str, pid: int) -> int:
    """Intervals the run `pid` merged, from its log (one 'computed' line per
    one-interval job, written after the merge)."""
    marker = f"run {pid} into "
    section = log[log.rindex(marker):] if marker in log else ""
    return len(re.findall(r": computed \d+ rows in ", section))


@pytest.mark.parametrize("jobs", [1, 4])
def test_sigkill_mid_backfill_loses_at_most_a_checkpoint_and_the_next_run_completes(tmp_path, jobs):
    rng = random.Random(SEED + jobs)
    folder = make_query_folder(tmp_path)
    serial = Zygote(folder, NOW, tmp_path / "serial.log", checkpoint_intervals=CHECKPOINT, jobs=1)
    started = time.monotonic()
    try:
        code, log = kill_library(serial, tmp_path / "reference", 600)
    finally:
        serial.close()
    # Kills land inside the work whatever the machine's speed: at a random
    # fraction of what an uninterrupted run takes here.
    took = time.monotonic() - started
    assert code == 0, log
    reference = files_under(tmp_path / "reference")
    assert len(reference) == len(WIKIS) + 3
    assert all(len(text.splitlines()) == 1 + len(DAYS) for text in reference.values())
    reference_rows = rows_of(reference)

    zygote = Zygote(folder, NOW, tmp_path / "zygote.log", checkpoint_intervals=CHECKPOINT, jobs=jobs)
    out = tmp_path / "out"
    before: set[tuple[str, str]] = set()
    journal_seen = kills = merged = 0
    try:
        for kill in range(6):
            where = f"seed {SEED + jobs}, --jobs {jobs}, kill {kill + 1}"
            wait_lock_free(out)
            pid_before = len((tmp_path / "zygote.log").read_bytes())
            code, log = kill_library(zygote, out, rng.uniform(0.05, 0.25) * took)
            if code is not None:  # it finished first
                assert code == 0, f"{where}: {log}"
                break
            kills += 1
            journal_seen += (out / journal.JOURNAL_NAME).exists()
            now_durable = durable(out, where)
            for name, text in now_durable.items():
                assert name in reference, f"{where}: {name}"
                assert text.splitlines()[0] == reference[name].splitlines()[0], f"{where}: {name} header"
            rows = rows_of(now_durable)
            assert rows <= reference_rows, f"{where}: rows that are not the reference's"
            assert before <= rows, f"{where}: rows that were durable are gone"
            log = (tmp_path / "zygote.log").read_bytes()[pid_before:].decode(errors="replace")
            pid = int(re.findall(r"run (\d+) into ", log)[-1]) if "run " in log else -1
            # What this run merged and replays nothing of: at most one
            # checkpoint (plus the jobs in flight) missing from the durable rows.
            merged += merged_by(log, pid)
            lost = merged_by(log, pid) - len(rows - before)
            assert lost <= CHECKPOINT + jobs, f"{where}: {lost} merged intervals not durable"
            before = rows
        wait_lock_free(out)
        code, log = kill_library(zygote, out, 600)
    finally:
        zygote.close()
    assert code == 0, log
    assert files_under(out) == reference  # byte for byte, whatever --jobs
    assert not (out / journal.JOURNAL_NAME).exists()
    assert kills >= 2 and journal_seen >= 1 and merged > 0, (kills, journal_seen, merged)


def test_status_and_dry_run_name_a_journal_that_awaits_replay(tmp_path):
    folder = make_query_folder(tmp_path)
    out = tmp_path / "out"
    zygote = Zygote(folder, NOW, tmp_path / "zygote.log", checkpoint_intervals=5, jobs=1)
    try:
        for delay in (0.2, 0.1, 0.05, 0.4, 0.3, 0.2, 0.1, 0.05, 0.02, 0.6):
            wait_lock_free(out)  # killed once a checkpoint is in the journal
            code, _ = kill_library(zygote, out, delay)
            if code is None and (out / journal.JOURNAL_NAME).exists():
                break
            shutil.rmtree(out, ignore_errors=True)
    finally:
        zygote.close()
    data = (out / journal.JOURNAL_NAME).read_bytes()
    waiting = len(journal.read_journal(data).records)
    assert waiting >= 5

    code, stdout, _ = run_cli("status", folder, out, "--now", NOW, "--json")
    status = json.loads(stdout)
    assert status["journal"] == {"path": str(out / journal.JOURNAL_NAME), "intervals": waiting}
    code, stdout, _ = run_cli("status", folder, out, "--now", NOW)
    assert (f"journal: {out / journal.JOURNAL_NAME} holds {waiting} computed intervals of an "
            "interrupted run; the next run writes them into the files first") in stdout
    code, stdout, _ = run_cli("run", folder, out, "--now", NOW, "--dry-run")
    assert f"holds {waiting} computed intervals" in stdout
    assert (out / journal.JOURNAL_NAME).read_bytes() == data  # read, never replayed, without the lock

    code, _, stderr = run_cli_process("run", folder, out, "--now", NOW, "-l", "info")
    assert code == 0, stderr
    assert f"replayed {waiting} intervals" in stderr
    code, stdout, _ = run_cli("status", folder, out, "--now", NOW, "--json")
    assert json.loads(stdout)["journal"] is None
