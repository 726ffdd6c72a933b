# Stage 5 of 5: publishing to SQL tables (config -> plan -> execute -> store
# -> publish).
#
# One table per report, in any database SQLAlchemy reaches: `date` (DATE for
# days and coarser, TIMESTAMP WITH TIME ZONE in UTC for hours), one text
# column per explode key, then the result's columns, numeric ones as numbers
# (BIGINT when every cell is an integer, else DOUBLE PRECISION; empty cells
# NULL) and the others as text. The table is created when missing and a new
# column added with ALTER TABLE; a value its column cannot hold is an error,
# never a cast. Publishing an interval replaces that interval's rows for
# that explode combination (delete + insert, one transaction per queued
# batch), so reruns and lookback never leave duplicates or stale rows.
# Batches wait in OUTPUT/.tables-queue/ (see publishers/__init__.py).
# May touch: that queue folder and the tables of the database it is given.

from __future__ import annotations

import logging
import math
import re
from dataclasses import replace
from datetime import date, datetime, UTC
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

from . import DeliveryError, FlushResult, PublishError, StoredInterval
from .queue import DurableQueue
from .tables_keys import MAX_NAME_BYTES, TablesSettings, TableTarget  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

NAME = "tables"
DATE_COLUMN = "date"
CONNECT_TIMEOUT_SECONDS = 10
_INTEGER = re.compile(r"[+-]?\d+\Z", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z", re.ASCII)
_BIGINT_MIN, _BIGINT_MAX = -(2 ** 63), 2 ** 63 - 1

# Column kinds, from the values (a new column) or from the table (an existing one).
INTEGER, FLOAT, TEXT = "integer", "float", "text"


def resolve_sqlite_path(url: str, output_folder: Path) -> str:
    """sqlite:///metrics.db names a file of the output folder (published
    tables are outputs, like the TSVs); sqlite:////abs.db and other URLs
    are left as they are."""
    match = re.match(r"^(sqlite(?:\+\w+)?:///)([^/:?][^?]*)(\?.*)?$", url)
    if not match:
        return url
    prefix, path, query = match.groups()
    return f"{prefix}{(output_folder / path).resolve()}{query or ''}"


def cell_kind(text: str) -> str | None:
    """INTEGER, FLOAT or TEXT for one TSV cell; None for an empty one."""
    text = text.strip()
    if not text:
        return None
    if _INTEGER.match(text) and _BIGINT_MIN <= int(text) <= _BIGINT_MAX:
        return INTEGER
    if _DECIMAL.match(text) and math.isfinite(float(text)):
        return FLOAT
    return TEXT


def column_kind(cells: Sequence[str]) -> str | None:
    """The narrowest kind holding every cell; None when all are empty."""
    kinds = {kind for kind in map(cell_kind, cells) if kind is not None}
    if not kinds:
        return None
    if TEXT in kinds:
        return TEXT
    return FLOAT if FLOAT in kinds else INTEGER


def _fits(value_kind: str, column: str) -> bool:
    return column == TEXT or value_kind == column or (value_kind == INTEGER and column == FLOAT)


def _convert(text: str, kind: str) -> Any:
    text_stripped = text.strip()
    if not text_stripped:
        return None
    if kind == INTEGER:
        return int(text_stripped)
    if kind == FLOAT:
        return float(text_stripped)
    return text


class TablesPublisher:
    """Queue stored intervals as table batches; deliver them to the database."""

    name = NAME

    def __init__(self, settings: TablesSettings, targets: Mapping[str, TableTarget],
                 output_folder: Path, query_folder: Path):
        self.settings = replace(settings, url=resolve_sqlite_path(settings.url, output_folder))
        self.targets = dict(targets)        # report key -> its table; others are not published
        self.queue = DurableQueue(NAME, output_folder, query_folder)
        self._engine: Any = None  # a sqlalchemy.Engine once connected

    # ------------------------------------------------------------ enqueue

    def enqueue(self, stored: Sequence[StoredInterval]) -> int:
        by_table: dict[str, list[dict[str, Any]]] = {}
        reports: dict[str, str] = {}
        for each in stored:
            target = self.targets.get(each.report)
            if target is None:
                continue
            self._check_names(each, target)
            hourly = each.interval.hourly
            when = (each.start_utc.isoformat() if hourly else each.interval.start.date().isoformat())
            by_table.setdefault(target.table, []).append({
                "report": each.report, "hourly": hourly, "date": when,
                "explode": [list(pair) for pair in each.explode],
                "columns": list(each.header[1:]),
                "rows": [list(row[1:]) for row in each.rows],
            })
            reports[target.table] = each.report
        rows = 0
        for table, items in by_table.items():
            count = sum(len(item["rows"]) for item in items)
            self.queue.add(items, {"table": table, "report": reports[table], "count": count})
            rows += count
        return rows

    def _check_names(self, each: StoredInterval, target: TableTarget) -> None:
        where = f"report '{each.report}': table {target.table!r}"
        if not target.table:
            raise PublishError(f"{where}: an empty table name")
        names = [DATE_COLUMN, *(key for key, _ in each.explode), *each.header[1:]]
        seen: set[str] = set()
        for name in names:
            # Databases fold or compare names case-insensitively: `Edits` and
            # `edits` would be one column in some and two in others.
            folded = name.lower()
            if folded in seen:
                raise PublishError(f"{where}: column {name!r} is named twice (the date column, "
                                   "an explode key and the result's columns share one table)")
            seen.add(folded)
            if not name.strip():
                raise PublishError(f"{where}: a result column has an empty name")

    # -------------------------------------------------------------- flush

    def engine(self) -> Any:  # a sqlalchemy.Engine, imported only when publishing
        if self._engine is None:
            import sqlalchemy as sa  # only runs that publish to tables need it
            url = sa.engine.make_url(self.settings.url)
            connect_args: dict[str, Any] = {}
            if url.get_backend_name() == "postgresql":
                connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
            self._engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        return self._engine

    def flush(self) -> FlushResult:
        """Deliver oldest first, one transaction per batch. An unreachable
        database stops the flush (everything stays, in order); a batch the
        database refuses (a type conflict) stays queued with the later
        batches of its table, and the other tables go on."""
        import sqlalchemy as sa
        result = FlushResult()
        blocked: dict[str, str] = {}  # table -> why its batches wait
        for path in self.queue.files():
            document = self.queue.read(path)
            if document is None:
                continue
            table = str(document.get("table"))
            if table in blocked:
                continue
            try:
                with self.engine().begin() as connection:
                    _deliver(connection, self.settings.schema, table, document["items"])
            except DeliveryError as exc:
                blocked[table] = str(exc)
                log.error("tables: %s; the batch stays in %s", exc, self.queue.folder)
                continue
            except sa.exc.OperationalError as exc:
                result.error = f"{self._where()}: {_first_line(exc)}"
                break
            except ImportError as exc:  # the URL's driver is not installed: no table can go
                result.error = f"{self._where()}: driver not installed: {exc}"
                result.refused = True
                break
            except sa.exc.SQLAlchemyError as exc:
                blocked[table] = f"table {table!r}: {_first_line(exc)}"
                log.error("tables: report '%s': table %r refused a batch: %s; it stays in %s",
                          document.get("report"), table, _first_line(exc), self.queue.folder)
                continue
            self.queue.done(path)
            result.delivered += int(document.get("count") or 0)
        if blocked:
            result.refused = True
            if result.error is None:
                result.error = "; ".join(blocked.values())
        if result.error is not None:
            result.waiting = self.queue.size()
            log.warning("tables: %s: %d rows delivered, %d kept in %s for the next run",
                        result.error, result.delivered, result.waiting, self.queue.folder)
        elif result.delivered:
            log.info("tables: delivered %d rows to %s", result.delivered, self._where())
        return result

    def _where(self) -> str:
        import sqlalchemy as sa
        return sa.engine.make_url(self.settings.url).render_as_string(hide_password=True)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _deliver(connection, schema: str | None, table_name: str, items: list[dict[str, Any]]) -> None:
    """Create or widen the table, then replace each item's interval rows."""
    import sqlalchemy as sa
    report = items[0]["report"] if items else "?"
    where = f"report '{report}': table {table_name!r}"
    hourly = bool(items[0]["hourly"])
    limit = connection.dialect.max_identifier_length
    explode_keys: list[str] = []
    columns: list[str] = []
    for item in items:
        for key, _ in item["explode"]:
            if key not in explode_keys:
                explode_keys.append(key)
        for column in item["columns"]:
            if column not in columns:
                columns.append(column)
    for name in [table_name, *explode_keys, *columns]:
        if len(name.encode("utf-8")) > limit:  # PostgreSQL would cut it silently
            raise DeliveryError(f"{where}: name {name!r} is longer than the {limit} bytes "
                                f"{connection.dialect.name} allows")
    # The kind each result column's values need, over the whole batch.
    needed: dict[str, str | None] = {}
    for column in columns:
        cells = [row[item["columns"].index(column)] for item in items if column in item["columns"]
                 for row in item["rows"]]
        needed[column] = column_kind(cells)

    inspector = sa.inspect(connection)
    existing: dict[str, Any] = {}
    if inspector.has_table(table_name, schema=schema):
        existing = {column["name"]: column["type"]
                    for column in inspector.get_columns(table_name, schema=schema)}
    date_type = sa.DateTime(timezone=True) if hourly else sa.Date()
    kinds: dict[str, str] = {}
    for name, type_ in existing.items():
        kinds[name] = _kind_of(type_)
    if existing:
        if DATE_COLUMN not in existing:
            raise DeliveryError(f"{where}: the table has no {DATE_COLUMN!r} column")
        has_time = isinstance(existing[DATE_COLUMN], sa.DateTime)
        if has_time != hourly:
            raise DeliveryError(f"{where}: column {DATE_COLUMN!r} is "
                                f"{'a timestamp' if has_time else 'a date'}, but the report is "
                                f"{'hourly' if hourly else 'daily or coarser'}")
    for column, kind in needed.items():
        if column in kinds and kind is not None and not _fits(kind, kinds[column]):
            raise DeliveryError(
                f"{where}: column {column!r} is {kinds[column]} in the table, but the report "
                f"now gives {kind} values (change the column's type, or the report)")
    new_columns: list[sa.Column] = []
    for key in explode_keys:
        if key not in existing:
            new_columns.append(sa.Column(key, sa.Text()))
            kinds[key] = TEXT
    for column, kind in needed.items():
        if column not in existing and kind is not None:  # all empty: added once a value comes
            new_columns.append(sa.Column(column, _sql_type(kind)))
            kinds[column] = kind
    metadata = sa.MetaData(schema=schema)
    if not existing:
        table = sa.Table(table_name, metadata, sa.Column(DATE_COLUMN, date_type, nullable=False),
                         *new_columns)
        table.create(connection)
    else:
        preparer = connection.dialect.identifier_preparer
        qualified = preparer.format_table(sa.Table(table_name, sa.MetaData(), schema=schema))
        for column in new_columns:
            type_sql = column.type.compile(dialect=connection.dialect)
            connection.execute(sa.text(f"ALTER TABLE {qualified} ADD COLUMN "
                                       f"{preparer.quote(column.name)} {type_sql}"))
        table = sa.Table(table_name, metadata, sa.Column(DATE_COLUMN, date_type),
                         *(sa.Column(name, _sql_type(kinds[name]))
                           for name in [*existing, *(c.name for c in new_columns)]
                           if name != DATE_COLUMN))
    for item in items:
        when: date | datetime
        if item["hourly"]:
            when = datetime.fromisoformat(item["date"]).astimezone(UTC)
        else:
            when = date.fromisoformat(item["date"])
        condition = [table.c[DATE_COLUMN] == when]
        condition += [table.c[key] == value for key, value in item["explode"]]
        connection.execute(table.delete().where(*condition))
        records = []
        for row in item["rows"]:
            record: dict[str, Any] = {DATE_COLUMN: when}
            record.update({key: value for key, value in item["explode"]})
            for column, cell in zip(item["columns"], row, strict=True):
                if column in kinds:
                    record[column] = _convert(cell, kinds[column])
            records.append(record)
        if records:
            # Every record of an item has the same keys: one executemany.
            connection.execute(table.insert(), records)


def _kind_of(type_) -> str:
    import sqlalchemy as sa
    if isinstance(type_, sa.Integer):
        return INTEGER
    if isinstance(type_, (sa.Float, sa.Numeric)):
        return FLOAT
    return TEXT


def _sql_type(kind: str):
    import sqlalchemy as sa
    return {INTEGER: sa.BigInteger(), FLOAT: sa.DOUBLE_PRECISION()}.get(kind, sa.Text())
