# Measuring one child process, and the tables the suite prints.
#
# Every measurement is a fresh `python benchmarks/child.py MODE SPEC.json`:
# wall time is taken around spawn .. reap (so it includes interpreter start,
# imports and exit, as a cron job would see), peak RSS comes from os.wait4's
# rusage of that child (ru_maxrss, KiB on Linux; the maximum over the child
# and the processes it reaped, i.e. in practice the Python child itself,
# since the scripts it spawns are a few MB of /bin/sh).

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, UTC
from pathlib import Path
from collections.abc import Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CHILD = BENCH_DIR / "child.py"


class ChildFailed(Exception):
    pass


@dataclass
class Measurement:
    wall: float                 # median over the repeats
    rss_mb: float               # of the median run
    data: dict                  # the child's JSON (median run)
    walls: list[float] = field(default_factory=list)  # every repeat
    cpu: float = 0.0            # user + system CPU seconds of the median run (with its scripts)

    @property
    def spread(self) -> str:
        if len(self.walls) < 2:
            return ""
        return f"{min(self.walls):.2f}-{max(self.walls):.2f}"


# run.py --profile DIR: every child runs under cProfile, its profile saved in DIR.
PROFILE_DIR: Path | None = None
# Where the children import reportupdater from: the working tree, or (run.py
# --ref REF) a `git archive` of a commit.
SOURCE: Path = REPO


def compile_library() -> None:
    """Compile reportupdater's bytecode into its __pycache__, as `pip install`
    does. The children only read it (PYTHONDONTWRITEBYTECODE=1, as on this
    machine): without it every child would compile the sources, ~90 ms of
    start-up that no installed copy pays."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(SOURCE / "reportupdater")],
                   check=True, stdout=subprocess.DEVNULL)


def _spawn_once(mode: str, spec_path: Path, log_path: Path) -> tuple[float, float, dict, float]:
    env = dict(os.environ, PYTHONPATH=str(SOURCE), PYTHONDONTWRITEBYTECODE="1")
    env.pop("REPORTUPDATER_HIVE_URL", None)
    env.pop("BENCH_PROFILE", None)
    if PROFILE_DIR is not None:
        name = f"{spec_path.parent.parent.name}-{spec_path.parent.name}-{log_path.stem}.txt"
        env["BENCH_PROFILE"] = str(PROFILE_DIR / name)
    with open(log_path, "wb") as stderr, open(log_path.with_suffix(".out"), "w+b") as stdout:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, str(CHILD), mode, str(spec_path)],
                                   stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                   cwd=spec_path.parent, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        out = stdout.read().decode("utf-8", errors="replace")
    if process.returncode != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise ChildFailed(f"child {mode} {spec_path} exited {process.returncode}:\n{tail}")
    try:
        data = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ChildFailed(f"child {mode} {spec_path} printed no JSON:\n{out[-1000:]}") from None
    module = data.get("module")
    if module and not Path(module).resolve().is_relative_to(SOURCE.resolve()):
        raise ChildFailed(f"the child imported reportupdater from {module}, not from {SOURCE}")
    # ru_utime/ru_stime of the child include the processes it reaped (its scripts).
    return wall, usage.ru_maxrss / 1024.0, data, usage.ru_utime + usage.ru_stime


@dataclass
class Item:
    """One thing to measure: `child.py MODE SPEC`, with prepare() before each run."""
    mode: str
    spec: dict
    workdir: Path
    prepare: Callable[[], None] | None = None


def measure_set(items: list[Item], repeat: int = 1) -> list[Measurement]:
    """Measure several items `repeat` times each, interleaved (round 1: every
    item, round 2: every item, ...) so that a change in background load hits
    them alike; keep each item's run with the median wall time."""
    spec_paths = []
    for item in items:
        item.workdir.mkdir(parents=True, exist_ok=True)
        spec_path = item.workdir / f"spec-{item.mode}.json"
        spec_path.write_text(json.dumps(item.spec))
        spec_paths.append(spec_path)
    runs: list[list[tuple[float, float, dict, float]]] = [[] for _ in items]
    for attempt in range(repeat):
        for index, item in enumerate(items):
            if item.prepare is not None:
                item.prepare()
            runs[index].append(_spawn_once(item.mode, spec_paths[index],
                                           item.workdir / f"{item.mode}-{attempt}.log"))
    measurements = []
    for item_runs in runs:
        ordered = sorted(item_runs, key=lambda run: run[0])
        wall, rss, data, cpu = ordered[(len(ordered) - 1) // 2]
        measurements.append(Measurement(wall=wall, rss_mb=rss, data=data, cpu=cpu,
                                        walls=[run[0] for run in item_runs]))
    return measurements


def measure(mode: str, spec: dict, workdir: Path, repeat: int = 1,
            prepare: Callable[[], None] | None = None) -> Measurement:
    return measure_set([Item(mode, spec, workdir, prepare)], repeat)[0]


def wipe(path: Path) -> Callable[[], None]:
    def prepare() -> None:
        shutil.rmtree(path, ignore_errors=True)
    return prepare


# ------------------------------------------------------------------ results


@dataclass
class Row:
    case: str
    variant: str
    jobs: str
    intervals: int
    m: Measurement
    queries: int | None = None
    engine_seconds: float | None = None
    serial: bool = False   # overhead is only meaningful without parallel jobs
    note: str = ""

    @property
    def per_second(self) -> float:
        return self.intervals / self.m.wall if self.m.wall else 0.0

    @property
    def overhead_ms(self) -> float | None:
        """(wall - time inside queries and scripts) / intervals, serial runs only."""
        if not self.serial or self.engine_seconds is None or not self.intervals:
            return None
        return (self.m.wall - self.engine_seconds) / self.intervals * 1000

    @property
    def overhead_in_run_ms(self) -> float | None:
        """The same without interpreter start-up, imports and exit."""
        if not self.serial or self.engine_seconds is None or not self.intervals:
            return None
        run_seconds = self.m.data.get("run_seconds")
        if run_seconds is None:
            return None
        return (run_seconds - self.engine_seconds) / self.intervals * 1000


@dataclass
class Target:
    case: str
    text: str
    measured: str
    met: bool


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def measurement_table(rows: list[Row]) -> str:
    header = ("| Case | Variant | Jobs | Intervals | Wall s (min-max) | CPU s | Peak RSS MB | Intervals/s "
              "| Queries | Inside queries s | Overhead ms/interval (wall) | (in run()) | Start-up s |")
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        spread = f" ({row.m.spread})" if row.m.spread else ""
        startup = row.m.wall - row.m.data["run_seconds"] if "run_seconds" in row.m.data else None
        variant = row.variant + (f" — {row.note}" if row.note else "")
        lines.append(
            f"| {row.case} | {variant} | {row.jobs} | {row.intervals} | {row.m.wall:.2f}{spread} "
            f"| {row.m.cpu:.2f} | {row.m.rss_mb:.0f} | {row.per_second:,.0f} | "
            f"{'–' if row.queries is None else row.queries} | {_fmt(row.engine_seconds)} | "
            f"{_fmt(row.overhead_ms, 3)} | {_fmt(row.overhead_in_run_ms, 3)} | {_fmt(startup)} |")
    return "\n".join(lines)


def target_table(targets: list[Target]) -> str:
    lines = ["| Case | Target | Measured | Result |", "|---|---|---|---|"]
    for target in targets:
        lines.append(f"| {target.case} | {target.text} | {target.measured} | "
                     f"{'met' if target.met else '**NOT met**'} |")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
    }


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def working_tree_version() -> str:
    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "reportupdater")
    except (OSError, RuntimeError):
        return "working tree (not a git checkout?)"
    return f"working tree at {commit}" + (" + uncommitted changes in reportupdater/" if dirty else "")


def export_ref(ref: str, target: Path) -> str:
    """`git archive REF reportupdater` into target; returns the short commit."""
    commit = git("rev-parse", "--short", f"{ref}^{{commit}}")
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", commit, "reportupdater"],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {commit} failed")
    return commit




def median(values: list[float]) -> float:
    return statistics.median(values)


# ------------------------------------------------- other load on the machine


def cpu_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq + steal
    tick = os.sysconf("SC_CLK_TCK")
    return busy / tick, (busy + idle + iowait) / tick


def own_cpu() -> float:
    """CPU seconds of this process and its reaped children (children, servers)."""
    import resource
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def idle_fraction(seconds: float = 5.0) -> float:
    busy0, total0 = cpu_times()
    time.sleep(seconds)
    busy1, total1 = cpu_times()
    return 1 - (busy1 - busy0) / max(total1 - total0, 1e-9)
