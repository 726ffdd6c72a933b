# Stage 5 of 5: publishing (config -> plan -> execute -> store -> publish).
#
# The durable queue of one destination (see publishers/__init__.py): one
# JSON file per batch in OUTPUT/.<name>-queue/<query folder>-<hash>/.
# May touch: that folder only.

from __future__ import annotations

import itertools
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from .. import atomic

log = logging.getLogger(__name__)

_BATCH_NUMBERS = itertools.count()  # queue files of one process, in order
QUEUE_FORMAT = 1


class DurableQueue:
    """Batches waiting for one destination: one JSON file per batch, named by
    time, PID and a counter (never replacing another), oldest first.

    One queue per query folder (output folders are sometimes shared), so a
    run only ever sends its own folder's batches to its own store."""

    def __init__(self, name: str, output_folder: Path, query_folder: Path):
        import hashlib  # here, not at the top: loading OpenSSL slows every run's start
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
