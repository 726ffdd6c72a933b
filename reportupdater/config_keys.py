# Stage 1 of 5: configuration (config -> plan -> execute -> store -> publish).
#
# Every key of config.yaml, declared once: its section, type, bounds or
# choices, default and a one-line doc. config.py reads its key sets and
# parses the plain-typed keys (integers, booleans, texts, seconds, choices)
# from these declarations; `reportupdater schema` prints the JSON Schema
# built from them and the docs' key tables come from key_reference(). Keys
# whose value has a shape of its own (explode_by, graphite, pivot, a URL)
# declare their JSON Schema here and keep a parser of their own in
# config.py. These are the core's keys; each engine declares the keys only
# it reads (and the report types, ready_when kinds and database engines it
# brings) in its own module, read through report_types.py: report_keys(),
# database_keys() and sections() are the core's and the engines' together.
# Publishers declare theirs as plain data (publishers/*_keys.py, no driver),
# joined in a block below. Standard library only: every run imports this module.

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from . import report_types

MAX_YEARS = 1000  # the longest span lag, max_data_points (and starts) may cover
MAX_SECONDS = 366 * 86400  # the longest timeout
MAX_LAG_SECONDS = int(MAX_YEARS * 365.2425 * 86400)
MAX_PORT = 65535
DEFAULT_TIMEOUT_SECONDS = 3600.0
# Values end up in file paths, SQL text and metric paths: letters, digits,
# '_', '-', '.', and no leading dot (so never '.' or '..').
DEFAULT_EXPLODE_VALUE_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
GRANULARITIES = ("hours", "days", "weeks", "months", "quarters", "years")

# The kinds config.py parses from the declaration alone; "other" keys have
# their own parser there.
PLAIN_KINDS = ("integer", "boolean", "text", "seconds", "choice")


@dataclass(frozen=True)
class Key:
    """One key of a section of config.yaml."""

    name: str
    kind: str                  # integer, boolean, text, seconds, choice, date or other
    doc: str                   # one line, for the reference and the schema
    default: Any = None        # what leaving the key out means (None: nothing, or see doc)
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    schema: dict[str, Any] | None = None  # kind "other" (and "date"): its JSON Schema
    null_is_unset: bool = True  # `key: null` (or `key:`) means the key is not given
    required: bool = False
    legacy: bool = False       # accepted and ignored (the original tool's keys)
    owner: str = ""            # the engine or publisher whose module declares the key, "" for the core
    # Its value decides what a report computes (not when or how much): it is
    # part of the version fingerprint (versions.py), so changing it makes the
    # stored rows "computed by an older version".
    decides_result: bool = False

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any]
        if self.kind == "integer":
            schema = {"type": "integer", "minimum": self.minimum}
            if self.maximum is not None:
                schema["maximum"] = self.maximum
        elif self.kind == "boolean":
            schema = {"type": "boolean"}
        elif self.kind == "text":
            schema = {"type": "string", "pattern": r"\S"}
        elif self.kind == "seconds":
            schema = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS}
        elif self.kind == "choice":
            schema = {"enum": list(self.choices)}
        else:
            schema = dict(self.schema or {})
        if self.null_is_unset and not self.required:
            schema = _or_null(schema)
        schema["description"] = self.doc
        if self.default is not None:
            schema["default"] = self.default
        if self.legacy:
            schema["deprecated"] = True
        return schema


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema, or null; a plain type list where it can (an editor's
    message then names the key's own problem, not 'any of the schemas')."""
    if isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    if not schema:
        return schema
    return {"anyOf": [schema, {"type": "null"}]}


_SCALAR = {"type": ["string", "integer", "number", "boolean"]}  # read as the text written
SCALAR_SCHEMA = _SCALAR  # for engines' keys


def _keys(*keys: Key) -> dict[str, Key]:
    return {key.name: key for key in keys}


TOP_LEVEL = _keys(
    Key("reports", "other", "The reports of the folder: report name -> its keys", required=True),
    Key("defaults", "other", "Keys every report gets unless it gives them itself"),
    Key("databases", "other", "The databases reports read: name -> connection keys"),
    Key("graphite", "other", "Where reports' graphite sections send their metrics"),
)

# In the order config.py checks them (the order of a report's errors).
REPORT = _keys(
    # Its choices and default are the registered engines (report_keys()).
    Key("type", "choice", "What computes the report: an SQL template, a Hive template or a script",
        decides_result=True),
    Key("granularity", "choice", "The length of one interval: one row (or set of rows) per interval",
        choices=GRANULARITIES, required=True, decides_result=True),
    Key("starts", "date", "The first day of the first interval, YYYY-MM-DD", required=True,
        schema={"type": "string", "pattern": r"^\s*\d{4}-\d{1,2}-\d{1,2}([ Tt].*)?$"}),
    Key("lag", "integer", "Seconds to wait after an interval ends before computing it",
        default=0, minimum=0, maximum=MAX_LAG_SECONDS, null_is_unset=False),
    Key("max_data_points", "integer", f"Keep only the newest N intervals (at most {MAX_YEARS} years)",
        minimum=1),
    Key("timeout", "seconds", "Seconds one query or script may run (default: the database's, "
        f"else {DEFAULT_TIMEOUT_SECONDS:.0f})"),
    Key("group", "text", "Reports of one group run one at a time"),
    Key("schedule", "text", "Cron expression: when the report may start (e.g. '0 2 * * *')"),
    Key("parallel", "boolean", "false: the report's intervals never run at the same time",
        default=True, null_is_unset=False),
    Key("batch", "other", "Consecutive intervals computed by one query: a number, or 'month'",
        schema={"anyOf": [{"type": "integer", "minimum": 1}, {"const": "month"}]}),
    Key("timezone", "text", "IANA time zone: intervals are local calendar units (hourly: UTC only)",
        default="UTC", decides_result=True),
    Key("pivot", "other", "Turn long results into one column per category",
        schema={"type": "object", "required": ["index", "columns", "values"],
                "additionalProperties": False,
                "properties": {"index": {"type": "string"}, "columns": {"type": "string"},
                               "values": {"type": "string"}, "fill": _SCALAR}},
        decides_result=True),
    Key("ready_timeout", "seconds", "Seconds an interval may wait for its data (ready_when), then fails"),
    Key("lookback", "integer", "The newest N computed intervals are recomputed every run",
        default=0, minimum=0),
    Key("backfill_order", "choice", "newest: yesterday first; oldest: history first",
        default="newest", choices=("newest", "oldest")),
    Key("max_intervals_per_run", "integer", "At most N intervals of the report per run", minimum=1),
    Key("backfill_new_columns", "boolean", "A new result column reopens older intervals",
        default=False, null_is_unset=False),
    Key("explode_value_pattern", "text", "Regular expression every explode_by value must match",
        default=DEFAULT_EXPLODE_VALUE_PATTERN, null_is_unset=False),
    Key("explode_by", "other", "placeholder -> values (a list, 'a, b, c', or a file of one per line)",
        schema={"type": "object", "minProperties": 1,
                "additionalProperties": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]}},
        decides_result=True),  # its placeholders decide the result; its values, which files exist
    Key("graphite", "other", "Send columns to Graphite: path (with {_metric}) and metric -> column",
        schema={"type": "object", "required": ["path", "metrics"],
                "properties": {"path": {"type": "string", "pattern": r"\S"},
                               "metrics": {"type": "object", "minProperties": 1,
                                           "additionalProperties": {"type": "string", "pattern": r"\S"}}}}),
    Key("execute", "text", "The template (without .sql/.hql) or script, relative to the folder "
        "(default: the report's name)", null_is_unset=False),
    Key("db", "text", "The key of 'databases' the report reads", decides_result=True),
    Key("ready_when", "other", "Run an interval only when its data is there: a query, a Hive partition "
        "or a script"),  # its schema: one of the kinds the engines check (report_keys())
    Key("on_query_change", "other", "When the query (or a result key) changed: keep the rows older "
        "versions computed, rerun them all, or {rerun_since: YYYY-MM-DD} only those from that date",
        default="keep",
        schema={"anyOf": [{"enum": ["keep", "rerun"]},
                          {"type": "object", "required": ["rerun_since"], "additionalProperties": False,
                           "properties": {"rerun_since": {"type": "string",
                                                          "pattern": r"^\s*\d{4}-\d{1,2}-\d{1,2}\s*$"}}}]}),
    Key("frequency", "other", "The original tool's key; ignored", legacy=True, schema={}),
    Key("timeboxed", "other", "The original tool's key; ignored", legacy=True, schema={}),
    Key("funnel", "other", "The original tool's key; ignored", legacy=True, schema={}),
)

DATABASE = _keys(
    Key("url", "other", "SQLAlchemy URL (${VAR} from the environment), instead of host/port/db",
        schema={"type": "string", "pattern": r"^\s*[A-Za-z][A-Za-z0-9+.\-]*://"}, null_is_unset=False),
    Key("host", "text", "Server name", null_is_unset=False),
    Key("port", "integer", "Server port", minimum=1, maximum=MAX_PORT, null_is_unset=False),
    Key("db", "text", "Database name", null_is_unset=False),
    Key("database", "text", "Same as db (PyHive's name)", null_is_unset=False),
    Key("creds_file", "text", "MySQL option file with user and password, relative to the folder",
        null_is_unset=False),
    Key("seed", "text", "sqlite: SQL script that creates a missing database file",
        null_is_unset=False),
    Key("timeout", "seconds", "Seconds per query, server and client side", null_is_unset=False),
    Key("max_connections", "integer", "Jobs at a time on this database", minimum=1, null_is_unset=False),
    # Its choices and default are the registered engines' (database_keys()).
    Key("engine", "choice", "sql, hive (HiveServer2) or hive-cli (a command line)", null_is_unset=False),
)

GRAPHITE = _keys(
    Key("host", "text", "The Graphite (carbon) server's name", required=True),
    Key("port", "integer", "Its plaintext port", default=2003, minimum=1, maximum=MAX_PORT),
    Key("prefix", "other", "Put before every metric path", default="",
        schema={"type": "string"}),
    Key("lookups", "other", "placeholder -> YAML file mapping values to the names used in paths",
        schema={"type": "object", "additionalProperties": {"type": "string", "pattern": r"\S"}}),
)

# ------------------------------------------------------------- publishers
#
# Publishers own their keys (like engines): each publisher module declares
# its top-level section's keys and its report keys as plain data; they join
# the tables here, in a block of their own.
from .publishers import prometheus_keys as _prometheus  # noqa: E402
from .publishers import tables_keys as _tables  # noqa: E402


def _declared(specs: dict[str, dict[str, Any]], owner: str) -> dict[str, Key]:
    return _keys(*(Key(name, owner=owner, **spec) for name, spec in specs.items()))


TABLES = _declared(_tables.SECTION_KEYS, "tables")
PROMETHEUS = _declared(_prometheus.SECTION_KEYS, "prometheus")
TOP_LEVEL.update(_keys(Key("tables", "other", _tables.SECTION_DOC, owner="tables"),
                       Key("prometheus", "other", _prometheus.SECTION_DOC, owner="prometheus")))
REPORT.update(_declared(_tables.REPORT_KEYS, "tables"))
REPORT.update(_declared(_prometheus.REPORT_KEYS, "prometheus"))
PUBLISHER_SECTIONS = {"tables": TABLES, "prometheus": PROMETHEUS}

# The core's keys, by section (the engines' keys: sections()).
SECTIONS: dict[str, dict[str, Key]] = {
    "top level": TOP_LEVEL, "reports": REPORT, "databases": DATABASE, "graphite": GRAPHITE,
    **PUBLISHER_SECTIONS,
}


def _ready_when_schema(kinds: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
            "properties": {name: {"type": "string", "pattern": r"\S"} for name in kinds}}


def _engine_keys(section: str) -> dict[str, Key]:
    """The keys the registered engines declare for a section, in registry
    order, each marked with its engine; a key two engines declare is the first's."""
    keys: dict[str, Key] = {}
    for engine in report_types.declarations():
        declared = engine.report_keys if section == "reports" else engine.database_keys
        for name, key in declared.items():
            keys.setdefault(name, replace(key, owner=engine.type))
    return keys


def report_keys() -> dict[str, Key]:
    """Every report key: the core's, with the registered engines as the
    choices of `type` and their kinds as ready_when's, then the engines' own."""
    keys = dict(REPORT)
    keys["type"] = replace(REPORT["type"], choices=report_types.names(), default=report_types.default_type())
    keys["ready_when"] = replace(REPORT["ready_when"],
                                 schema=_ready_when_schema(report_types.ready_when_kinds()))
    for name, key in _engine_keys("reports").items():
        keys.setdefault(name, key)
    return keys


def database_keys() -> dict[str, Key]:
    """Every database key: the core's, then the engines' own."""
    keys = dict(DATABASE)
    engines = tuple(name for engine in report_types.declarations() for name in engine.database_engines)
    keys["engine"] = replace(DATABASE["engine"], choices=engines, default=engines[0] if engines else None)
    for name, key in _engine_keys("databases").items():
        keys.setdefault(name, key)
    return keys


def sections() -> dict[str, dict[str, Key]]:
    """Every key by section, the engines' included."""
    return {"top level": TOP_LEVEL, "reports": report_keys(), "databases": database_keys(),
            "graphite": GRAPHITE, **PUBLISHER_SECTIONS}


@dataclass(frozen=True)
class KeyRow:
    section: str
    key: str
    type: str
    default: str
    doc: str


def _type_text(key: Key) -> str:
    if key.kind == "choice":
        return " | ".join(key.choices)
    if key.kind == "integer":
        bounds = f">= {key.minimum}" + (f", <= {key.maximum}" if key.maximum is not None else "")
        return f"integer {bounds}"
    if key.kind == "seconds":
        return "seconds > 0"
    if key.kind == "other":
        return "see doc" if not key.legacy else "ignored"
    return {"text": "text", "boolean": "true | false", "date": "YYYY-MM-DD"}[key.kind]


def key_reference() -> list[KeyRow]:
    """Every key as (section, key, type, default, doc), in declaration order."""
    rows = []
    for section, keys in sections().items():
        for key in keys.values():
            default = "required" if key.required else "" if key.default is None else str(key.default)
            if isinstance(key.default, bool):
                default = str(key.default).lower()
            rows.append(KeyRow(section, key.name, _type_text(key), default, key.doc))
    return rows


def _object(keys: dict[str, Key], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False,
                              "properties": {name: key.json_schema() for name, key in keys.items()}}
    if required:
        schema["required"] = required
    return schema


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of config.yaml, as an editor reads it
    (YAML 1.2: `lag: 3600` a number, `lag: "3600"` a string). Cross-key rules
    (a sql report's db, files that must exist) are `validate`'s."""
    reports = report_keys()
    report = _object(reports)
    defaults = _object(reports)
    graphite = _object(GRAPHITE, [name for name, key in GRAPHITE.items() if key.required])
    database = _object(database_keys())
    required = [name for name, key in reports.items() if key.required]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "reportupdater config.yaml",
        "type": "object",
        "required": ["reports"],
        "additionalProperties": False,
        "properties": {
            "reports": {**TOP_LEVEL["reports"].json_schema(), "type": "object", "minProperties": 1,
                        "propertyNames": {"pattern": f"^{DEFAULT_EXPLODE_VALUE_PATTERN}$"},
                        "additionalProperties": {"$ref": "#/$defs/report"}},
            "defaults": {**TOP_LEVEL["defaults"].json_schema(), **_or_null(defaults)},
            "databases": {**TOP_LEVEL["databases"].json_schema(), "type": ["object", "null"],
                          "additionalProperties": database},
            "graphite": {**TOP_LEVEL["graphite"].json_schema(), **_or_null(graphite)},
            **{name: {**TOP_LEVEL[name].json_schema(),
                      **_or_null(_object(keys, [key for key, d in keys.items() if d.required]))}
               for name, keys in PUBLISHER_SECTIONS.items()},
        },
        # A key the defaults give is not required of each report.
        "allOf": [{"if": {"properties": {"defaults": {"type": "object", "required": [name]}},
                          "required": ["defaults"]},
                   "else": {"properties": {"reports": {"additionalProperties": {"required": [name]}}}}}
                  for name in required],
        "$defs": {"report": report},
    }


def result_keys() -> tuple[str, ...]:
    """The report keys (the core's and the engines') whose value decides a
    report's result, in declaration order: the version fingerprint's keys."""
    return tuple(name for name, key in report_keys().items() if key.decides_result)


# Plain keys config.py parses from the declaration alone, per section.
def plain(keys: dict[str, Key]) -> dict[str, Key]:
    return {name: key for name, key in keys.items() if key.kind in PLAIN_KINDS}


__all__ = ["DATABASE", "GRAPHITE", "PROMETHEUS", "PUBLISHER_SECTIONS", "REPORT", "SECTIONS", "TABLES",
           "TOP_LEVEL", "Key", "KeyRow", "database_keys", "json_schema", "key_reference", "plain",
           "report_keys", "result_keys", "sections"]
