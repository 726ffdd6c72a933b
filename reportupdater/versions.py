# Stage 4 of 5 (store), read by planning's callers: which version of a
# report computed which stored rows.
#
# A version is a fingerprint of what decides a report's result: its type and
# `db`, the report keys config_keys declares `decides_result` (granularity,
# timezone, pivot, explode_by's placeholders, ...), and the text of its
# template, or for a script report the script's bytes and those of every
# code file beside or below it that the script (or such a file) names.
# Scheduling keys (batch, lookback, max_intervals_per_run, ...) are not in it.
#
# One record per report, OUTPUT/.reportupdater-versions/REPORT.json: per
# output file (its path relative to OUTPUT), inclusive label ranges
# [first, last, version]: every date the file holds between first and last
# was computed by that version; a date no range covers is of unknown version
# (written by the original tool, or before versions were recorded). Ranges
# are folded over the dates the file holds, so a 10-year daily file computed
# by one version is one range, whatever its gaps. Beside them, per version:
# when it was first and last used and, for the newest TEXTS_KEPT versions,
# the texts it was made of (for `changes`). The runner records a version
# before it computes with it, and the dates it computed after the file is
# written; journal replay records the version each journaled interval
# carries. Written by atomic.write; a record that cannot be read is ignored
# with one warning (its rows are of unknown version; nothing is recomputed
# because of it). May touch: that folder's files; reads the query folder's
# scripts and their helpers as config reads templates (links followed: the
# query folder is the analyst's).

from __future__ import annotations

import bisect
import contextlib
import difflib
import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from . import atomic, config_keys, report_types
from .config import FolderConfig, ReportConfig

log = logging.getLogger("reportupdater")

FOLDER_NAME = ".reportupdater-versions"
FORMAT = 1
TEXTS_KEPT = 5               # versions whose texts a record keeps (for `changes`)
TEXT_LIMIT = 256 * 1024      # characters of one file's text kept (a longer one is cut)
ID_LENGTH = 16               # hex digits of a fingerprint
HELPER_MAX_BYTES = 1024 * 1024  # a larger file beside a script is data, not one of its helpers
# A helper is code: executable, or named like code. A script's data, logs and
# state files (which it may rewrite every run) are not part of its version.
CODE_SUFFIXES = frozenset({".sql", ".hql", ".py", ".sh", ".bash", ".r", ".pl", ".rb", ".js", ".awk",
                           ".sed", ".jq", ".lua", ".php", ".tcl"})
KEYS_SOURCE = "(result keys)"  # the pseudo-file holding the keys in a version's texts


# ------------------------------------------------------------------ the fingerprint


@dataclass(frozen=True)
class Version:
    """What computes a report today: its fingerprint and the texts it is made of."""

    id: str
    sources: dict[str, str]  # file name (relative to the query folder) -> text


def _value(value: Any) -> Any:
    """A report key's value as JSON-able data."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): _value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_value(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):
        return {name: _value(getattr(value, name)) for name in value.__dataclass_fields__}
    return value


def result_values(report: ReportConfig) -> dict[str, Any]:
    """The values of the report keys that decide its result (config_keys.result_keys)."""
    values: dict[str, Any] = {}
    for name in config_keys.result_keys():
        if name == "explode_by":
            values[name] = sorted(report.explode_by)  # which files exist is its values' business
        elif name in report.options:
            values[name] = _value(report.options[name])
        else:
            values[name] = _value(getattr(report, name, None))
    return values


def _text(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"(binary file, {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:ID_LENGTH]})\n"
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + "\n(cut)\n"


def _names(text: str) -> set[str]:
    """Every word of `text` that may name a file, with each of its shorter
    forms after a '/' ("$DIR/lib/q.hql" gives "lib/q.hql" and "q.hql")."""
    names: set[str] = set()
    for word in re.findall(r"[\w./-]+", text):
        parts = word.split("/")
        names.update("/".join(parts[index:]) for index in range(len(parts)))
    return names


def _helpers(script: Path, data: bytes) -> list[Path]:
    """The code files (CODE_SUFFIXES, or executable) beside the script, or
    one folder below, that it (or such a file) names: a script running
    `helper.py` or reading `lib/query.hql` computes with them. Hidden files,
    config.yaml and files over HELPER_MAX_BYTES are never helpers."""
    base = script.parent
    candidates: dict[str, Path] = {}
    for root, folders, names in os.walk(base):
        depth = len(Path(root).relative_to(base).parts)
        folders[:] = [] if depth >= 1 else sorted(name for name in folders if not name.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if name.startswith(".") or name == "config.yaml" or path == script:
                continue
            try:
                info = path.stat()
            except OSError:
                continue
            code = path.suffix.lower() in CODE_SUFFIXES or info.st_mode & 0o111
            if stat.S_ISREG(info.st_mode) and info.st_size <= HELPER_MAX_BYTES and code:
                candidates[path.relative_to(base).as_posix()] = path
    found: list[Path] = []
    texts = [data[:HELPER_MAX_BYTES].decode("utf-8", "replace")]
    while texts and candidates:
        named = _names(texts.pop())
        for relative in [relative for relative in candidates if relative in named]:
            path = candidates.pop(relative)
            found.append(path)
            with contextlib.suppress(OSError):
                texts.append(path.read_bytes().decode("utf-8", "replace"))
    return sorted(found)


def fingerprint(report: ReportConfig, query_folder: Path) -> Version:
    """The version of `report` as its files and keys are now (reads the
    script and its helpers; a template is the text config already read)."""
    sources: dict[str, str] = {}
    digests: dict[str, str] = {}

    def add(name: str, data: bytes) -> None:
        digests[name] = hashlib.sha256(data).hexdigest()
        sources[name] = _text(data)

    suffix = None
    with contextlib.suppress(report_types.UnknownReportType):
        suffix = report_types.declaration(report.type).template_suffix
    if report.template is not None:
        add(report.execute + (suffix or ""), report.template.encode("utf-8"))
    elif report.script_path is not None:
        try:
            data = report.script_path.read_bytes()
        except OSError as exc:
            data = f"(cannot be read: {exc.strerror or exc})".encode()
        add(_relative(report.script_path, query_folder), data)
        for helper in _helpers(report.script_path, data):
            try:
                add(_relative(helper, query_folder), helper.read_bytes())
            except OSError as exc:
                add(_relative(helper, query_folder), f"(cannot be read: {exc.strerror or exc})".encode())
    keys = {"type": report.type, **result_values(report)}
    sources[KEYS_SOURCE] = "".join(f"{name}: {json.dumps(value, sort_keys=True)}\n"
                                   for name, value in keys.items())
    whole = json.dumps({"keys": keys, "files": digests}, sort_keys=True).encode("utf-8")
    return Version(hashlib.sha256(whole).hexdigest()[:ID_LENGTH], sources)


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


# ------------------------------------------------------------------ the record


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class VersionEntry:
    first_used: str
    last_used: str
    sources: dict[str, str] | None = None  # None: not kept (older than the newest TEXTS_KEPT)


Range = tuple[str, str, str]  # first label, last label (inclusive), version id


@dataclass(frozen=True)
class FileCount:
    """The dates one file holds, by version: today's, older ones, unknown."""

    current: int = 0
    older: int = 0
    unknown: int = 0
    older_ranges: tuple[tuple[str, str], ...] = ()  # (first, last) of the older versions' ranges

    def plus(self, other: FileCount) -> FileCount:
        return FileCount(self.current + other.current, self.older + other.older,
                         self.unknown + other.unknown, self.older_ranges + other.older_ranges)


@dataclass
class ReportRecord:
    """One report's record (see the module header)."""

    output_folder: Path
    report: str
    current: str | None = None         # the version the last computation used
    current_since: str | None = None   # when it became that
    versions: dict[str, VersionEntry] = field(default_factory=dict)
    files: dict[str, list[Range]] = field(default_factory=dict)  # relative path -> ranges, sorted

    @property
    def path(self) -> Path:
        return record_path(self.output_folder, self.report)

    def _key(self, output: Path) -> str:
        return _relative(Path(output), self.output_folder)

    def ranges(self, output: Path) -> list[Range]:
        return self.files.get(self._key(output), [])

    # -- reading

    def count(self, output: Path, dates: Set[str], current: str,
              ordered: Sequence[str] | None = None) -> FileCount:
        """How many of `dates` (what the file holds) each kind of version
        computed. `ordered`: the same dates sorted, when the caller has them."""
        ranges = self.ranges(output)
        if not dates:
            return FileCount()
        if not ranges:
            return FileCount(unknown=len(dates))
        stored = ordered if ordered is not None else sorted(dates)
        known = older = 0
        older_ranges: list[tuple[str, str]] = []
        for first, last, version in ranges:
            count = bisect.bisect_right(stored, last) - bisect.bisect_left(stored, first)
            known += count
            if version != current and count:
                older += count
                older_ranges.append((first, last))
        return FileCount(known - older, older, len(stored) - known, tuple(older_ranges))

    def older_labels(self, output: Path, labels: Sequence[str], dates: Set[str], current: str,
                     since: str | None = None) -> list[int]:
        """Indexes into `labels` (sorted: the due intervals' labels) of the dates
        the file holds that an older version computed (from `since` on)."""
        found: list[int] = []
        for first, last, version in self.ranges(output):
            if version == current:
                continue
            start = bisect.bisect_left(labels, max(first, since) if since else first)
            end = bisect.bisect_right(labels, last)
            found += [index for index in range(start, end) if labels[index] in dates]
        return sorted(found)

    # -- recording

    def use(self, version: Version, now: datetime) -> bool:
        """`version` computes now: note it (with its texts) and make it current.
        True when that must be written before computing (a version new to
        the record, or new as current); a later last_used alone waits for
        the write that labels the computed dates."""
        changed = False
        entry = self.versions.get(version.id)
        stamp = _iso(now)
        if entry is None:
            self.versions[version.id] = VersionEntry(stamp, stamp, dict(version.sources))
            changed = True
        else:
            if entry.sources is None:
                entry.sources = dict(version.sources)
                changed = True
            entry.last_used = stamp
        if self.current != version.id:
            self.current, self.current_since = version.id, stamp
            changed = True
        self._keep_texts()
        return changed

    def computed(self, output: Path, labels: Iterable[str], stored: Set[str], version: str | None,
                 ordered: Sequence[str] | None = None) -> None:
        """The file now holds `stored`; `labels` of them were just computed by
        `version` (None: by an unknown one, e.g. a journal of an older format).
        `ordered`: `stored` sorted, when the caller has it."""
        key = self._key(output)
        labels = set(labels)
        if not labels and key not in self.files:
            return
        if ordered is None:
            ordered = sorted(stored)
        # Segments [start, end) of indexes into `ordered`, each of one version.
        segments: list[tuple[int, int, str | None]] = []
        for first, last, old in self.files.get(key, []):
            start, end = bisect.bisect_left(ordered, first), bisect.bisect_right(ordered, last)
            if start < end:
                segments.append((start, end, old))
        fresh = sorted(bisect.bisect_left(ordered, label) for label in labels if label in stored)
        if fresh:
            segments = _overlay(segments, _runs(fresh, version))
        ranges: list[Range] = []
        previous_end = -1
        for start, end, mark in segments:
            if mark is None:
                previous_end = -1
                continue
            if ranges and ranges[-1][2] == mark and previous_end == start:
                ranges[-1] = (ranges[-1][0], ordered[end - 1], mark)
            else:
                ranges.append((ordered[start], ordered[end - 1], mark))
            previous_end = end
        if ranges:
            self.files[key] = ranges
        else:
            self.files.pop(key, None)
        if version is not None and version not in self.versions:
            stamp = _iso(datetime.now(UTC))
            self.versions[version] = VersionEntry(stamp, stamp)

    def _forget_unused(self) -> None:
        used = {version for ranges in self.files.values() for _, _, version in ranges}
        for version in list(self.versions):
            if version not in used and version != self.current:
                del self.versions[version]

    def _keep_texts(self) -> None:
        newest = sorted(self.versions, key=lambda version: self.versions[version].last_used,
                        reverse=True)
        for version in newest[TEXTS_KEPT:]:
            if version != self.current:
                self.versions[version].sources = None

    # -- the file

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "report": self.report, "current": self.current,
                "current_since": self.current_since,
                "versions": {version: {"first_used": entry.first_used, "last_used": entry.last_used,
                                       **({"sources": entry.sources} if entry.sources is not None else {})}
                             for version, entry in sorted(self.versions.items())},
                "files": {key: [list(item) for item in ranges] for key, ranges in sorted(self.files.items())}}

    def save(self) -> None:
        """Write the record atomically (raises OSError); versions no stored
        date refers to (and not current) are forgotten."""
        self._forget_unused()
        data = json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        # Callers hold the output folder's lock: what a killed writer left is stale.
        atomic.remove_stale_temps(self.path.parent, self.path.name, inside=self.output_folder)
        atomic.write(self.path, data, inside=self.output_folder)


def _runs(indexes: list[int], mark: str | None) -> list[tuple[int, int, str | None]]:
    """Sorted indexes folded into [start, end) segments of consecutive ones."""
    runs: list[tuple[int, int, str | None]] = []
    for index in indexes:
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1, mark)
        elif not runs or runs[-1][1] < index:
            runs.append((index, index + 1, mark))
    return runs


def _overlay(old: list[tuple[int, int, str | None]], new: list[tuple[int, int, str | None]]
             ) -> list[tuple[int, int, str | None]]:
    """The segments `old` with `new` laid over them (both sorted, each without
    overlaps): what `new` covers is `new`'s, the rest stays `old`'s."""
    starts = [start for start, _, _ in new]
    pieces = list(new)
    for start, end, mark in old:
        position = start
        index = max(bisect.bisect_right(starts, start) - 1, 0)
        while index < len(new) and new[index][0] < end:
            cut_start, cut_end, _ = new[index]
            if cut_end > position:
                if cut_start > position:
                    pieces.append((position, cut_start, mark))
                position = max(position, cut_end)
            index += 1
        if position < end:
            pieces.append((position, end, mark))
    return sorted(pieces)


def record_path(output_folder: Path, report: str) -> Path:
    return Path(output_folder) / FOLDER_NAME / f"{report}.json"


def load(output_folder: Path, report: str) -> ReportRecord:
    """The report's record, or an empty one (none yet, or one that cannot be
    read: a warning, and its rows count as of unknown version)."""
    record = ReportRecord(Path(output_folder), report)
    try:
        raw = json.loads(atomic.read(record.path, inside=Path(output_folder)).decode("utf-8"))
    except FileNotFoundError:
        return record
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("%s: version record ignored (%s): its rows count as of unknown version",
                    record.path, getattr(exc, "strerror", None) or exc)
        return record
    try:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"not a format-{FORMAT} record")
        versions = {str(version): VersionEntry(str(entry["first_used"]), str(entry["last_used"]),
                                               _sources(entry.get("sources")))
                    for version, entry in raw["versions"].items()}
        files = {str(key): [(str(first), str(last), str(version)) for first, last, version in ranges]
                 for key, ranges in raw["files"].items()}
        current = raw.get("current")
        since = raw.get("current_since")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("%s: version record ignored (%s): its rows count as of unknown version",
                    record.path, exc)
        return record
    record.versions, record.files = versions, files
    record.current = str(current) if current is not None else None
    record.current_since = str(since) if since is not None else None
    return record


def _sources(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("'sources' is not an object")
    return {str(name): str(text) for name, text in value.items()}


# ------------------------------------------------------------------ for planning


@dataclass(frozen=True)
class PlanVersions:
    """What planning needs of versions: the record as read, and today's version."""

    record: ReportRecord
    current: str


# ------------------------------------------------------------------ `changes`


@dataclass(frozen=True)
class VersionLine:
    id: str
    current: bool
    first_used: str | None
    last_used: str | None
    ranges: tuple[tuple[str, str, int], ...]  # (first, last, files with that range)


@dataclass(frozen=True)
class ReportChanges:
    report: str
    versions: tuple[VersionLine, ...]   # today's first, then the others, newest first
    diffs: tuple[str, ...]              # unified diffs, each older version's texts -> today's


def changes(folder: FolderConfig, output_folder: Path, only: Sequence[str] = ()) -> list[ReportChanges]:
    """Per report with more than one version (the stored ones and today's):
    each version's date ranges, and the diff of its texts to today's."""
    found = []
    for report in folder.reports.values():
        if only and report.key not in only:
            continue
        record = load(output_folder, report.key)
        today = fingerprint(report, folder.query_folder)
        ids = set(record.versions) | {today.id}
        if len(ids) < 2:
            continue
        spans: dict[str, dict[tuple[str, str], int]] = {}
        for ranges in record.files.values():
            for first, last, version in ranges:
                per = spans.setdefault(version, {})
                per[(first, last)] = per.get((first, last), 0) + 1
        others = sorted((version for version in ids if version != today.id),
                        key=lambda version: record.versions[version].last_used
                        if version in record.versions else "", reverse=True)
        lines, diffs = [], []
        for version in [today.id, *others]:
            entry = record.versions.get(version)
            lines.append(VersionLine(version, version == today.id, entry.first_used if entry else None,
                                     entry.last_used if entry else None,
                                     tuple((first, last, count) for (first, last), count
                                           in sorted(spans.get(version, {}).items()))))
            if version == today.id:
                continue
            if entry is None or entry.sources is None:
                diffs.append(f"{report.key}: the texts of version {version} are not kept "
                             f"(only the newest {TEXTS_KEPT} versions' are)")
                continue
            diffs.append(_diff(entry.sources, today.sources, version))
        found.append(ReportChanges(report.key, tuple(lines), tuple(diffs)))
    return found


def _diff(old: dict[str, str], new: dict[str, str], version: str) -> str:
    parts: list[str] = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name, ""), new.get(name, "")
        if before == after:
            continue
        parts += difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                      f"{name} ({version})", f"{name} (today)")
    text = "".join(line if line.endswith("\n") else line + "\n" for line in parts)
    return text or f"(version {version}: same texts; what differed is not kept)\n"
