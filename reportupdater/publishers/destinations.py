# Stage 5 of 5: publishing (config -> plan -> execute -> store -> publish).
#
# Which destinations a run publishes to, built from the folder's config
# (Graphite, SQL tables, a Prometheus-compatible store), and the stored
# intervals of one output file as every publisher takes them. The runner
# calls these; the publishers do the rest. May touch: what the publishers
# touch (their queue folders and stores), and reads the TSV store for a
# backfill.

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .. import intervals, store
from ..config import FolderConfig, ReportConfig
from . import Publisher, PublishError, StoredInterval

log = logging.getLogger(__name__)

NAMES = ("graphite", "tables", "prometheus")


@dataclass
class Built:
    publishers: list[Publisher] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one line each: a destination that cannot start


def build(folder: FolderConfig, output_folder: Path, only: Iterable[str] = NAMES) -> Built:
    """The folder's destinations among `only` (those its config sets up)."""
    wanted = set(only)
    built = Built()
    if "graphite" in wanted and folder.graphite is not None:
        from .graphite import GraphitePublisher
        built.publishers.append(GraphitePublisher(folder.graphite, folder.reports, output_folder,
                                                  folder.query_folder))
    if "tables" in wanted and folder.tables is not None:
        from .tables import TablesPublisher, TableTarget
        table_targets = {key: TableTarget(report.table_name) for key, report in folder.reports.items()
                   if report.table_name is not None}
        built.publishers.append(TablesPublisher(folder.tables, table_targets, output_folder,
                                                folder.query_folder))
    if "prometheus" in wanted and folder.prometheus is not None:
        from .prometheus import PrometheusPublisher
        targets = {key: report.prometheus for key, report in folder.reports.items()
                   if report.prometheus is not None}
        try:
            built.publishers.append(PrometheusPublisher(folder.prometheus, targets, output_folder,
                                                        folder.query_folder))
        except PublishError as exc:  # a password variable not set: nothing can be sent
            built.errors.append(f"{folder.config_path}: {exc}")
    return built


def publishes(publisher: Publisher, report_key: str) -> bool:
    return report_key in getattr(publisher, "targets", {})


def interval_of(label: str, report: ReportConfig) -> intervals.Interval:
    """The interval a stored date names (its start is all a publisher uses)."""
    start = intervals.label_start(label, report)
    return intervals.Interval(start, start, report.granularity is intervals.Granularity.HOURS)


def stored_intervals(report: ReportConfig, explode: tuple[tuple[str, str], ...],
                     output: store.OutputFile, labels: Iterable[str],
                     replaced: Iterable[str] = ()) -> list[StoredInterval]:
    """The intervals `labels` name as the file holds them now; a date the
    file no longer holds is an interval without rows (a table deletes its rows)."""
    header, replaced = tuple(output.header), set(replaced)
    if not header:
        return []  # a file that never held a row: nothing to publish or replace
    return [StoredInterval(report.key, tuple(explode), header,
                           tuple(tuple(row) for row in output.by_date.get(label, ())),
                           interval_of(label, report), label in replaced)
            for label in sorted(labels)]


UNITS = {"graphite": "points", "tables": "rows", "prometheus": "samples"}


def queue_sizes(folder: FolderConfig, output_folder: Path) -> dict[str, int]:
    """destination -> items waiting in its queue, for each destination the
    config sets up (for `status`; reads the queues, connects to nothing)."""
    from .. import publish
    from .queue import DurableQueue
    sizes: dict[str, int] = {}
    if folder.graphite is not None:
        sizes["graphite"] = publish.Queue(output_folder, folder.query_folder).size()
    for name in ("tables", "prometheus"):
        if getattr(folder, name) is not None:
            sizes[name] = DurableQueue(name, output_folder, folder.query_folder).size()
    return sizes


@dataclass
class BackfillSummary:
    queued: dict[str, int] = field(default_factory=dict)      # destination -> items queued
    delivered: dict[str, bool] = field(default_factory=dict)  # destination -> its queue all went
    problems: list[str] = field(default_factory=list)         # one line each


def backfill(folder: FolderConfig, output_folder: Path, to: Iterable[str] = NAMES,
             only_reports: Iterable[str] = (), since: str | None = None) -> BackfillSummary:
    """Publish again what the TSVs hold (a new store, a changed table or
    metric, rows a --no-publish run left out): every stored interval of the
    reports each destination publishes (from `since` on), queued, then the
    queues delivered. Graphite keeps its own backfill (publish.backfill)."""
    from .. import publish
    wanted, only = list(to), list(only_reports)
    summary = BackfillSummary()
    if "graphite" in wanted and folder.graphite is not None:
        graphite = publish.backfill(folder, output_folder, only, since)
        summary.queued["graphite"] = graphite.queued
        summary.delivered["graphite"] = graphite.sent
        summary.problems += graphite.problems
    built = build(folder, output_folder, [name for name in wanted if name != "graphite"])
    summary.problems += built.errors
    for publisher in built.publishers:
        queued = 0
        for report in folder.reports.values():
            if (only and report.key not in only) or not publishes(publisher, report.key):
                continue
            for explode in report.combinations():
                try:
                    path = store.output_path(output_folder, report.key, explode)
                    if not path.exists():
                        continue
                    output = store.OutputFile.load(path, root=output_folder)
                    labels = [label for label in output.dates if since is None or label >= since]
                    queued += publisher.enqueue(stored_intervals(report, explode, output, labels))
                except (store.StoreError, PublishError) as exc:
                    summary.problems.append(f"{report.key}: {publisher.name}: {exc}")
        result = publisher.flush()
        publisher.close()
        summary.queued[publisher.name] = queued
        summary.delivered[publisher.name] = result.ok
        if result.refused and result.error:
            summary.problems.append(f"{publisher.name}: {result.error}")
    return summary
