#!/usr/bin/env python3
"""What a checkpoint costs: the journal against today's rewrite of every dirty file.

    PYTHONPATH=. .venv/bin/python benchmarks/journal_cost.py [--wikis 300 --days 365]

Feeds W x D one-row daily results, newest-first order as the runner does
(every file dirtied between two checkpoints), checkpointing every 1,000
intervals, two ways, each into a fresh output folder:

  rewrite  store.OutputFile.merge, then at each checkpoint save() of every
           dirty file (atomic.write: temp, fsync, rename, fsync folder),
           and once more at the end: what runner.py does on main;
  journal  the same merges, plus journal.append per interval and
           journal.checkpoint() (one frame, one fsync), every file saved
           once at the end, then discard().

Prints wall seconds, this process's write_bytes and wchar (/proc/self/io)
for each, and the final TSV size.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reportupdater import journal, store  # noqa: E402
from reportupdater.datatypes import Result  # noqa: E402
from reportupdater.lock import FolderLock  # noqa: E402

HEADER = ("date", "edits", "editors")


def io() -> dict[str, int]:
    with open("/proc/self/io", encoding="ascii") as handle:
        return {key: int(value) for key, value in (line.split(": ") for line in handle)}


def feed(out: Path, wikis: int, days: int, every: int, use_journal: bool) -> tuple[float, dict, int]:
    starts = date(2025, 1, 1)
    labels = [(starts + timedelta(days=i)).isoformat() for i in range(days)]
    names = [f"wiki{i:04d}" for i in range(wikis)]
    before, started = io(), time.perf_counter()
    with FolderLock(out) as lock:
        files = {name: store.OutputFile(store.output_path(out, "daily", (("wiki", name),)), root=out)
                 for name in names}
        entry = journal.Journal.open(lock) if use_journal else None
        count = 0
        # Newest first across every wiki, as plan.py orders a backfill.
        for day in reversed(range(days)):
            for w, name in enumerate(names):
                label = labels[day]
                rows = ((label, str((w * 7919 + day * 104729) % 10000), str((w + day) % 97)),)
                files[name].merge(Result(HEADER, rows), {label})
                if entry is not None:
                    entry.append("daily", files[name].path, label, HEADER, rows)
                count += 1
                if count % every == 0:
                    if entry is not None:
                        entry.checkpoint()
                    else:
                        for output in files.values():
                            output.save()
        if entry is not None:
            entry.checkpoint()
        for output in files.values():
            output.save()
        if entry is not None:
            entry.discard()
    wall = time.perf_counter() - started
    after = io()
    tsvs = sum(path.stat().st_size for path in out.rglob("*.tsv"))
    return wall, {key: after[key] - before[key] for key in ("write_bytes", "wchar")}, tsvs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wikis", type=int, default=300)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--every", type=int, default=1000, help="intervals per checkpoint")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="reportupdater-journal-cost-", dir="/tmp"))
    try:
        print(f"{args.wikis} files x {args.days} days = {args.wikis * args.days:,} intervals, "
              f"a checkpoint every {args.every:,}")
        print("| Way | Wall s | write_bytes MB | wchar MB | final TSVs MB | written / TSVs |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, use in (("rewrite every dirty file (main)", False), ("journal, files once", True)):
            wall, counts, tsvs = feed(root / name.split()[0], args.wikis, args.days, args.every, use)
            print(f"| {name} | {wall:.2f} | {counts['write_bytes'] / 1e6:.1f} | "
                  f"{counts['wchar'] / 1e6:.1f} | {tsvs / 1e6:.2f} | "
                  f"{counts['write_bytes'] / tsvs:.1f}× |", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
