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
# May touch: the queue folders and, through each publisher, its store.
# Graphite (reportupdater/publish.py) moves behind this interface in phase B.

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from collections.abc import Sequence

from .. import atomic

if TYPE_CHECKING:
    from ..intervals import Interval

log = logging.getLogger(__name__)

_BATCH_NUMBERS = itertools.count()  # queue files of one process, in order
QUEUE_FORMAT = 1


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


class Publisher(Protocol):
    """What the runner calls, per destination (see the header)."""

    name: str                   # "tables", "prometheus" (and "graphite" in phase B)
    queue: DurableQueue

    def enqueue(self, stored: Sequence[StoredInterval]) -> int:
        """Build this store's items for the intervals of reports it publishes
        (others are ignored) and queue them durably; returns the items queued.
        Raises PublishError (nothing queued) or OSError (the queue cannot be
        written: the caller must not save the TSV)."""

    def flush(self) -> FlushResult:
        """Deliver the queue oldest first; never raises for an outage."""

    def close(self) -> None:
        """Release connections."""


class DurableQueue:
    """Batches waiting for one destination: one JSON file per batch, named by
    time, PID and a counter (never replacing another), oldest first.

    One queue per query folder (output folders are sometimes shared), so a
    run only ever sends its own folder's batches to its own store."""

    def __init__(self, name: str, output_folder: Path, query_folder: Path):
        owner = hashlib.sha1(str(query_folder.resolve()).encode()).hexdigest()[:12]
        self.name = name
        self.output_folder = output_folder
        self.folder = output_folder / f".{name}-queue" / f"{query_folder.resolve().name}-{owner}"
        self._warned: set[Path] = set()

    def add(self, items: Sequence[Any], meta: dict[str, Any] | None = None) -> Path | None:
        """Durably record a batch (JSON-serialisable items) before it is sent.
        Raises OSError."""
        if not items:
            return None
        name = (f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{os.getpid()}"
                f"-{next(_BATCH_NUMBERS):06d}.json")
        document = {"format": QUEUE_FORMAT, **(meta or {}), "items": list(items)}
        path = self.folder / name
        atomic.write(path, json.dumps(document, separators=(",", ":")).encode("utf-8"),
                     inside=self.output_folder)
        return path

    def files(self) -> list[Path]:
        try:
            names = atomic.regular_files(self.folder, self.output_folder)
        except OSError as exc:
            if self.folder not in self._warned:
                self._warned.add(self.folder)
                log.warning("%s: %s queue not read: %s", self.folder, self.name, exc.strerror)
            return []
        return [self.folder / name for name in names
                if name.endswith(".json") and not name.startswith(".")]

    def read(self, path: Path) -> dict[str, Any] | None:
        """A batch; None (after one warning) when it cannot be read or is damaged."""
        try:
            document = json.loads(atomic.read(path, inside=self.output_folder))
            if not isinstance(document, dict) or not isinstance(document.get("items"), list):
                raise ValueError("not a queued batch")
            if document.get("format") != QUEUE_FORMAT:
                raise ValueError(f"queue format {document.get('format')!r}, not {QUEUE_FORMAT}")
            return document
        except (OSError, ValueError) as exc:
            if path not in self._warned:
                self._warned.add(path)
                reason = getattr(exc, "strerror", None) or str(exc)
                log.warning("%s: queued %s batch not read (left in place): %s", path, self.name,
                            reason)
            return None

    def done(self, path: Path) -> None:
        """The store took the batch: forget it (sent again next run if this fails: harmless)."""
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("%s: delivered, but cannot be deleted: %s", path, exc.strerror)

    def size(self) -> int:
        """Items waiting (for `status`): a batch's "count" (rows, samples), else its items."""
        total = 0
        for path in self.files():
            document = self.read(path)
            if document:
                count = document.get("count")
                total += count if isinstance(count, int) else len(document["items"])
        return total

    def remove_stale_temp(self) -> None:
        atomic.remove_stale_temps(self.folder, inside=self.output_folder)
