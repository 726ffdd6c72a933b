# The benchmark cases (a) to (f). Each builds its query folder(s) under the
# suite's temp dir, measures child runs (harness.measure) and adds rows and
# target verdicts to the context. Every run passes a fixed `now`.

from __future__ import annotations

import sqlite3
import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from collections.abc import Callable

from harness import REPO, Item, Measurement, Row, Target, measure_set, wipe

sys.path.insert(0, str(REPO / "tests"))
import live_servers as servers  # noqa: E402  (the launchers the tests use too)

# MariaDB for case (b): a buffer pool big enough for the 2-million-row table
# and its index, and no log flush per commit (only the build writes).
MARIADB_OPTIONS = ("--innodb-buffer-pool-size=512M", "--innodb-flush-log-at-trx-commit=0")
MARIADB_PASSWORD = "bench-Pa55word"
# Spark for case (e): dates as UTC whatever the machine's zone.
SPARK_CONF = ("spark.sql.session.timeZone=UTC",)


@dataclass
class Context:
    root: Path
    quick: bool
    repeat: int | None      # None: each case's default
    log: Callable[[str], None]
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    full: bool = False      # --full: the largest sizes (case f: 900 wikis x 1826 days)
    wide_rows: list = field(default_factory=list)   # case f's own table (WideRow)
    wide_walls: dict = field(default_factory=dict)  # (wikis, days) -> default-jobs wall
    _mariadb: servers.MariaDB | None = None
    _spark: servers.ThriftServer | None = None

    def repeats(self, default: int) -> int:
        if self.repeat is not None:
            return self.repeat
        return 1 if self.quick else default

    def mariadb(self) -> servers.MariaDB:
        if self._mariadb is None:
            base = self.root / "mariadb"
            base.mkdir()
            started = time.monotonic()
            self._mariadb = servers.start_mariadb(base, MARIADB_PASSWORD, MARIADB_OPTIONS)
            self.log(f"  MariaDB up on 127.0.0.1:{self._mariadb.port} "
                     f"in {time.monotonic() - started:.1f} s")
        return self._mariadb

    def spark(self) -> servers.ThriftServer:
        if self._spark is None:
            base = self.root / "spark"
            base.mkdir()
            started = time.monotonic()
            self._spark = servers.start_thrift_server(base, SPARK_CONF)
            self.log(f"  Spark Thrift Server up on 127.0.0.1:{self._spark.port} "
                     f"in {time.monotonic() - started:.1f} s")
        return self._spark

    def stop_servers(self) -> None:
        for server in (self._spark, self._mariadb):
            if server is not None:
                try:
                    server.stop()
                except Exception as exc:  # keep stopping the others
                    self.log(f"  stopping {type(server).__name__}: {exc}")
        self._spark = self._mariadb = None

    def target(self, case: str, text: str, measured: str, met: bool) -> None:
        self.targets.append(Target(case, text, measured, met))
        self.log(f"  target {text}: {measured} -> {'met' if met else 'NOT met'}")


def _run_spec(folder: Path, out: Path, now: datetime, jobs: int) -> dict:
    return {"query_folder": str(folder), "output_folder": str(out), "now": now.isoformat(),
            "jobs": jobs}


def _item(folder: Path, out: Path, now: datetime, jobs: int, fresh: bool = True) -> Item:
    """A runner.run child over folder -> out; fresh: out is deleted before each run."""
    return Item("run", _run_spec(folder, out, now, jobs), out.parent / f"work-j{jobs}-{out.name}",
                wipe(out) if fresh else None)


def _check(folder: Path, m: Measurement, expect_computed: int | None) -> Measurement:
    data = m.data
    if data["config_errors"]:
        raise RuntimeError(f"{folder}: config errors: {data['config_errors']}")
    if data["failed"] or (expect_computed is not None and data["computed"] != expect_computed):
        raise RuntimeError(f"{folder}: computed {data['computed']}, failed {data['failed']}, "
                           f"expected {expect_computed} computed; see {folder.parent}")
    return m


def _run(ctx: Context, folder: Path, out: Path, now: datetime, jobs: int, repeat: int,
         expect_computed: int | None, fresh: bool = True) -> Measurement:
    return _check(folder, measure_set([_item(folder, out, now, jobs, fresh)], repeat)[0],
                  expect_computed)


def _jobs_label(m: Measurement, jobs: int) -> str:
    return "1" if jobs == 1 else f"{m.data['jobs']} (default)" if jobs == 0 else str(jobs)


def _row(ctx: Context, case: str, variant: str, jobs: int, m: Measurement, note: str = "",
         intervals: int | None = None) -> Row:
    row = Row(case=case, variant=variant, jobs=_jobs_label(m, jobs),
              intervals=m.data["computed"] if intervals is None else intervals, m=m,
              queries=m.data["queries"], engine_seconds=m.data["engine_seconds"],
              serial=(jobs == 1 or m.data.get("jobs") == 1), note=note)
    ctx.rows.append(row)
    ctx.log(f"  {case} {variant} jobs={row.jobs}: {m.wall:.2f} s, {m.rss_mb:.0f} MB, "
            f"{row.queries} queries, {row.engine_seconds:.2f} s inside"
            + (f", overhead {row.overhead_ms:.3f} ms/interval" if row.overhead_ms is not None else ""))
    return row


# ------------------------------------------------------------ (a) scripts

TRIVIAL_SCRIPT = """#!/bin/sh
# SCRIPT START END FOLDER: one header line, one row dated START.
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""


def case_a(ctx: Context) -> None:
    """A trivial script report from empty, against spawning the same argv serially."""
    sizes = (146, 365) if ctx.quick else (1460, 3650)
    starts = date(2016, 1, 1)
    repeat = ctx.repeats(5)
    items: list[Item] = []
    folders: dict[int, Path] = {}
    for days in sizes:
        base = ctx.root / f"a-{days}"
        folder = folders[days] = base / "queries"
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(
            f"reports:\n  trivial:\n    type: script\n    granularity: days\n"
            f"    starts: {starts.isoformat()}\n")
        script = folder / "trivial"
        script.write_text(TRIVIAL_SCRIPT)
        script.chmod(0o755)
        now = datetime.combine(starts + timedelta(days=days), datetime.min.time())
        # The runner's argv: SCRIPT START END FOLDER, run in the query folder.
        argvs = [[str(script), (starts + timedelta(days=i)).isoformat(),
                  (starts + timedelta(days=i + 1)).isoformat(), str(folder)] for i in range(days)]
        items += [Item("baseline", {"argvs": argvs, "cwd": str(folder)}, base / "work-baseline"),
                  _item(folder, base / "out-serial", now, 1),
                  _item(folder, base / "out-default", now, 0)]
    # Both sizes in every round, so that a change in the machine's other load
    # between rounds does not pass for a scaling effect.
    ctx.log(f"(a) {' and '.join(map(str, sizes))} daily intervals of a trivial script "
            f"(baseline, --jobs 1, default jobs; {repeat} rounds, interleaved)")
    measured = iter(measure_set(items, repeat))
    walls: dict[tuple[int, str], float] = {}
    cpus: dict[tuple[int, str], float] = {}
    for days in sizes:
        base_m, serial_m, default_m = next(measured), next(measured), next(measured)
        if base_m.data["failed"]:
            raise RuntimeError(f"baseline: {base_m.data['failed']} scripts failed")
        ctx.rows.append(Row("a", f"{days} days: baseline, subprocess.run serially", "1", days, base_m,
                            queries=base_m.data["spawned"]))
        ctx.log(f"  a {days} days baseline: {base_m.wall:.2f} s")
        walls[(days, "baseline")], cpus[(days, "baseline")] = base_m.wall, base_m.cpu
        for jobs, name, m in ((1, "serial", serial_m), (0, "default", default_m)):
            _check(folders[days], m, expect_computed=days)
            _row(ctx, "a", f"{days} days: runner", jobs, m)
            walls[(days, name)], cpus[(days, name)] = m.wall, m.cpu
            ratio = m.wall / base_m.wall
            ctx.target("a", f"{days} days, --jobs {_jobs_label(m, jobs)}: wall ≤ 1.3 × serial spawn",
                       f"{m.wall:.2f} s / {base_m.wall:.2f} s = {ratio:.2f}× "
                       f"(CPU: {m.cpu:.2f} s / {base_m.cpu:.2f} s = {m.cpu / base_m.cpu:.2f}×)",
                       ratio <= 1.3)
    small, big = sizes
    baseline_ratio = walls[(big, "baseline")] / walls[(small, "baseline")]
    for name, label in (("serial", "--jobs 1"), ("default", "default jobs")):
        ratio = walls[(big, name)] / walls[(small, name)]
        cpu_ratio = cpus[(big, name)] / cpus[(small, name)]
        ctx.target("a", f"{label}: wall({big}) ≤ 2.6 × wall({small})",
                   f"{walls[(big, name)]:.2f} s / {walls[(small, name)]:.2f} s = {ratio:.2f}× "
                   f"(CPU: {cpu_ratio:.2f}×; the baseline's own: {baseline_ratio:.2f}×)",
                   ratio <= 2.6)


# ----------------------------------------------------------- (b) MariaDB

EVENTS_SQL = """SELECT DATE('{from_date}') AS date, COUNT(*) AS events, COUNT(DISTINCT wiki) AS wikis
FROM events
WHERE ts >= '{from_timestamp}' AND ts < '{to_timestamp}'
"""


def case_b(ctx: Context) -> None:
    """730 daily intervals of a sql report over a 2-million-row MariaDB table."""
    rows_total, days = (200_000, 73) if ctx.quick else (2_000_000, 730)
    starts = date(2024, 1, 1)
    server = ctx.mariadb()
    ctx.log(f"(b) building bench.events: {rows_total:,} rows over {days} days")
    started = time.monotonic()
    seconds_per_row = days * 86400 / rows_total
    server.execute("DROP DATABASE IF EXISTS bench", "CREATE DATABASE bench")
    server.execute(
        "CREATE TABLE bench.events (id INT UNSIGNED NOT NULL PRIMARY KEY, ts DATETIME NOT NULL, "
        "wiki VARCHAR(16) NOT NULL, action VARCHAR(8) NOT NULL) ENGINE=InnoDB",
        f"INSERT INTO bench.events SELECT seq, TIMESTAMPADD(SECOND, FLOOR((seq - 1) * {seconds_per_row}), "
        f"'{starts.isoformat()}'), CONCAT('wiki', seq % 20), IF(seq % 3 = 0, 'save', 'view') "
        f"FROM seq_1_to_{rows_total}",
        "ALTER TABLE bench.events ADD INDEX ts_wiki (ts, wiki)",
        "ANALYZE TABLE bench.events", database="bench")  # seq_1_to_N lives in every database
    count, first, last = server.execute("SELECT COUNT(*), MIN(ts), MAX(ts) FROM bench.events")[0]
    build = time.monotonic() - started
    ctx.log(f"  {count:,} rows {first} .. {last}, built in {build:.1f} s")
    ctx.notes.append(f"(b) table of {count:,} rows ({first} .. {last}) built with INSERT ... SELECT "
                     f"FROM seq_1_to_{rows_total} and an index on (ts, wiki) in {build:.1f} s")

    base = ctx.root / "b"
    folder = base / "queries"
    folder.mkdir(parents=True)
    creds = server.creds_file(base)
    (folder / "config.yaml").write_text(f"""databases:
  bench:
    host: 127.0.0.1
    port: {server.port}
    creds_file: {creds}
    db: bench
reports:
  events:
    db: bench
    granularity: days
    starts: {starts.isoformat()}
""")
    (folder / "events.sql").write_text(EVENTS_SQL)
    now = datetime.combine(starts + timedelta(days=days), datetime.min.time())
    repeat = ctx.repeats(5)
    serial, parallel = measure_set([_item(folder, base / "out-serial", now, 1),
                                    _item(folder, base / "out-parallel", now, 4)], repeat)
    serial_row = _row(ctx, "b", f"{days} days, MariaDB", 1, _check(folder, serial, days))
    _row(ctx, "b", f"{days} days, MariaDB", 4, _check(folder, parallel, days))
    ctx.target("b", "--jobs 1: runner overhead < 1 ms/interval ((wall − inside queries) / intervals)",
               f"{serial_row.overhead_ms:.3f} ms (in run(): {serial_row.overhead_in_run_ms:.3f} ms)",
               serial_row.overhead_ms < 1.0)
    # Faster by more than the noise between repeats (5 %), or it is a tie.
    ctx.target("b", "--jobs 4 faster than --jobs 1 (by > 5 %, beyond noise)",
               f"{parallel.wall:.3f} s vs {serial.wall:.3f} s ({serial.wall / parallel.wall:.2f}×)",
               parallel.wall * 1.05 < serial.wall)


# ------------------------------------------------------ (c) wikis x months

WIKIS_SQL = """SELECT '{from_date}' AS date, COUNT(*) AS edits, COUNT(DISTINCT user_id) AS editors
FROM edits
WHERE wiki = '{wiki}' AND ts >= '{from_date}' AND ts < '{to_date}'
"""


def case_c(ctx: Context) -> None:
    """20 wikis x 24 monthly intervals (explode_by), sql on sqlite."""
    wikis, months = (5, 12) if ctx.quick else (20, 24)
    base = ctx.root / "c"
    folder = base / "queries"
    folder.mkdir(parents=True)
    names = [f"wiki{i:02d}" for i in range(wikis)]
    (folder / "wikis.txt").write_text("\n".join(names) + "\n")
    starts = date(2024, 1, 1)
    days = (date(2024 + months // 12, 1 + months % 12, 1) - starts).days
    connection = sqlite3.connect(folder / "wikis.db")
    connection.execute("CREATE TABLE edits (wiki TEXT, ts TEXT, user_id INTEGER)")
    connection.executemany("INSERT INTO edits VALUES (?, ?, ?)", (
        (names[n % wikis], (datetime(2024, 1, 1) + timedelta(minutes=37 * n)).strftime("%Y-%m-%d %H:%M:%S"),
         n % 997) for n in range(days * 24 * 60 // 37)))
    connection.execute("CREATE INDEX edits_wiki_ts ON edits (wiki, ts)")
    connection.commit()
    connection.close()
    (folder / "config.yaml").write_text(f"""databases:
  wikis:
    url: sqlite:///wikis.db
reports:
  edits:
    db: wikis
    granularity: months
    starts: {starts.isoformat()}
    explode_by:
      wiki: wikis.txt
""")
    (folder / "edits.sql").write_text(WIKIS_SQL)
    now = datetime.combine(starts + timedelta(days=days), datetime.min.time())
    ctx.log(f"(c) {wikis} wikis x {months} months on sqlite")
    repeat = ctx.repeats(5)
    measured = measure_set([_item(folder, base / f"out-j{jobs}", now, jobs) for jobs in (1, 0)], repeat)
    for jobs, m in zip((1, 0), measured, strict=True):
        _row(ctx, "c", f"{wikis} wikis × {months} months, sqlite", jobs,
             _check(folder, m, wikis * months))


# ----------------------------------------------------- (d) no-op, complete


def case_d(ctx: Context) -> None:
    """A run with nothing to do over 200 reports x 20 combinations x 730 days."""
    reports, combos, days = (20, 20, 730) if ctx.quick else (200, 20, 730)
    base = ctx.root / "d"
    folder = base / "queries"
    out = base / "out"
    folder.mkdir(parents=True)
    starts = date(2024, 1, 1)
    now = datetime.combine(starts + timedelta(days=days), datetime.min.time())
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
    ctx.log(f"(d) writing {reports * combos} complete outputs of {days} rows")
    started = time.monotonic()
    for wiki in wikis:
        lines = ["date\twiki\tedits\teditors"] + [
            f"{(starts + timedelta(days=i)).isoformat()}\t{wiki}\t{(i * 7919) % 1000}\t{(i * 104729) % 97}"
            for i in range(days)]
        text = "\n".join(lines) + "\n"
        for r in range(reports):
            path = out / f"report{r:03d}" / f"{wiki}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    size = sum(p.stat().st_size for p in out.rglob("*.tsv"))
    ctx.log(f"  {size / 1e6:.0f} MB written in {time.monotonic() - started:.1f} s")
    ctx.notes.append(f"(d) {reports * combos} output files, {size / 1e6:.0f} MB in all, in the page "
                     "cache (just written)")
    checked = reports * combos * days
    m = _run(ctx, folder, out, now, 0, ctx.repeats(3), expect_computed=0, fresh=False)
    row = _row(ctx, "d", f"no-op: {reports} reports × {combos} combos × {days} days complete", 0, m,
               note=f"{checked:,} intervals checked, 0 computed", intervals=checked)
    row.serial = True  # nothing runs: every second is the runner's
    ctx.target("d", "no-op run: nothing executes", f"{m.data['queries']} queries, "
               f"{m.data['computed']} computed", m.data["queries"] == 0 and m.data["computed"] == 0)
    ctx.target("d", "no-op run: wall < 2 s", f"{m.wall:.2f} s (CPU {m.cpu:.2f} s)", m.wall < 2.0)
    ctx.target("d", "no-op run: peak RSS < 200 MB", f"{m.rss_mb:.0f} MB", m.rss_mb < 200)


# ------------------------------------------------------------- (e) Hive

EVENTS_HQL = """SELECT to_date(dt) AS date, COUNT(*) AS events, COUNT(DISTINCT wiki) AS wikis
FROM bench.events
WHERE dt >= '{from_date}' AND dt < '{to_date}'
GROUP BY to_date(dt)
ORDER BY date
"""


def case_e(ctx: Context, default_jobs: bool = True) -> None:
    """A hive report on the Spark Thrift Server: unbatched against `batch: N`."""
    days, batch = (20, 10) if ctx.quick else (60, 30)
    starts = date(2026, 1, 1)
    server = ctx.spark()
    epoch = 1767225600  # 2026-01-01T00:00:00Z
    rows_total = days * 1000
    ctx.log(f"(e) building bench.events on Spark: {rows_total:,} rows over {days} days")
    started = time.monotonic()
    server.execute(
        "CREATE DATABASE IF NOT EXISTS bench",
        "DROP TABLE IF EXISTS bench.events",
        f"CREATE TABLE bench.events USING parquet AS SELECT id, "
        f"date_format(timestamp_seconds({epoch} + id * 86400 DIV 1000), 'yyyy-MM-dd HH:mm:ss') AS dt, "
        f"concat('wiki', id % 20) AS wiki FROM range({rows_total})")
    # Warm the JVM on this query shape, so neither variant pays for it.
    for day in range(5):
        first = starts + timedelta(days=day)
        server.execute(EVENTS_HQL.format(from_date=first.isoformat(),
                                         to_date=(first + timedelta(days=1)).isoformat()))
    total = server.execute("SELECT COUNT(*) FROM bench.events")[0][0]
    ctx.log(f"  {total:,} rows, built and warmed in {time.monotonic() - started:.1f} s")
    now = datetime.combine(starts + timedelta(days=days), datetime.min.time())
    measured: dict[tuple[str, int], Measurement] = {}
    variants = [("unbatched", None, 1), (f"batch: {batch}", batch, 1)]
    if default_jobs:
        variants += [("unbatched", None, 0), (f"batch: {batch}", batch, 0)]
    for name, size, jobs in variants:
        base = ctx.root / f"e-{'batch' if size else 'single'}"
        folder = base / "queries"
        if not folder.exists():
            folder.mkdir(parents=True)
            (folder / "config.yaml").write_text(f"""databases:
  spark:
    url: {server.url}
    configuration:
      spark.sql.shuffle.partitions: 2
reports:
  events:
    type: hive
    db: spark
    granularity: days
    starts: {starts.isoformat()}
""" + (f"    batch: {size}\n" if size else ""))
            (folder / "events.hql").write_text(EVENTS_HQL)
        # A batched run is two queries and a start-up, so one hiccup of the
        # (shared) machine shows; it is cheap to repeat. An unbatched run
        # averages over its 60 queries and takes half a minute: once.
        m = _run(ctx, folder, base / f"out-j{jobs}", now, jobs, ctx.repeats(3 if size else 1),
                 expect_computed=days)
        _row(ctx, "e", f"{days} days, Spark Thrift Server, {name}", jobs, m)
        measured[(name, jobs)] = m
    single, batched = measured[("unbatched", 1)], measured[(f"batch: {batch}", 1)]
    expected_queries = -(-days // batch)
    ctx.target("e", f"batch: {batch} issues {expected_queries} queries instead of {days}",
               f"{batched.data['queries']} vs {single.data['queries']}",
               batched.data["queries"] == expected_queries and single.data["queries"] == days)
    ratio = single.wall / batched.wall
    ctx.target("e", "--jobs 1: batch ≥ 10 × faster than unbatched",
               f"{single.wall:.2f} s / {batched.wall:.2f} s = {ratio:.1f}×", ratio >= 10)


# ------------------------------------------- (f) a wide per-wiki backfill

DAILY_SQL = """SELECT '{from_date}' AS date, SUM(edits) AS edits, SUM(editors) AS editors
FROM daily
WHERE wiki = '{wiki}' AND day >= '{from_date}' AND day < '{to_date}'
"""


def _wide_folder(base: Path, wikis: int, days: int, starts: date) -> tuple[Path, list[str]]:
    """A daily sql report exploded by `wikis` wikis over `days` days, on a
    sqlite table of one row per wiki and day (indexed by wiki, day)."""
    folder = base / "queries"
    folder.mkdir(parents=True)
    names = [f"wiki{i:04d}" for i in range(wikis)]
    (folder / "wikis.txt").write_text("\n".join(names) + "\n")
    labels = [(starts + timedelta(days=i)).isoformat() for i in range(days)]
    connection = sqlite3.connect(folder / "daily.db")
    connection.execute("CREATE TABLE daily (wiki TEXT, day TEXT, edits INTEGER, editors INTEGER)")
    connection.executemany("INSERT INTO daily VALUES (?, ?, ?, ?)", (
        (name, label, (w * 7919 + d * 104729) % 10000, (w + d) % 97)
        for w, name in enumerate(names) for d, label in enumerate(labels)))
    connection.execute("CREATE INDEX daily_wiki_day ON daily (wiki, day)")
    connection.commit()
    connection.close()
    (folder / "config.yaml").write_text(f"""databases:
  wikis:
    url: sqlite:///daily.db
reports:
  daily:
    db: wikis
    granularity: days
    starts: {starts.isoformat()}
    explode_by:
      wiki: wikis.txt
""")
    (folder / "daily.sql").write_text(DAILY_SQL)
    return folder, names


def _tsv_bytes(out: Path) -> int:
    return sum(path.stat().st_size for path in out.rglob("*.tsv"))


@dataclass
class WideRow:
    """One line of case f's own table (bytes written and the floor need columns of their own)."""
    shape: str
    what: str
    jobs: str
    intervals: int
    m: Measurement
    tsv_bytes: int | None = None


def wide_table(rows: list[WideRow]) -> str:
    lines = [("| Shape | What | Jobs | Intervals | Wall s | in run() s | CPU s | Peak RSS MB "
              "| write_bytes MB | wchar MB | final TSVs MB | written / TSVs |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        io = row.m.data.get("io", {})
        written, wchar = io.get("write_bytes"), io.get("wchar")
        ratio = (f"{written / row.tsv_bytes:.1f}×" if written is not None and row.tsv_bytes
                 else "–")
        lines.append(
            f"| {row.shape} | {row.what} | {row.jobs} | {row.intervals:,} | {row.m.wall:.2f} "
            f"| {row.m.data.get('run_seconds', 0):.2f} | {row.m.cpu:.2f} | {row.m.rss_mb:.0f} "
            f"| {'–' if written is None else f'{written / 1e6:.1f}'} "
            f"| {'–' if wchar is None else f'{wchar / 1e6:.1f}'} "
            f"| {'–' if row.tsv_bytes is None else f'{row.tsv_bytes / 1e6:.2f}'} | {ratio} |")
    return "\n".join(lines)


def case_f(ctx: Context) -> None:
    """A wide per-wiki daily backfill on sqlite from an empty output folder:
    W wikis x D days, the same number of intervals in fewer, longer files,
    the plain-loop floor over the same queries, then a no-op run and status."""
    if ctx.full:
        shapes = [(900, 1826)]
    elif ctx.quick:
        shapes = [(60, 365), (6, 3650)]
    else:
        shapes = [(300, 365), (30, 3650)]
    jobs_variants = (1, 0)
    for wikis, days in shapes:
        shape = f"{wikis} wikis × {days} days"
        starts = date(2026, 1, 1) - timedelta(days=days)
        now = datetime.combine(starts + timedelta(days=days), datetime.min.time())
        base = ctx.root / f"f-{wikis}x{days}"
        ctx.log(f"(f) {shape} = {wikis * days:,} intervals: building the sqlite table")
        folder, names = _wide_folder(base, wikis, days, starts)
        intervals = wikis * days
        floor_spec = {"database": str(folder / "daily.db"), "sql": DAILY_SQL, "wikis": names,
                      "starts": starts.isoformat(), "days": days, "report": "daily"}
        items = [Item("floor", {**floor_spec, "driver": driver,
                                "output_folder": str(base / f"out-floor-{driver}")},
                      base / f"work-floor-{driver}", wipe(base / f"out-floor-{driver}"))
                 for driver in ("sqlalchemy", "sqlite3")]
        items += [_item(folder, base / f"out-j{jobs}", now, jobs) for jobs in jobs_variants]
        measured = measure_set(items, ctx.repeats(1))
        floors = dict(zip(("sqlalchemy", "sqlite3"), measured[:2], strict=True))
        for driver, m in floors.items():
            if m.data["queries"] != intervals:
                raise RuntimeError(f"floor {driver}: {m.data['queries']} queries, expected {intervals}")
            ctx.wide_rows.append(WideRow(shape, f"floor: plain {driver} loop", "1", intervals, m,
                                         _tsv_bytes(base / f"out-floor-{driver}")))
        runs = {}
        for jobs, m in zip(jobs_variants, measured[2:], strict=True):
            _check(folder, m, intervals)
            runs[jobs] = m
            out = base / f"out-j{jobs}"
            ctx.wide_rows.append(WideRow(shape, "runner, from empty", _jobs_label(m, jobs),
                                         intervals, m, _tsv_bytes(out)))
            ctx.log(f"  f {shape} jobs={_jobs_label(m, jobs)}: {m.wall:.2f} s, {m.rss_mb:.0f} MB, "
                    f"write_bytes {m.data['io'].get('write_bytes', 0) / 1e6:.1f} MB")
        # The no-op run and status over the files the default-jobs run left.
        out = base / "out-j0"
        noop, status = measure_set([_item(folder, out, now, 0, fresh=False),
                                    Item("status", _run_spec(folder, out, now, 0),
                                         base / "work-status")], ctx.repeats(3))
        _check(folder, noop, 0)
        if not status.data["ok"]:
            raise RuntimeError(f"status over {out}: not ok after a complete run")
        ctx.wide_rows.append(WideRow(shape, "no-op run afterwards", _jobs_label(noop, 0), 0, noop))
        ctx.wide_rows.append(WideRow(shape, "status afterwards", "–", 0, status))
        floor = floors["sqlalchemy"].wall
        for jobs, m in runs.items():
            tsvs = _tsv_bytes(base / f"out-j{jobs}")
            written = m.data["io"].get("write_bytes", 0)
            label = f"{shape}, --jobs {_jobs_label(m, jobs)}"
            ctx.target("f", f"{label}: wall ≤ 5 × plain SQLAlchemy loop",
                       f"{m.wall:.2f} s / {floor:.2f} s = {m.wall / floor:.1f}×", m.wall <= 5 * floor)
            ctx.target("f", f"{label}: bytes written ≤ 4 × final TSVs",
                       f"{written / 1e6:.1f} MB / {tsvs / 1e6:.2f} MB = {written / tsvs:.1f}×",
                       written <= 4 * tsvs)
            limit = 1000 if ctx.full else 400
            ctx.target("f", f"{label}: peak RSS < {limit} MB", f"{m.rss_mb:.0f} MB", m.rss_mb < limit)
        ctx.target("f", f"{shape}: default --jobs not slower than --jobs 1",
                   f"{runs[0].wall:.2f} s vs {runs[1].wall:.2f} s", runs[0].wall <= runs[1].wall * 1.05)
        ctx.target("f", f"{shape}: no-op run afterwards < 2 s", f"{noop.wall:.2f} s", noop.wall < 2)
        ctx.target("f", f"{shape}: status afterwards < 2 s", f"{status.wall:.2f} s", status.wall < 2)
        ctx.wide_walls[(wikis, days)] = runs[0].wall
    if (300, 365) in ctx.wide_walls and (30, 3650) in ctx.wide_walls:
        wide, long = ctx.wide_walls[(300, 365)], ctx.wide_walls[(30, 3650)]
        ctx.target("f", "30 × 3650 within 1.5 × the 300 × 365 time (default jobs)",
                   f"{long:.2f} s / {wide:.2f} s = {long / wide:.2f}×", long <= 1.5 * wide)


CASES = {"a": case_a, "b": case_b, "c": case_c, "d": case_d, "e": case_e, "f": case_f}
NEEDS = {"b": servers.mariadb_missing, "e": servers.spark_missing}
