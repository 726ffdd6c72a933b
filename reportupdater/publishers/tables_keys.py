# Stage 1 of 5 for stage 5: the tables publisher's configuration (config ->
# plan -> execute -> store -> publish).
#
# Publishers own their keys, as engines do: the tables publisher (tables.py)
# declares here, as plain data, its top-level section's keys and its report
# key; config_keys.py makes them Key declarations and config.py parses them
# into the settings below. A module of its own, importing nothing, because
# config imports it: loading a config must reach no writer and no driver.
# May touch: nothing.

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SECTION_DOC = "Publish every report as an SQL table: url (any SQLAlchemy URL), schema"
SECTION_KEYS: dict[str, dict[str, Any]] = {
    "url": {"kind": "other", "required": True, "null_is_unset": False,
            "doc": "SQLAlchemy URL of the database the tables are in (${VAR} from the environment)",
            "schema": {"type": "string", "pattern": r"^\s*[A-Za-z][A-Za-z0-9+.\-]*://"}},
    "schema": {"kind": "text", "doc": "The schema the tables are in (default: the database's own)"},
}
REPORT_KEYS: dict[str, dict[str, Any]] = {
    "table": {"kind": "other", "null_is_unset": True,
              "doc": "The report's table with a top-level 'tables' (default: the report's name); "
                     "false: not published there",
              "schema": {"anyOf": [{"type": "string", "pattern": r"\S"}, {"const": False}]}},
}
# PostgreSQL cuts longer names silently (two tables could become one).
MAX_NAME_BYTES = 63


@dataclass(frozen=True)
class TablesSettings:
    url: str                    # any SQLAlchemy URL (postgresql+psycopg://..., sqlite:///...)
    schema: str | None = None


@dataclass(frozen=True)
class TableTarget:
    table: str                  # default (phase B): the report's key
