# Stage 5 of 5: publishing to Graphite (config -> plan -> execute -> store
# -> publish).
#
# Graphite behind the publishers' interface: the points, their queue
# (OUTPUT/.graphite-queue/, plaintext lines) and the sender stay in
# reportupdater/publish.py exactly as they were; this adapter takes stored
# intervals like the other publishers, so that the runner drives every
# destination through one list. May touch: what publish.py touches.

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import publish
from ..config import GraphiteConfig, ReportConfig
from . import FlushResult, PublishError, StoredInterval

NAME = "graphite"


class GraphitePublisher:
    name = NAME

    def __init__(self, graphite: GraphiteConfig, reports: Mapping[str, ReportConfig],
                 output_folder: Path, query_folder: Path):
        self.graphite = publish.Publisher(graphite, output_folder, query_folder)
        self.queue = self.graphite.queue
        # Only reports with a graphite section send anything.
        self.targets = {key: report for key, report in reports.items() if report.graphite is not None}

    def enqueue(self, stored: Sequence[StoredInterval]) -> int:
        """One queue file for the whole call, as before this adapter (a file
        per interval would cost a disk block each)."""
        points: list[publish.Point] = []
        try:
            for each in stored:
                report = self.targets.get(each.report)
                if report is None or not each.rows:
                    continue
                points += publish.points_for_rows(report, each.explode, each.header, each.rows,
                                                  self.graphite.lookups(), self.graphite.graphite.prefix)
        except publish.PublishError as exc:
            raise PublishError(str(exc)) from None
        self.queue.add(points)
        return len(points)

    def flush(self) -> FlushResult:
        delivered_before = self.queue.size()
        if self.graphite.flush():
            return FlushResult(delivered=delivered_before)
        # An outage: the points wait for the next run (publish.py logged it).
        waiting = self.queue.size()
        return FlushResult(delivered=delivered_before - waiting, waiting=waiting,
                           error=f"Graphite at {self.graphite.sender.address} unreachable")

    def close(self) -> None:
        pass  # graphyte opens a connection per send

