# Stage 4 of 5: the TSV store (config -> plan -> execute -> store -> publish).
#
# The output files are the source of truth for what is done. This module
# reads an output file once, merges results into it in memory (header
# evolution, replaced dates, max_data_points trimming) and replaces it
# through atomic.write (a fresh temp beside it, fsync, rename, fsync the
# folder; no link followed, none written through). May touch: the output
# folder only. Cells are kept as the exact text of the file, so every
# value round-trips byte for byte.

from __future__ import annotations

import re
from datetime import date
from operator import itemgetter
from pathlib import Path

from . import atomic
from .datatypes import Result


class StoreError(Exception):
    """An output file that cannot be read or written; names the path."""


_LABEL = re.compile(r"\d{4}-\d{2}-\d{2}(?:T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d)?\Z", re.ASCII)
ENCODING = "utf-8"
ERRORS = "surrogateescape"  # keep bytes that are not UTF-8 exactly as they were


def output_path(output_folder: Path, report_key: str, explode: tuple[tuple[str, str], ...]) -> Path:
    """OUTPUT/<report>.tsv, or OUTPUT/<report>/<v1>/.../<vlast>.tsv by placeholder name.

    Raises StoreError for a path that would leave the output folder (values
    are checked by config; this holds even with a permissive explode pattern).
    """
    if not explode:
        path = output_folder / f"{report_key}.tsv"
    else:
        values = [value for _, value in explode]
        path = output_folder.joinpath(report_key, *values[:-1], f"{values[-1]}.tsv")
    parts = [report_key, *(value for _, value in explode)]
    if any(part in ("", ".", "..") or "/" in part or "\0" in part for part in parts):
        raise StoreError(f"{path}: a report name or explode value would leave the output folder")
    return path


# Dates already checked: the files of a folder share their dates, so each is
# checked once per run, not once per file (bounded, for hourly reports).
_KNOWN_LABELS: set[str] = set()
_ONLY_LINE_ENDS = re.compile(r"[\r\n]*")
_KNOWN_LABELS_MAX = 200_000


def is_label(text: str) -> bool:
    """YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS naming a real day (no 2026-02-30)."""
    if not _LABEL.match(text):
        return False
    try:
        date.fromisoformat(text[:10])
    except ValueError:
        return False
    return True


def _scan_dates(text: str) -> set[str] | None:
    """The dates of a file in the plain shape this tool writes (a header with
    at least two columns, then rows whose first field is a date), found
    without splitting lines into cells; None when the file needs the
    line-by-line check of OutputFile._split.

    Checks the header, that the body has as many tabs as its rows need in
    all, and that every line starts with a valid date and a tab. A row with
    too many fields and another with too few pass here; _split catches them
    before anything is merged into the file, so it is never rewritten."""
    header_line, _, body = text.partition("\n")
    tabs = header_line.count("\t")
    if not tabs or not header_line.strip("\r") or header_line.startswith("\t"):
        return None
    if body.endswith("\n"):
        body = body[:-1]
    if not body:
        return set()
    lines = body.split("\n")
    if body.count("\t") != len(lines) * tabs:
        return None
    # Whole-line work is done by C-level map()s: a folder has millions of lines.
    width = lines[0].find("\t")  # the first date's length
    try:
        if set(map(itemgetter(width), lines)) != {"\t"}:
            return None  # first fields of other lengths
    except IndexError:
        return None  # a line shorter than the first date
    dates = set(map(itemgetter(slice(0, width)), lines))
    unknown = dates.difference(_KNOWN_LABELS)
    if unknown:
        if not all(map(is_label, unknown)):
            return None
        if len(_KNOWN_LABELS) + len(unknown) > _KNOWN_LABELS_MAX:
            _KNOWN_LABELS.clear()
        _KNOWN_LABELS.update(unknown)
    return dates


class OutputFile:
    """One output TSV, held in memory between one read and its writes.

    Rows are kept grouped by date, so merging an interval costs the size of
    its result, not of the file; they are sorted only when written. A file's
    dates are found without splitting it into cells (_scan_dates); it is
    split into rows only when something is merged into it, so planning a
    complete folder costs little more than reading it.
    """

    def __init__(self, path: Path, header: list[str] | None = None,
                 by_date: dict[str, list[list[str]]] | None = None, root: Path | None = None):
        self.path = path
        # The output folder: no folder between it and the file may be a link
        # (default: the file's own folder; the file itself never may be one).
        self.root = root if root is not None else path.parent
        self._header = header or []
        self._by_date = by_date or {}
        self._text: str | None = None  # read but not yet split into rows
        self._text_dates: set[str] = set()  # its dates, while not split
        self.dirty = False

    @property
    def header(self) -> list[str]:
        self._split()
        return self._header

    @property
    def by_date(self) -> dict[str, list[list[str]]]:
        self._split()
        return self._by_date

    @property
    def dates(self) -> set[str]:
        if self._text is not None:
            return self._text_dates
        return set(self._by_date)

    @property
    def rows(self) -> list[list[str]]:
        """Every row, sorted by date; rows of one date keep their order."""
        return [row for label in sorted(self.by_date) for row in self.by_date[label]]

    @classmethod
    def load(cls, path: Path, root: Path | None = None) -> OutputFile:
        """Read an output file (a missing one is empty). Raises StoreError when it
        cannot be parsed, or is a link or not a regular file: such a file is
        never overwritten. root: the output folder (see __init__)."""
        try:
            data = atomic.read(path, inside=root)
        except FileNotFoundError:
            return cls(path, root=root)
        except OSError as exc:  # also a link (SymlinkRefused), a FIFO, a folder
            raise StoreError(f"{path}: cannot read: {exc.strerror}") from None
        except ValueError as exc:  # a path outside root
            raise StoreError(f"{path}: {exc}") from None
        text = data.decode(ENCODING, errors=ERRORS)
        output = cls(path, root=root)
        if not _ONLY_LINE_ENDS.fullmatch(text):  # (strip() would copy the whole text)
            if "\n" not in text:
                # Not a TSV this tool (or the original) wrote: never overwrite it.
                raise StoreError(f"{path}:1: not a TSV file (no line end); "
                                 "the file is left as it is (move it aside to recompute)")
            output._text = text
            binary = "\x00" in text
            dates = None if binary else _scan_dates(text)
            if dates is None:
                output._split()  # raises StoreError naming the line
            else:
                output._text_dates = dates
            if binary:
                line = text.count("\n", 0, text.index("\x00")) + 1
                raise StoreError(f"{path}:{line}: not a TSV file (binary data); "
                                 "the file is left as it is (move it aside to recompute)")
        return output

    def _split(self) -> None:
        """Split the text into rows, checking every one."""
        if self._text is None:
            return
        text, path = self._text, self.path
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        header = lines[0].split("\t")
        if not header[0]:
            raise StoreError(f"{path}:1: the header line is empty or starts with a tab")
        by_date: dict[str, list[list[str]]] = {}
        for number, line in enumerate(lines[1:], start=2):
            cells = line.split("\t")
            if len(cells) != len(header):
                raise StoreError(f"{path}:{number}: {len(cells)} fields, but the header has "
                                 f"{len(header)}; the file is left as it is (move it aside to recompute)")
            if cells[0] not in by_date and not is_label(cells[0]):
                raise StoreError(f"{path}:{number}: first field {cells[0]!r} is not a date "
                                     "YYYY-MM-DD; the file is left as it is (move it aside to "
                                     "recompute)")
            by_date.setdefault(cells[0], []).append(cells)
        self._header, self._by_date, self._text, self._text_dates = header, by_date, None, set()

    def merge(self, result: Result, replace_dates: set[str], fill: str = "",
              keep_column_order: bool = False) -> dict[str, tuple[list[list[str]], list[list[str]]]]:
        """Put a result in: rows of `replace_dates` and of the result's dates are
        replaced; the header evolves (new columns added, vanished ones kept
        last), the cells that did not exist get `fill` (empty, or a pivot's fill).
        Returns {date: (old rows, new rows)} for the dates whose rows changed.

        keep_column_order (pivots): the file's columns keep their places and
        new ones are appended, instead of following the result's order.

        The first column is the date whatever its name; the others are
        matched by name. Raises StoreError, changing nothing, when that
        could put a value in the wrong column or lose one (see _new_header)."""
        self._split()
        width = len(result.header)
        if any(len(row) != width for row in result.rows):
            raise StoreError(f"{self.path}: a result row does not have the {width} fields "
                             "of its header")  # a bug upstream; never write a ragged file
        header = self._new_header(result, keep_column_order)
        if self._header and header != self._header:
            self._by_date = {label: _reordered(rows, self._header, header, fill)
                             for label, rows in self._by_date.items()}
        self._header = header
        if header == list(result.header):
            rows = [list(row) for row in result.rows]
        else:
            rows = _reordered(result.rows, list(result.header), header, fill)
        old = {label: self._by_date.pop(label) for label in replace_dates | result.dates
               if label in self._by_date}
        fresh: dict[str, list[list[str]]] = {}
        for row in rows:
            fresh.setdefault(row[0], []).append(row)
        self._by_date.update(fresh)
        self.dirty = True
        # What changed, for Graphite (only changed rows are sent) and diffs.
        return {label: (old.get(label, []), fresh.get(label, []))
                for label in set(old) | set(fresh) if old.get(label) != fresh.get(label)}

    def _new_header(self, result: Result, keep_column_order: bool) -> list[str]:
        """The header after merging `result`. Raises StoreError for a header
        that names a column twice (the result's, the file's when it must
        change, or the merged one: a result's date column named like one of
        the file's columns), and, outside pivots, for a result column that
        differs only in case from a file column the result lacks (a query
        moved to Hive, which lower-cases names): its history would be split
        over two columns."""
        twice = _named_twice(result.header)
        if twice:
            raise StoreError(f"{self.path}: the result has duplicate column names: "
                             f"{twice!r} is named twice")
        if not self._header:
            return list(result.header)
        if self._header == list(result.header):
            return self._header
        twice = _named_twice(self._header)
        if twice:
            raise StoreError(f"{self.path}: the file's header has duplicate column names: {twice!r} "
                             "is named twice, and the result's header differs; rename one of them "
                             "in the file's first line (e.g. to the name the query now uses)")
        file_columns, result_columns = self._header[1:], list(result.header[1:])
        if keep_column_order:
            known = set(file_columns)
            header = [self._header[0], *file_columns, *(c for c in result_columns if c not in known)]
        else:
            folded = {name.casefold(): name for name in file_columns if name not in result.header}
            for name in result_columns:
                if name not in self._header and name.casefold() in folded:
                    raise StoreError(f"{self.path}: the result's column {name!r} differs only in "
                                     f"case from the file's column {folded[name.casefold()]!r}; "
                                     "use the same name in the query, or rename the column in "
                                     "the file's first line")
            known = set(result_columns)
            header = [result.header[0], *result_columns, *(c for c in file_columns if c not in known)]
        twice = _named_twice(header)
        if twice:
            raise StoreError(f"{self.path}: the result's date column and another column would "
                             f"both be named {twice!r}; rename the date column in the query")
        return header

    def trim_before(self, first_label: str) -> None:
        """Drop rows older than `first_label` (max_data_points)."""
        old = [label for label in self.dates if label < first_label]
        if old:
            self._split()
        for label in old:
            del self._by_date[label]
        if old:
            self.dirty = True

    def text(self) -> str:
        lines = ["\t".join(self.header)] + ["\t".join(row) for row in self.rows]
        return "\n".join(lines) + "\n"

    def save(self, group: str | None = None) -> None:
        """Replace the file atomically: a reader or a crash sees the old or the new file."""
        if not self.dirty:
            return
        data = self.text().encode(ENCODING, errors=ERRORS)
        try:
            atomic.write(self.path, data, inside=self.root, group=group)
        except (OSError, LookupError, ValueError) as exc:  # LookupError: unknown group
            reason = getattr(exc, "strerror", None) or str(exc)
            raise StoreError(f"{self.path}: cannot write: {reason}") from None
        self.dirty = False

    def remove_stale_temp(self) -> None:
        """A run killed mid-write leaves its temp file; the lock says it is stale."""
        atomic.remove_stale_temps(self.path.parent, self.path.name, inside=self.root)


def _named_twice(names: list[str] | tuple[str, ...]) -> str | None:
    """A name that occurs twice in a header, or None."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def _reordered(rows, old_header: list[str], new_header: list[str], fill: str) -> list[list[str]]:
    """Rows of `old_header` laid out as `new_header`: the date stays first,
    the other columns move by name, the ones they lack get `fill`."""
    position = {name: index for index, name in enumerate(old_header) if index > 0}
    order = [0] + [position.get(name) for name in new_header[1:]]
    return [[row[i] if i is not None else fill for i in order] for row in rows]
