# What the benchmark harness runs in a child process (one per measurement),
# so that wall time and peak RSS are those of one fresh interpreter.
#
#   child.py run SPEC.json       reportupdater.runner.run(RunOptions(...)),
#                                then one JSON line on stdout: the run's
#                                computed/failed intervals, queries, seconds
#                                inside queries and scripts, seconds inside run().
#   child.py baseline SPEC.json  spawn every argv of SPEC serially with
#                                subprocess (the serial-spawn baseline of case a).
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
    function = {"run": run, "baseline": baseline}[mode]
    profile_path = os.environ.get("BENCH_PROFILE")
    if not profile_path:
        print(json.dumps(function(spec)))
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
    print(json.dumps(result))


if __name__ == "__main__":
    main()
