# What the benchmark harness runs in a child process (one per measurement),
# so that wall time and peak RSS are those of one fresh interpreter.
#
#   child.py run SPEC.json       reportupdater.runner.run(RunOptions(...)),
#                                then one JSON line on stdout: the run's
#                                computed/failed intervals, queries, seconds
#                                inside queries and scripts, seconds inside run().
#   child.py baseline SPEC.json  spawn every argv of SPEC serially with
#                                subprocess (the serial-spawn baseline of case a).
#   child.py status SPEC.json    what `reportupdater status` computes (overview.survey
#                                and status_json), printed nowhere.
#   child.py floor SPEC.json     the plain-loop floor of case f: the same queries
#                                in a plain SQLAlchemy (or sqlite3) loop, each
#                                file's rows written once at the end (no fsync).
#
# Every mode also reports this process's /proc/self/io at its end: write_bytes
# (bytes it caused to be sent to the block layer, counted when the pages are
# dirtied), cancelled_write_bytes (of those, dropped because the file was
# deleted or truncated first) and wchar (bytes passed to write()); a fresh
# child counts only its own.
#
# With BENCH_PROFILE=FILE (run.py --profile) the mode runs under cProfile and
# the top functions by cumulative and own time go to FILE.
#
# Only the standard library and reportupdater are imported, and reportupdater
# only in `run` mode.

from __future__ import annotations

import json
import os
import sys
import time

STARTED = time.perf_counter()


def run(spec: dict) -> dict:
    import logging
    from datetime import datetime
    from pathlib import Path

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    from reportupdater import runner

    options = runner.RunOptions(
        query_folder=Path(spec["query_folder"]),
        output_folder=Path(spec["output_folder"]),
        now=datetime.fromisoformat(spec["now"]),
        jobs=spec.get("jobs", 0),
        graphite=False,
    )
    before = time.perf_counter()
    summary = runner.run(options)
    after = time.perf_counter()
    outcomes = summary.reports.values()
    return {
        "computed": sum(o.computed for o in outcomes),
        "failed": sum(o.failed for o in outcomes),
        "backing_off": sum(o.backing_off for o in outcomes),
        "queries": sum(o.queries for o in outcomes),
        "engine_seconds": sum(o.engine_seconds for o in outcomes),
        "report_seconds": sum(o.seconds for o in outcomes),
        "run_seconds": after - before,
        "startup_seconds": before - STARTED,  # from this module's first line
        "reports": len(summary.reports),
        "config_errors": summary.config_errors[:3],
        "exit_code": summary.exit_code,
        "jobs": options.jobs or runner.DEFAULT_JOBS,
        "module": runner.__file__,
    }


def status(spec: dict) -> dict:
    from datetime import datetime
    from pathlib import Path

    from reportupdater import config as config_stage
    from reportupdater import overview

    before = time.perf_counter()
    folder = config_stage.load(Path(spec["query_folder"]))
    views = overview.survey(folder, Path(spec["output_folder"]), datetime.fromisoformat(spec["now"]), ())
    data = overview.status_json(folder, views, False)
    after = time.perf_counter()
    return {"ok": data["ok"], "reports": len(views), "run_seconds": after - before,
            "startup_seconds": before - STARTED, "module": overview.__file__}


def floor(spec: dict) -> dict:
    """The queries of case f without reportupdater: wikis x days, one query
    each, rendered by str.format as the runner renders them; each wiki's
    rows kept in a list and its TSV written once, plainly, at the end."""
    from datetime import date, timedelta
    from pathlib import Path

    starts = date.fromisoformat(spec["starts"])
    labels = [(starts + timedelta(days=i)).isoformat() for i in range(spec["days"] + 1)]
    out = Path(spec["output_folder"])
    before = time.perf_counter()
    if spec["driver"] == "sqlite3":
        import sqlite3
        connection = sqlite3.connect(spec["database"])
        def execute(sql):
            return connection.execute(sql)

        def header_of(cursor):
            return [d[0] for d in cursor.description]
    else:
        import sqlalchemy
        engine = sqlalchemy.create_engine(f"sqlite:///{spec['database']}")
        connection = engine.connect()
        def execute(sql):
            return connection.execute(sqlalchemy.text(sql))

        def header_of(result):
            return list(result.keys())
    queries = 0
    for wiki in spec["wikis"]:
        header, lines = None, []
        for day in range(spec["days"]):
            result = execute(spec["sql"].format(from_date=labels[day], to_date=labels[day + 1],
                                                wiki=wiki))
            rows = result.fetchall()
            header = header or header_of(result)
            lines += ["\t".join("" if cell is None else str(cell) for cell in row) for row in rows]
            queries += 1
        path = out / spec["report"] / f"{wiki}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\t".join(header) + "\n" + "\n".join(lines) + "\n")
    connection.close()
    after = time.perf_counter()
    return {"queries": queries, "run_seconds": after - before, "startup_seconds": before - STARTED}


def own_io() -> dict:
    """This process's I/O counters (Linux); {} where there is no /proc."""
    try:
        with open("/proc/self/io", encoding="ascii") as handle:
            fields = dict(line.split(": ") for line in handle.read().splitlines())
    except OSError:
        return {}
    return {"write_bytes": int(fields["write_bytes"]), "wchar": int(fields["wchar"]),
            "cancelled_write_bytes": int(fields["cancelled_write_bytes"])}


def baseline(spec: dict) -> dict:
    import subprocess

    before = time.perf_counter()
    failed = 0
    for argv in spec["argvs"]:
        done = subprocess.run(argv, cwd=spec["cwd"], stdin=subprocess.DEVNULL, capture_output=True)
        failed += done.returncode != 0
    after = time.perf_counter()
    return {"spawned": len(spec["argvs"]), "failed": failed, "run_seconds": after - before,
            "startup_seconds": before - STARTED}


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as handle:
        spec = json.load(handle)
    function = {"run": run, "baseline": baseline, "status": status, "floor": floor}[mode]
    profile_path = os.environ.get("BENCH_PROFILE")
    if not profile_path:
        print(json.dumps({**function(spec), "io": own_io()}))
        return
    # run.py --profile: where the time goes (timings are inflated by cProfile).
    import cProfile
    import io
    import pstats
    import threading
    # cProfile sees one thread: give every thread (the runner's job pool) its
    # own profiler and merge them, so time inside jobs shows up too (the
    # main thread's waits then overlap the workers' time in `cumulative`).
    thread_profilers: list[cProfile.Profile] = []
    thread_run = threading.Thread.run

    def profiled_run(self) -> None:
        thread_profiler = cProfile.Profile()
        thread_profilers.append(thread_profiler)
        thread_profiler.enable()
        try:
            thread_run(self)
        finally:
            thread_profiler.disable()

    threading.Thread.run = profiled_run
    profiler = cProfile.Profile()
    result = profiler.runcall(function, spec)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    for thread_profiler in thread_profilers:
        try:
            stats.add(thread_profiler)
        except TypeError:  # a thread still running has no stats yet
            pass
    text.write(f"{len(thread_profilers)} thread profiles merged into the main thread's\n")
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)
    with open(profile_path, "w", encoding="utf-8") as handle:
        handle.write(f"# child.py {mode} {path}\n# {json.dumps(result)}\n{text.getvalue()}")
    print(json.dumps({**result, "io": own_io()}))


if __name__ == "__main__":
    main()
