# Stage 5 of 5: publishing (config -> plan -> execute -> store -> publish).
#
# What every publisher shares: the unit it is given (one stored interval of
# one output file: report, explode combination, header, that interval's
# rows), the interface the runner calls (enqueue before the TSV is saved,
# flush after, close at the end) and a durable queue per destination beside
# the outputs (OUTPUT/.<name>-queue/<query folder>-<hash>/, one JSON file per
# enqueue call, written with atomic.write). A queued batch leaves the queue
# only once its store took it, so an outage or a crash never loses one, and
# batches are delivered oldest first, so a later replace wins. A publisher
# is a module of this package (tables.py, prometheus.py), like an engine.
# This package's own module holds only the shared types (config imports the
# publishers' key declarations, tables_keys.py and prometheus_keys.py, and
# must reach no writer); the queue is queue.py.
# May touch: the queue folders and, through each publisher, its store.
# Graphite (reportupdater/publish.py) keeps its own queue of plaintext lines;
# publishers/graphite.py puts it behind this interface for the runner.
# config.py imports this package's declarations: nothing heavy at the top.

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol
from collections.abc import Sequence


if TYPE_CHECKING:
    from pathlib import Path

    from ..intervals import Interval



class PublishError(Exception):
    """Rows a publisher cannot turn into what its store takes (a bad name, a
    type conflict); one line naming report and key. The batch is not
    delivered; the run reports the failure."""


class DeliveryError(Exception):
    """The store refused a batch for good (a type conflict, a 4xx): it stays
    queued, the run fails loudly, an operator has to act."""


@dataclass(frozen=True)
class StoredInterval:
    """One interval of one output file as the store holds it after a merge.

    rows: every row of the interval (first cell its label), possibly none
    (the interval now has no rows: a table deletes what it held)."""

    report: str                             # the report's key
    explode: tuple[tuple[str, str], ...]    # (placeholder, value), sorted by placeholder
    header: tuple[str, ...]                 # the file's header; header[0] is the date column
    rows: tuple[tuple[str, ...], ...]
    interval: Interval
    # The interval held other rows before this run's merge (a rerun, a
    # lookback change): the store may keep the old values (Prometheus).
    replaces: bool = False

    @property
    def start_utc(self) -> datetime:
        return self.interval.start.astimezone(UTC)


@dataclass
class FlushResult:
    delivered: int = 0          # items (rows, samples) the store took
    waiting: int = 0            # items left in the queue
    error: str | None = None    # why something is left (one line), None when all went
    # The store refused a batch for good (a type conflict, a 4xx): the run
    # must fail loudly; False with an error: an outage, the next run retries.
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class WaitingItems(Protocol):
    """What the runner needs of a destination's queue (Graphite keeps its
    own plaintext queue; the others a publishers.queue.DurableQueue)."""

    folder: Path

    def size(self) -> int: ...

    def remove_stale_temp(self) -> None: ...


class Publisher(Protocol):
    """What the runner calls, per destination (see the header)."""

    name: str                   # "graphite", "tables", "prometheus"

    @property
    def queue(self) -> WaitingItems: ...

    def enqueue(self, stored: Sequence[StoredInterval]) -> int:
        """Build this store's items for the intervals of reports it publishes
        (others are ignored) and queue them durably; returns the items queued.
        Raises PublishError (nothing queued) or OSError (the queue cannot be
        written: the caller must not save the TSV)."""

    def flush(self) -> FlushResult:
        """Deliver the queue oldest first; never raises for an outage."""

    def close(self) -> None:
        """Release connections."""
