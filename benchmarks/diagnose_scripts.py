#!/usr/bin/env python3
"""Where a serial script run (case a) spends the time it does not spend in
the scripts: the same report run with parts of the runner's machinery
switched off by monkeypatching, in fresh processes, interleaved.

    .venv/bin/python benchmarks/diagnose_scripts.py [--days 1460] [--rounds 3] [--ref COMMIT]

Variants (each a fresh child process, --jobs 1, from empty):
  runner            as shipped
  no-timeout        Popen.communicate() called without its timeout
  no-reaper         no messages to the orphan-reaper process
  no-pool           jobs run inline instead of through the thread pool
  all-three         the three above together
  baseline          subprocess.run of the same argv, one after the other

Diagnosis only: the patches change behaviour (no timeout, no reaper), so
this says where time goes, not what to ship. Prints the median wall and CPU
(the child's own and its scripts') per variant.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SCRIPT = "#!/bin/sh\nprintf 'date\\tvalue\\n%s\\t1\\n' \"$1\"\n"
VARIANTS = ("runner", "no-timeout", "no-reaper", "no-pool", "all-three", "baseline")


def child(variant: str, folder: Path, out: Path, days: int) -> None:
    from datetime import date, datetime, timedelta
    started = time.perf_counter()
    if variant == "baseline":
        first = date(2016, 1, 1)
        script = folder / "trivial"
        for i in range(days):
            subprocess.run([str(script), str(first + timedelta(i)), str(first + timedelta(i + 1)),
                            str(folder)], cwd=folder, stdin=subprocess.DEVNULL, capture_output=True)
        computed = days
    else:
        from reportupdater import runner
        from reportupdater import processes
        if variant in ("no-timeout", "all-three"):
            communicate = subprocess.Popen.communicate

            def without_timeout(self, input=None, timeout=None):
                return communicate(self, input)
            subprocess.Popen.communicate = without_timeout
        if variant in ("no-reaper", "all-three"):
            processes._tell_reaper = lambda message: None
        if variant in ("no-pool", "all-three"):
            def inline(self, jobs):
                for job in jobs:
                    yield (job, *self._run(job))
            runner._Engines.execute = inline
        summary = runner.run(runner.RunOptions(
            folder, out, now=datetime(2016, 1, 1) + timedelta(days=days), jobs=1, graphite=False))
        computed = sum(outcome.computed for outcome in summary.reports.values())
    wall = time.perf_counter() - started
    cpu = sum(getattr(resource.getrusage(who), field) for who in
              (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for field in ("ru_utime", "ru_stime"))
    print(json.dumps({"wall": wall, "cpu": cpu, "computed": computed}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=1460)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ref", metavar="COMMIT", help="reportupdater as committed at COMMIT")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]), args.days)
        return 0

    import harness
    root = Path(tempfile.mkdtemp(prefix="reportupdater-diagnose-"))
    try:
        source = harness.REPO
        if args.ref:
            harness.export_ref(args.ref, root / "src")
            source = root / "src"
        folder = root / "queries"
        folder.mkdir()
        (folder / "config.yaml").write_text(
            "reports:\n  trivial:\n    type: script\n    granularity: days\n    starts: 2016-01-01\n")
        (folder / "trivial").write_text(SCRIPT)
        (folder / "trivial").chmod(0o755)
        env = dict(os.environ, PYTHONPATH=str(source))
        results: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
        for round_number in range(args.rounds):
            for variant in VARIANTS:
                out = root / f"out-{variant}"
                shutil.rmtree(out, ignore_errors=True)
                done = subprocess.run([sys.executable, __file__, "--days", str(args.days), "--child",
                                       variant, str(folder), str(out)],
                                      capture_output=True, text=True, env=env)
                if done.returncode != 0:
                    print(done.stderr, file=sys.stderr)
                    return 1
                results[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_number + 1} of {args.rounds} done", file=sys.stderr)
        base_wall = statistics.median(r["wall"] for r in results["baseline"])
        print(f"{args.days} daily intervals of a trivial script, --jobs 1, median of {args.rounds} "
              f"rounds (wall: from importing reportupdater to the end of the run; CPU: the whole "
              f"child process and its scripts)")
        print(f"{'variant':12s} {'wall s':>8s} {'CPU s':>8s} {'wall/baseline':>14s}")
        for variant, runs in results.items():
            wall = statistics.median(r["wall"] for r in runs)
            cpu = statistics.median(r["cpu"] for r in runs)
            print(f"{variant:12s} {wall:8.2f} {cpu:8.2f} {wall / base_wall:13.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
