#!/usr/bin/env python3
"""reportupdater benchmark suite: one command, a table, benchmarks/results.md.

    .venv/bin/python benchmarks/run.py                 # every case, full sizes (4-10 min)
    .venv/bin/python benchmarks/run.py --quick         # smaller sizes (a minute or two)
    .venv/bin/python benchmarks/run.py --only a,d      # some cases
    .venv/bin/python benchmarks/run.py --ref HEAD      # the committed code, not the working tree
    .venv/bin/python benchmarks/run.py --only d --profile /tmp/prof   # where time goes

Cases: (a) trivial script report from empty vs spawning the same argv
serially; (b) sql report on a live MariaDB (2M rows), serial vs --jobs 4;
(c) 20 wikis x 24 months on sqlite; (d) a no-op run over 4000 complete
outputs; (e) a hive report on a Spark Thrift Server, unbatched vs batch: 30;
(f) a wide per-wiki daily backfill on sqlite from empty (300 wikis x 365
days and 30 x 3650; --full: 900 x 1826), against its plain-loop floor,
with bytes written, then a no-op run and status.
Servers (MariaDB for b, Spark for e) start once, on 127.0.0.1, in a temp dir,
and are stopped at the end. docs/performance.md explains the columns.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases  # noqa: E402
import harness  # noqa: E402
from harness import BENCH_DIR, machine, measurement_table, target_table  # noqa: E402


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", metavar="a,b,...",
                        help=f"only these cases (of {','.join(cases.CASES)})")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repeat each")
    parser.add_argument("--full", action="store_true",
                        help="case f at 900 wikis x 1826 days (1.64 M intervals) instead of "
                             "300 x 365 and 30 x 3650")
    parser.add_argument("--repeat", type=int, metavar="N",
                        help="runs per measurement, median kept (default: a, b, c 5; d 3; e 1 unbatched, 3 batched; --quick 1)")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results.md",
                        help="where the table goes (default benchmarks/results.md)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (folders, logs)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run every child under cProfile and save its top functions in DIR "
                             "(timings are then inflated: for finding where time goes only)")
    parser.add_argument("--ref", metavar="COMMIT",
                        help="benchmark reportupdater as committed at COMMIT (git archive into the "
                             "temp dir) instead of the working tree")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                        help="first wait up to SECONDS for the machine to be at least 80 %% idle "
                             "(other processes skew every timing)")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        harness.PROFILE_DIR = args.profile.resolve()

    selected = [name.strip() for name in args.only.split(",") if name.strip()] or list(cases.CASES)
    unknown = [name for name in selected if name not in cases.CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(cases.CASES)}")

    signal.signal(signal.SIGTERM, _on_sigterm)
    if args.wait_idle > 0:
        deadline = time.monotonic() + args.wait_idle
        while True:
            idle = harness.idle_fraction()
            print(f"machine {idle:.0%} idle", flush=True)
            if idle >= 0.8 or time.monotonic() > deadline:
                break
    root = Path(tempfile.mkdtemp(prefix="reportupdater-bench-"))
    started = time.monotonic()
    load_before = os.getloadavg()
    busy_before, total_before = harness.cpu_times()
    own_before = harness.own_cpu()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    if args.ref:
        try:
            commit = harness.export_ref(args.ref, root / "src")
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            shutil.rmtree(root, ignore_errors=True)
            parser.error(f"--ref {args.ref}: {exc}")
        harness.SOURCE = root / "src"
        version = f"commit {commit} (--ref {args.ref})"
    else:
        version = harness.working_tree_version()
    log(f"reportupdater: {version}")
    harness.compile_library()
    ctx = cases.Context(root=root, quick=args.quick, repeat=args.repeat, log=log, full=args.full)
    errors: list[str] = []
    log(f"temp dir {root}; cases {','.join(selected)}{' (quick)' if args.quick else ''}")
    try:
        for name in selected:
            reason = cases.NEEDS.get(name, lambda: None)()
            if reason:
                ctx.skipped.append(f"({name}) skipped: {reason}")
                log(f"({name}) skipped: {reason}")
                continue
            try:
                cases.CASES[name](ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                traceback.print_exc()
                errors.append(f"({name}) failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
                log(errors[-1])
    except KeyboardInterrupt:
        errors.append("interrupted")
        log("interrupted; stopping servers")
    finally:
        ctx.stop_servers()
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    total = time.monotonic() - started

    info = {"reportupdater": version, **machine()}
    load_after = os.getloadavg()
    busy_after, total_after = harness.cpu_times()
    others = max(0.0, (busy_after - busy_before) - (harness.own_cpu() - own_before))
    available = max(total_after - total_before, 1e-9)
    info["CPU used by other processes during the suite"] = (
        f"{others:.0f} of {available:.0f} CPU-seconds ({others / available:.0%} of the machine)")
    info["load average 1/5/15 min"] = (f"{' '.join(f'{x:.2f}' for x in load_before)} at start, "
                                       f"{' '.join(f'{x:.2f}' for x in load_after)} at end")
    report = ["# reportupdater benchmark results", "",
              f"`{' '.join(['benchmarks/run.py'] + sys.argv[1:])}` — "
              f"{'quick sizes (targets are defined for the full sizes)' if args.quick else 'full sizes'}, "
              f"suite took {total / 60:.1f} min."
              + (" Run under cProfile (--profile): timings inflated." if args.profile else ""), "",
              "| Machine | |", "|---|---|"]
    report += [f"| {key} | {value} |" for key, value in info.items()]
    report += ["", "## Measurements", "", measurement_table(ctx.rows), ""]
    if ctx.wide_rows:
        report += ["### (f) wide backfill: bytes written and the plain-loop floor", "",
                   cases.wide_table(ctx.wide_rows), "",
                   ("write_bytes / wchar: the child's own /proc/self/io at its end (bytes it sent "
                    "to the block layer, counted when dirtied / bytes passed to write(), logs "
                    "included); final TSVs: the sum of the sizes of the output files it left; "
                    "floor: the same queries in a plain loop, each file written once, no fsync."), ""]
    report += ["## Targets", "", target_table(ctx.targets), ""]
    extra = ctx.notes + ctx.skipped + errors
    if extra:
        report += ["## Notes", ""] + [f"- {line}" for line in extra] + [""]
    report += [
        "Columns: wall = spawn to exit of a fresh child process, median of the repeats "
        "(min-max of the repeats in brackets); CPU = user + system seconds of that child and "
        "the scripts it ran (less sensitive to other load than wall); peak RSS = ru_maxrss of that child (os.wait4); "
        "queries = queries or script runs issued (a batch is one); inside queries = "
        "ReportOutcome.engine_seconds summed (summed over jobs, so it can exceed wall when "
        "parallel); overhead = (wall − inside queries) / intervals, serial runs only "
        "(with parallel jobs time inside queries overlaps); (in run()) = the same with the "
        "time inside runner.run() instead of wall; start-up = wall − time inside runner.run() "
        "(interpreter, imports, exit).", ""]
    text = "\n".join(report)
    args.output.write_text(text)
    print()
    print(text)
    print(f"written to {args.output}")
    missed = [target for target in ctx.targets if not target.met]
    if missed:
        print(f"{len(missed)} target(s) not met: " + "; ".join(f"({t.case}) {t.text}" for t in missed))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
