# Stage 4 of 5 (store): the journal of computed results, beside the outputs.
#
# A run appends every merged result to OUTPUT/.reportupdater-journal and,
# at each checkpoint, writes what it appended since the last one as ONE
# frame and fsyncs it once: a checkpoint costs what was computed since the
# last one, not the size or number of the output files. The output files
# are written once, at the end (and when a journal is replayed). A run that
# finds a journal replays it first (replay_into), then removes it.
#
# Frame: MAGIC (4 bytes, with a NUL no payload holds), payload length and
# CRC-32 of the payload (big-endian, 4 bytes each), payload. A frame is all
# or nothing: a torn or garbled last frame (a crash mid-checkpoint) is
# ignored, never read as data. A bad frame FOLLOWED by a good one is damage
# (not a crash): nothing of the journal is applied, it is moved aside and
# named. The payload is UTF-8 (surrogateescape) lines:
#   F <id> <json [report, path relative to OUTPUT, fill, keep_column_order, version]>
#     (version: the fingerprint that computed its rows, versions.py; a
#     record of four items, from before versions, is of unknown version)
#   H <id> <json header>
#   R <file id> <header id> <label> <row count>, then that many TSV rows
#   J <file id> <header id> <json [label, rows]>  (rows a TSV line cannot hold)
# Declarations (F, H) come once, in the frame of their first use.
#
# May touch: the output folder's journal file and, at replay, the output
# files it names (through store/atomic) and their reports' version records
# (versions.py), written after the files and before the journal goes, so
# that every replayed date is labelled with the version that computed it.
# The caller holds the folder lock.

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import atomic, store, versions
from .datatypes import Result
from .lock import FolderLock

log = logging.getLogger("reportupdater")

JOURNAL_NAME = ".reportupdater-journal"
DAMAGED_SUFFIX = ".damaged"
MAGIC = b"\x00RJ1"
_FRAME_HEAD = struct.Struct(">4sII")
_ENCODING, _ERRORS = "utf-8", "surrogateescape"
_NOT_IN_TSV = ("\n", "\r", "\x00")


class JournalError(Exception):
    """The journal cannot be written or read; names the path."""


def journal_path(output_folder: Path) -> Path:
    return output_folder / JOURNAL_NAME


def _require_lock(lock: FolderLock) -> Path:
    if not isinstance(lock, FolderLock) or not lock.held:
        raise JournalError("the journal is used only under the output folder's held lock")
    return lock.folder


class Journal:
    """The append side. open() -> append()* -> checkpoint() ... -> discard()."""

    def __init__(self, output_folder: Path):
        self.output_folder = output_folder
        self.path = journal_path(output_folder)
        self._descriptor: int | None = None
        self._committed = 0            # bytes of whole frames on disk
        self._pending: list[str] = []  # lines since the last checkpoint
        self._files: dict[tuple[str, str, str, bool, str | None], int] = {}
        self._headers: dict[tuple[str, ...], int] = {}
        self._relative: dict[Path, str] = {}  # output file -> its path in the journal
        self.records = 0               # appended since the last checkpoint
        self.bytes_written = 0         # frames written (for the benchmarks)

    @classmethod
    def open(cls, lock: FolderLock) -> Journal:
        """A new, empty journal of the locked output folder. Raises
        JournalError when one is there already (replay_into it first)."""
        folder = _require_lock(lock)
        journal = cls(folder)
        if journal.path.exists() or journal.path.is_symlink():
            raise JournalError(f"{journal.path}: a journal is there already; replay it first")
        return journal

    def append(self, report: str, path: Path, label: str, header: Sequence[str],
               rows: Sequence[Sequence[str]], *, fill: str = "", keep_column_order: bool = False,
               version: str | None = None) -> None:
        """Record one merged interval: the result as merged (after any pivot)
        for `label` of the output file at `path` (inside the output folder),
        with the merge options store.OutputFile.merge was given and the
        version that computed it. In memory until checkpoint()."""
        relative = self._relative.get(path)
        if relative is None:
            relative = self._relative[path] = path.relative_to(self.output_folder).as_posix()
        file_key = (report, relative, fill, keep_column_order, version)
        file_id = self._files.get(file_key)
        if file_id is None:
            file_id = self._files[file_key] = len(self._files)
            self._pending.append(f"F\t{file_id}\t{json.dumps(list(file_key))}\n")
        header_key = tuple(header)
        header_id = self._headers.get(header_key)
        if header_id is None:
            header_id = self._headers[header_key] = len(self._headers)
            self._pending.append(f"H\t{header_id}\t{json.dumps(list(header_key))}\n")
        width = len(header_key)
        block = "\n".join(map("\t".join, rows))
        if (all(len(row) == width for row in rows) and block.count("\t") == len(rows) * (width - 1)
                and not any(char in block for char in _NOT_IN_TSV)
                and not any(char in label for char in ("\t", *_NOT_IN_TSV))):
            self._pending.append(f"R\t{file_id}\t{header_id}\t{label}\t{len(rows)}\n")
            if rows:
                self._pending.append(block + "\n")
        else:
            self._pending.append(f"J\t{file_id}\t{header_id}\t"
                                 f"{json.dumps([label, [list(row) for row in rows]])}\n")
        self.records += 1

    def checkpoint(self) -> int:
        """Write what was appended since the last checkpoint as one frame and
        fsync it (once). Returns the bytes written. On failure the file is cut
        back to its last whole frame and the records stay pending (the next
        checkpoint tries again); raises JournalError."""
        if not self._pending:
            return 0
        payload = "".join(self._pending).encode(_ENCODING, _ERRORS)
        frame = _FRAME_HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload
        try:
            created = self._descriptor is None
            if self._descriptor is None:
                self._descriptor = atomic.open_append(self.path, inside=self.output_folder)
            descriptor = self._descriptor
            view = memoryview(frame)
            while view:
                view = view[os.write(descriptor, view):]
            os.fsync(descriptor)
            if created:
                atomic.fsync_folder(self.output_folder)
        except OSError as exc:
            if self._descriptor is not None:
                try:
                    os.ftruncate(self._descriptor, self._committed)
                    os.lseek(self._descriptor, self._committed, os.SEEK_SET)
                except OSError:
                    pass
            raise JournalError(f"{self.path}: cannot write the journal: "
                               f"{exc.strerror or exc}") from None
        self._committed += len(frame)
        self.bytes_written += len(frame)
        self._pending, self.records = [], 0
        return len(frame)

    def discard(self) -> None:
        """Remove the journal (its results are in the output files, written
        durably): what is pending is dropped too."""
        self.close()
        _remove(self.path, self.output_folder)
        self._pending, self.records = [], 0
        self._files.clear()
        self._headers.clear()
        self._committed = 0

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


def _remove(path: Path, output_folder: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise JournalError(f"{path}: cannot remove the journal: {exc.strerror}") from None
    atomic.fsync_folder(output_folder)


# ------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Record:
    report: str
    path: str          # relative to the output folder
    label: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    fill: str
    keep_column_order: bool
    version: str | None = None  # the fingerprint that computed it (None: unknown)


@dataclass
class JournalRead:
    records: list[Record] = field(default_factory=list)
    torn_bytes: int = 0        # an incomplete or garbled last frame, ignored
    damage: str | None = None  # a bad frame with a good one after it: apply nothing


def _frame_at(data: bytes, offset: int) -> bytes | None:
    """The payload of a whole, checksummed frame at `offset`, or None."""
    if len(data) - offset < _FRAME_HEAD.size:
        return None
    magic, length, crc = _FRAME_HEAD.unpack_from(data, offset)
    start = offset + _FRAME_HEAD.size
    if magic != MAGIC or len(data) - start < length:
        return None
    payload = data[start:start + length]
    return payload if zlib.crc32(payload) == crc else None


def _good_frame_after(data: bytes, offset: int) -> int | None:
    position = data.find(MAGIC, offset + 1)
    while position != -1:
        if _frame_at(data, position) is not None:
            return position
        position = data.find(MAGIC, position + 1)
    return None


def read_journal(data: bytes, name: str = JOURNAL_NAME) -> JournalRead:
    """Parse a journal's bytes into the records of its whole frames."""
    read = JournalRead()
    files: dict[str, tuple[str, str, str, bool, str | None]] = {}
    headers: dict[str, tuple[str, ...]] = {}
    offset = 0
    while offset < len(data):
        payload = _frame_at(data, offset)
        if payload is None:
            later = _good_frame_after(data, offset)
            if later is not None:
                read.damage = (f"{name}: bytes {offset}..{later} are not a whole journal frame, "
                               "and whole frames follow (damage, not a crash)")
            else:
                read.torn_bytes = len(data) - offset
            return read
        try:
            _parse_payload(payload.decode(_ENCODING, _ERRORS), files, headers, read.records)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            # A checksummed frame this code cannot read: written by something else.
            read.damage = f"{name}: the frame at byte {offset} cannot be read ({exc})"
            read.records.clear()
            return read
        offset += _FRAME_HEAD.size + len(payload)
    return read


def _parse_payload(text: str, files: dict, headers: dict, records: list[Record]) -> None:
    lines = text.split("\n")
    if lines[-1] != "":
        raise ValueError("the frame does not end with a line end")
    index, end = 0, len(lines) - 1
    while index < end:
        kind, rest = lines[index].split("\t", 1)
        index += 1
        if kind == "F":
            key, value = rest.split("\t", 1)
            declared = json.loads(value)
            report, path, fill, keep = declared[:4]
            version = declared[4] if len(declared) > 4 else None
            if len(declared) > 5 or not (version is None or isinstance(version, str)):
                raise ValueError("a file declaration is not [report, path, fill, keep_column_order, version]")
            files[key] = (str(report), str(path), str(fill), bool(keep), version)
        elif kind == "H":
            key, value = rest.split("\t", 1)
            headers[key] = tuple(str(name) for name in json.loads(value))
        elif kind == "R":
            file_id, header_id, label, count_text = rest.split("\t")
            count = int(count_text)
            if index + count > end:
                raise ValueError("a record has fewer rows than it says")
            rows = tuple(tuple(line.split("\t")) for line in lines[index:index + count])
            index += count
            records.append(_record(files[file_id], headers[header_id], label, rows))
        elif kind == "J":
            file_id, header_id, value = rest.split("\t", 2)
            label, rows = json.loads(value)
            records.append(_record(files[file_id], headers[header_id], str(label),
                                   tuple(tuple(str(cell) for cell in row) for row in rows)))
        else:
            raise ValueError(f"unknown record kind {kind!r}")


def _record(file: tuple[str, str, str, bool, str | None], header: tuple[str, ...], label: str,
            rows: tuple[tuple[str, ...], ...]) -> Record:
    if any(len(row) != len(header) for row in rows):
        raise ValueError(f"a row of {file[1]} {label} does not have the {len(header)} fields of its header")
    report, path, fill, keep, version = file
    return Record(report, path, label, header, rows, fill, keep, version)


# ------------------------------------------------------------------ replay


@dataclass
class ReplayOutcome:
    found: bool = False             # there was a journal
    intervals: int = 0              # records merged into the output files
    files: int = 0                  # output files written
    torn_bytes: int = 0             # a torn last frame (a crash mid-checkpoint), ignored
    damaged: Path | None = None     # the journal, moved here: nothing of it was applied
    failed_files: list[str] = field(default_factory=list)  # one-line errors, files left as they were


def _record_versions(folder: Path, written: dict[str, list[tuple[Path, list[Record], set[str]]]],
                     path: Path) -> None:
    """Label the replayed dates with the versions their records carry, before
    the journal goes (a crash in between replays it again: the same labels).
    Raises JournalError when a record cannot be written (the journal stays)."""
    for report, files in written.items():
        record = versions.load(folder, report)
        for output_path, records, dates in files:
            latest = {each.label: each.version for each in records}  # the last record of a date wins
            by_version: dict[str | None, set[str]] = {}
            for label, version in latest.items():
                by_version.setdefault(version, set()).add(label)
            for version, labels in by_version.items():
                record.computed(output_path, labels, dates, version)
        try:
            record.save()
        except (OSError, ValueError) as exc:
            raise JournalError(f"{record.path}: cannot write the version record: "
                               f"{getattr(exc, 'strerror', None) or exc}; the journal {path} is "
                               "kept (the next run replays it)") from None


def replay_into(lock: FolderLock, group_of: Callable[[str], str | None] = lambda report: None
                ) -> ReplayOutcome:
    """Merge the journal's whole frames into the output files of the locked
    output folder, write each file once (atomic.write), then remove the
    journal. Idempotent: a crash during replay leaves the journal, and
    replaying it again gives the same files. A damaged journal is applied
    not at all: it is moved aside (…-journal.damaged) and named in the log;
    its intervals are missing from the outputs, so the run computes them.
    An output file that cannot be read or written is named in the log and
    left as it was (its intervals are computed again when it can be).
    group_of(report): the `group:` of a report's files (None: unchanged)."""
    folder = _require_lock(lock)
    path = journal_path(folder)
    outcome = ReplayOutcome()
    try:
        data = atomic.read(path)
    except FileNotFoundError:
        return outcome
    except OSError as exc:
        raise JournalError(f"{path}: cannot read the journal: {exc.strerror}") from None
    outcome.found = True
    read = read_journal(data, str(path))
    if read.damage is not None:
        aside = path.with_name(path.name + DAMAGED_SUFFIX)
        try:
            os.replace(path, aside)
            atomic.fsync_folder(folder)
        except OSError as exc:
            raise JournalError(f"{read.damage}; cannot move it aside: {exc.strerror}") from None
        log.error("%s; nothing of it was applied, it was moved to %s (its intervals are computed "
                  "again)", read.damage, aside)
        outcome.damaged = aside
        return outcome
    outcome.torn_bytes = read.torn_bytes
    if read.torn_bytes:
        log.info("%s: the last %d bytes are an unfinished checkpoint (a run stopped while writing "
                 "it); ignored", path, read.torn_bytes)
    by_file: dict[str, list[Record]] = {}
    for record in read.records:
        by_file.setdefault(record.path, []).append(record)
    written: dict[str, list[tuple[Path, list[Record], set[str]]]] = {}  # report -> files written
    for relative, records in by_file.items():
        output_path = folder / relative
        try:
            output = store.OutputFile.load(output_path, root=folder)
            for record in records:
                output.merge(Result(record.header, record.rows), {record.label}, record.fill,
                             keep_column_order=record.keep_column_order)
            output.save(group=group_of(records[0].report))
        except store.StoreError as exc:
            outcome.failed_files.append(f"{exc} (journal replay; its journaled intervals are "
                                        "computed again)")
            log.error("%s", outcome.failed_files[-1])
            continue
        written.setdefault(records[0].report, []).append((output_path, records, set(output.dates)))
        outcome.files += 1
        outcome.intervals += len(records)
    _record_versions(folder, written, path)
    _remove(path, folder)
    log.info("%s: replayed %d intervals into %d files", path, outcome.intervals, outcome.files)
    return outcome
