# Stage 5 of 5: publishing (config -> plan -> execute -> store -> publish).
#
# Turns rows written to the TSV store into Graphite points (path from the
# report's `graphite.path`, value from the row, timestamp = interval start in
# UTC epoch seconds), keeps them in a durable queue beside the outputs
# (OUTPUT/.graphite-queue/, files written by atomic.write), and sends the
# queue with graphyte over the
# plaintext protocol. A point leaves the queue only once Graphite took it, so
# an outage or a crash never loses one; a point sent twice is harmless
# (Graphite overwrites the same path and timestamp). May touch: the queue
# folder, the lookups files, the Graphite server, and (for backfills) reads
# the TSV store.

from __future__ import annotations

import itertools
import logging
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, UTC
from pathlib import Path
from collections.abc import Iterable, Sequence

import yaml

from . import atomic, intervals, store, templates
from .config import ConfigError, FolderConfig, GraphiteConfig, ReportConfig, TextLoader, find_report

log = logging.getLogger(__name__)

QUEUE_FOLDER = ".graphite-queue"
BATCH_LINES = 5000  # points per TCP message
SEND_TIMEOUT_SECONDS = 10.0
_BAD_PATH = re.compile(r"[\s'\"\\]|\.\.|^\.|\.$")
# A queued line as Point.line() writes it; other lines of a queue file are dropped.
_QUEUED_LINE = re.compile(r"[^\s'\"\\]+ [^\s]+ -?\d+")
_BATCH_NUMBERS = itertools.count()  # queue files of one process, in order


class PublishError(Exception):
    """A report's Graphite step cannot build its points; one line."""


@dataclass(frozen=True)
class Point:
    path: str
    value: str       # the TSV text, sent as it stands
    timestamp: int   # UTC epoch seconds of the interval start

    def line(self) -> str:
        return f"{self.path} {self.value} {self.timestamp}"


def load_lookups(graphite: GraphiteConfig) -> dict[str, dict[str, str]]:
    """placeholder -> {raw value: friendly name}. Raises PublishError naming the file."""
    lookups: dict[str, dict[str, str]] = {}
    for placeholder, path in graphite.lookups.items():
        try:
            # Text as written: YAML 1.1 would make the raw value `no` False, `07` 7.
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=TextLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise PublishError(f"{where}: graphite lookups for {placeholder!r}: invalid YAML: "
                               f"{problem}") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise PublishError(f"{path}: graphite lookups for {placeholder!r}: cannot read: "
                               f"{reason}") from None
        if not isinstance(data, dict):
            raise PublishError(f"graphite lookups for {placeholder!r}: {path} is not a mapping")
        lookups[placeholder] = {str(key): str(value) for key, value in data.items()}
    return lookups





def points_for_rows(report: ReportConfig, explode: Sequence[tuple[str, str]], header: Sequence[str],
                    rows: Iterable[Sequence[str]], lookups: dict[str, dict[str, str]],
                    prefix: str = "") -> list[Point]:
    """The points of `rows` for every `metric: column` of the report's graphite section.

    Empty values are skipped. Raises PublishError, naming report, row and
    metric, for a value that is not a number or a path that is not valid.
    """
    graphite = report.graphite
    if graphite is None:
        return []
    columns = {name: index for index, name in enumerate(header)}
    for metric, column in graphite.metrics.items():
        if column not in columns:
            raise PublishError(f"report '{report.key}': graphite metric {metric!r}: column "
                               f"{column!r} is not in the output (columns: {', '.join(header)})")
    base = {name: lookups.get(name, {}).get(value, value) for name, value in explode}
    points: list[Point] = []
    for row in rows:
        values = dict(base)
        values.update(zip(header, row, strict=False))  # a column wins over an explode placeholder
        timestamp = int(intervals.label_start(row[0], report).timestamp())  # interval start
        for metric, column in graphite.metrics.items():
            value = row[columns[column]]
            if value == "":
                continue
            where = f"report '{report.key}' row {row[0]} metric {metric!r}"
            try:
                number = float(value)
            except ValueError:
                raise PublishError(f"{where}: value {value!r} of column {column!r} "
                                   "is not a number") from None
            if not math.isfinite(number):
                raise PublishError(f"{where}: value {value!r} is not a finite number")
            try:
                path = templates.render(graphite.path, {**values, "_metric": metric})
            except templates.TemplateError as exc:
                raise PublishError(f"{where}: graphite path {graphite.path!r}: {exc}") from None
            if prefix:
                path = f"{prefix.rstrip('.')}.{path}"
            if not path or _BAD_PATH.search(path):
                raise PublishError(f"{where}: metric path {path!r} is not valid (spaces, quotes, "
                                   "backslashes or empty components)")
            points.append(Point(path, value.strip(), timestamp))
    return points


class Queue:
    """Points waiting for Graphite: one file per batch, written atomically.

    One queue per query folder (output folders are sometimes shared), so a
    run only ever sends its own folder's points to its own Graphite.
    """

    def __init__(self, output_folder: Path, query_folder: Path):
        import hashlib  # here, not at the top: loading OpenSSL slows every run's start
        owner = hashlib.sha1(str(query_folder.resolve()).encode()).hexdigest()[:12]
        self.output_folder = output_folder
        self.folder = output_folder / QUEUE_FOLDER / f"{query_folder.resolve().name}-{owner}"
        self._warned: set[Path] = set()  # damaged files: one warning each per run, not per flush

    def add(self, points: Sequence[Point]) -> None:
        """Durably record points (atomic.write: nothing half-written, no link
        followed) before they are sent. Raises OSError."""
        if not points:
            return
        name = (f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{os.getpid()}"
                f"-{next(_BATCH_NUMBERS):06d}.txt")
        data = "".join(point.line() + "\n" for point in points).encode("utf-8")
        # The name is new (time, PID, number): no batch ever replaces another.
        atomic.write(self.folder / name, data, inside=self.output_folder)

    def files(self) -> list[Path]:
        """The queued batches, oldest first (links and other non-files included,
        so that reading them says what they are)."""
        try:
            with atomic.open_folder(self.folder, self.output_folder, target=self.folder) as descriptor:
                names = os.listdir(descriptor)
        except FileNotFoundError:
            return []
        except OSError as exc:
            if self.folder not in self._warned:
                self._warned.add(self.folder)
                log.warning("%s: Graphite queue not read: %s", self.folder, exc.strerror)
            return []
        return [self.folder / name for name in sorted(names)
                if name.endswith(".txt") and not name.startswith(".")]

    def read(self, path: Path, warn: bool = True) -> list[str] | None:
        """A batch's point lines; None (after a warning) when it cannot be read.
        Lines that are not points (a damaged file) are dropped with a warning:
        they could not be sent anyway."""
        warn = warn and path not in self._warned
        try:
            data = atomic.read(path, inside=self.output_folder)
        except OSError as exc:
            if warn:
                self._warned.add(path)
                log.warning("%s: queued Graphite points not read: %s", path, exc.strerror)
            return None
        lines = data.decode("utf-8", errors="replace").splitlines()
        points = [line for line in lines if _QUEUED_LINE.fullmatch(line)]
        dropped = sum(1 for line in lines if line.strip()) - len(points)
        if dropped and warn:
            self._warned.add(path)
            log.warning("%s: %d damaged lines of the Graphite queue dropped (not 'PATH VALUE "
                        "TIMESTAMP')", path, dropped)
        return points

    def size(self) -> int:
        return sum(len(self.read(path, warn=False) or ()) for path in self.files())

    def remove_stale_temp(self) -> None:
        atomic.remove_stale_temps(self.folder, inside=self.output_folder)

    def flush(self, sender: Sender) -> tuple[int, str | None]:
        """Send queued points oldest first. Returns (points sent, error or None);
        a file is deleted only once all of it was sent."""
        sent = 0
        for path in self.files():
            lines = self.read(path)
            if lines is None:
                continue
            try:
                for start in range(0, len(lines), BATCH_LINES):
                    sender.send_lines(lines[start:start + BATCH_LINES])
            except OSError as exc:
                return sent, f"{sender.address}: {exc.strerror or exc}"
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # sent again next run: harmless
                log.warning("%s: sent, but cannot be deleted: %s", path, exc.strerror)
            sent += len(lines)
        return sent, None


class Sender:
    """Graphite's plaintext protocol through graphyte; raises OSError on failure."""

    def __init__(self, host: str, port: int, timeout: float = SEND_TIMEOUT_SECONDS):
        self.address = f"{host}:{port}"
        # interval=None: no background thread, we batch ourselves; and a
        # failed send must raise, not just be logged.
        import graphyte  # only runs that send need it (and its socket import)
        self._graphyte = graphyte.Sender(host, port=port, timeout=timeout, interval=None,
                                         raise_send_errors=True)

    def send_lines(self, lines: Sequence[str]) -> None:
        if lines:
            self._graphyte.send_socket(("\n".join(lines) + "\n").encode("utf-8"))


class Publisher:
    """What the runner uses: build points, queue them, send the queue."""

    def __init__(self, graphite: GraphiteConfig, output_folder: Path, query_folder: Path):
        self.graphite = graphite
        self.queue = Queue(output_folder, query_folder)
        self.sender = Sender(graphite.host, graphite.port)
        self._lookups: dict[str, dict[str, str]] | None = None
        self._lookup_error: PublishError | None = None

    def lookups(self) -> dict[str, dict[str, str]]:
        if self._lookups is None and self._lookup_error is None:
            try:
                self._lookups = load_lookups(self.graphite)
            except PublishError as exc:
                self._lookup_error = exc
        if self._lookup_error is not None:
            raise self._lookup_error
        return self._lookups or {}

    def enqueue(self, report: ReportConfig, explode: Sequence[tuple[str, str]],
                header: Sequence[str], rows: Iterable[Sequence[str]]) -> int:
        points = points_for_rows(report, explode, header, rows, self.lookups(), self.graphite.prefix)
        self.queue.add(points)
        return len(points)

    def flush(self) -> bool:
        """Send the queue; False (after a warning) when Graphite could not take it."""
        sent, error = self.queue.flush(self.sender)
        if error:
            log.warning("Graphite unreachable (%s): %d points sent, %d kept in %s for the next run",
                        error, sent, self.queue.size(), self.queue.folder)
            return False
        if sent:
            log.info("sent %d points to Graphite at %s", sent, self.sender.address)
        return True


def backfill_points(report: ReportConfig, output_folder: Path, lookups: dict[str, dict[str, str]],
                    prefix: str, since: str | None) -> tuple[list[Point], list[str]]:
    """Points of every row the report's TSVs hold (from `since` on), and the
    problems met (unreadable files, bad values), one line each."""
    points: list[Point] = []
    problems: list[str] = []
    for explode in report.combinations():
        try:
            path = store.output_path(output_folder, report.key, explode)
            if not path.exists():
                continue
            output = store.OutputFile.load(path)
            rows = [row for row in output.rows if since is None or row[0] >= since]
            points += points_for_rows(report, explode, output.header, rows, lookups, prefix)
        except (store.StoreError, PublishError) as exc:
            problems.append(str(exc))
    return points, problems


@dataclass
class BackfillSummary:
    queued: int = 0
    sent: bool = False
    problems: list[str] = field(default_factory=list)


def backfill(folder: FolderConfig, output_folder: Path, only_reports: Sequence[str] = (),
             since: str | None = None) -> BackfillSummary:
    """Re-send what the TSVs hold (for a new Graphite server or a changed
    metric path): queue every point, then send the queue."""
    if folder.graphite is None:
        raise ConfigError(f"{folder.config_path}: no top-level 'graphite' section")
    for key in only_reports:
        find_report(folder, key)  # a broken report raises its own error
    publisher = Publisher(folder.graphite, output_folder, folder.query_folder)
    summary = BackfillSummary()
    try:
        lookups = publisher.lookups()
    except PublishError as exc:
        summary.problems.append(str(exc))
        return summary
    for report in folder.reports.values():
        if report.graphite is None or (only_reports and report.key not in only_reports):
            continue
        points, problems = backfill_points(report, output_folder, lookups,
                                           folder.graphite.prefix, since)
        publisher.queue.add(points)
        summary.queued += len(points)
        summary.problems += problems
    summary.sent = publisher.flush()
    return summary
