# Stage 1 of 5: configuration (config -> plan -> execute -> store -> publish).
#
# Reads a query folder's config.yaml into typed dataclasses and validates
# every key. May read: config.yaml, explode_by value files, templates and
# scripts (to check they exist and know their placeholders). Writes nothing,
# connects to nothing. What a report type (an engine) reads and requires is
# declared in the engine's module (report_types.py finds it) and applied
# here: config.py names no report type. A broken report becomes a ConfigError in
# FolderConfig.errors; it never stops the other reports from loading.
# YAML scalars are read as the text written (not YAML 1.1's booleans, octals,
# sexagesimals), keys given twice are errors, and no message shows a value
# that may hold a password (hide_secrets is also what the engines mask with).

from __future__ import annotations

import difflib
import functools
import itertools
import os
import re
import reprlib
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo, UTC
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from . import config_keys, report_types, templates
from .config_keys import (DEFAULT_EXPLODE_VALUE_PATTERN, MAX_LAG_SECONDS, MAX_SECONDS, MAX_YEARS, Key, KeyRow,
                          json_schema, key_reference)
from .datatypes import Granularity
from .publishers import prometheus_keys as prometheus_publisher
from .publishers import tables_keys as tables_publisher
from .publishers.prometheus_keys import PrometheusSettings, PrometheusTarget
from .publishers.tables_keys import TablesSettings

# Re-exported: the schema and the docs' key rows are built from the declarations
# in config_keys.py, and callers reach them through the config stage.
_DECLARED = (KeyRow, MAX_LAG_SECONDS, json_schema, key_reference)


class _Located:
    """Where a configuration problem is, as fields, so that `validate`,
    `smoke` and `rerun` need not parse the message: the config file, its
    top-level section ('reports', 'databases', 'graphite', 'defaults'), the
    report or database, the key (dotted, as the message names it) and the
    1-based line of the YAML that holds it (the key's, else its report's or
    database's; set by `load`)."""

    file: Path | None
    section: str | None
    report: str | None
    database: str | None
    key: str | None
    line: int | None
    line_shown: bool  # the message itself says "line N" (YAML errors, keys given twice)

    def _locate(self, file: Path | None, section: str | None, report: str | None,
                database: str | None, key: str | None, line: int | None, line_shown: bool) -> None:
        self.file, self.section, self.report = file, section, report
        self.database, self.key, self.line = database, key, line
        self.line_shown = line_shown

    def located(self) -> str:
        """The message with the line after the file name (`config.yaml:12: ...`)
        when both are known and the message starts with the file."""
        text = str(self)
        if self.line is None or self.file is None or self.line_shown:
            return text
        head = _clean(str(self.file)) + ":"
        return f"{head}{self.line}:{text[len(head):]}" if text.startswith(head) else text


class ConfigError(_Located, Exception):
    """A one-line, user-facing configuration problem; str() is the message."""

    def __init__(self, message: str, *, file: Path | None = None, section: str | None = None,
                 report: str | None = None, database: str | None = None, key: str | None = None,
                 line: int | None = None, line_shown: bool = False):
        super().__init__(message)
        self._locate(file, section, report, database, key, line, line_shown)


class ConfigWarning(_Located, str):
    """A one-line warning (an unknown key, ignored): the text, with the same fields."""

    def __new__(cls, message: str, *, file: Path | None = None, section: str | None = None,
                report: str | None = None, database: str | None = None, key: str | None = None,
                line: int | None = None) -> ConfigWarning:
        warning = super().__new__(cls, _clean(message))
        warning._locate(file, section, report, database, key, line, False)
        return warning


# The keys and their types are declared once: the core's in config_keys.py,
# each engine's in its module (report_types.py finds them).
# Keys the original tool accepted at some point and that mean nothing now.
LEGACY_REPORT_KEYS = frozenset(name for name, key in config_keys.REPORT.items() if key.legacy)


@dataclass(frozen=True)
class DatabaseConfig:
    key: str
    url: str | None = field(default=None, repr=False)  # may hold a secret
    host: str | None = None
    port: int | None = None
    db: str | None = None
    creds_file: Path | None = None
    seed: Path | None = None  # sqlite only: SQL script that creates a missing database file
    timeout: float | None = None            # seconds per query, server and client side
    max_connections: int | None = None      # jobs at a time on this database
    engine: str = ""                        # its `engine:` (default: the first engine's)
    options: dict[str, Any] = field(default_factory=dict)  # keys its engines declare, parsed

    def __getattr__(self, name: str) -> Any:
        """An engine's database key reads as an attribute (None when not given)."""
        if name.startswith("__"):
            raise AttributeError(name)
        options = self.__dict__.get("options", {})
        if name in options:
            return options[name]
        if name in config_keys.database_keys():
            return None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


@dataclass(frozen=True)
class ReportGraphite:
    path: str
    metrics: dict[str, str]  # metric name -> column


@dataclass(frozen=True)
class GraphiteConfig:
    host: str
    port: int = 2003
    prefix: str = ""
    lookups: dict[str, Path] = field(default_factory=dict)  # placeholder -> yaml file


@dataclass(frozen=True)
class ReadyCheck:
    """`ready_when:` one of a query (true when its first value is truthy), a
    Hive partition that must exist, or a script that exits 0 when ready."""

    query: str | None = None
    partition: str | None = None        # db.table/key={year}/key={month}...
    script_path: Path | None = None


@dataclass(frozen=True)
class Pivot:
    """`pivot: {index: date, columns: browser_family, values: view_count, fill: 0}`"""

    index: str
    columns: str
    values: str
    fill: str = ""


@dataclass(frozen=True)
class QueryChange:
    """`on_query_change:` what a run does with the rows an older version of
    the report computed: keep them, rerun them all, or rerun those from
    `since` on (`{rerun_since: 2024-01-01}`)."""

    policy: str = "keep"        # keep | rerun
    since: date | None = None   # rerun: only intervals starting on or after this day

    def __str__(self) -> str:
        if self.policy == "rerun" and self.since is not None:
            return f"{{rerun_since: {self.since.isoformat()}}}"
        return self.policy


def _zone(name: str) -> tzinfo:
    return UTC if name == "UTC" else ZoneInfo(name)


@dataclass(frozen=True)
class ReportConfig:
    key: str
    type: str
    granularity: Granularity
    starts: date
    lag: int = 0
    db: str | None = None
    execute: str = ""
    explode_by: dict[str, tuple[str, ...]] = field(default_factory=dict)  # sorted by placeholder
    max_data_points: int | None = None
    graphite: ReportGraphite | None = None
    group: str | None = None
    timeout: float | None = None  # seconds; None: the database's, else DEFAULT_TIMEOUT_SECONDS
    schedule: str | None = None   # cron expression: when the report may start
    parallel: bool = True         # false: its intervals never run at the same time
    batch: int | str | None = None  # N or "month": consecutive intervals per query
    timezone: str = "UTC"         # IANA name: intervals are local calendar units
    pivot: Pivot | None = None  # long results turned into one column per category
    ready_when: ReadyCheck | None = None
    ready_timeout: float | None = None  # seconds an interval may wait for its data, then fails
    lookback: int = 0             # newest N computed intervals recomputed every run
    backfill_order: str = "newest"  # newest: yesterday first; oldest: history first
    max_intervals_per_run: int | None = None
    backfill_new_columns: bool = False  # a new column reopens older intervals
    on_query_change: QueryChange = QueryChange()  # rows an older version computed: keep or rerun
    # Publishers (with their top-level sections): True the report's key, a
    # name, or False (not published there); the report's prometheus section.
    table: str | bool = True
    prometheus: PrometheusTarget | None = None

    @property
    def table_name(self) -> str | None:
        """The report's table under a top-level `tables`, None when `table: false`."""
        if self.table is False:
            return None
        return self.key if self.table is True else str(self.table)

    @property
    def zone(self) -> tzinfo:
        return _zone(self.timezone)
    template: str | None = None  # the template text (engines with a template suffix), read once
    script_path: Path | None = None  # script reports: absolute path of the executable
    options: dict[str, Any] = field(default_factory=dict)  # keys its engine declares, parsed

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(self.explode_by)

    def combinations(self) -> list[tuple[tuple[str, str], ...]]:
        """Every explode combination as (placeholder, value) pairs sorted by placeholder."""
        names = list(self.explode_by)  # already sorted by name
        return [tuple(zip(names, values, strict=True))
                for values in itertools.product(*(self.explode_by[name] for name in names))]


@dataclass
class FolderConfig:
    config_path: Path
    query_folder: Path
    reports: dict[str, ReportConfig]
    databases: dict[str, DatabaseConfig]
    graphite: GraphiteConfig | None
    errors: list[ConfigError] = field(default_factory=list)  # broken reports and databases
    warnings: list[str] = field(default_factory=list)  # ConfigWarning, mostly
    broken_reports: set[str] = field(default_factory=set)
    key_lines: dict[tuple[str, str, str | None], int] = field(default_factory=dict)  # see _key_lines
    tables: TablesSettings | None = None          # top-level `tables:`
    prometheus: PrometheusSettings | None = None  # top-level `prometheus:`

    def line(self, kind: str, name: str, key: str | None = None) -> int | None:
        """The line of a report's or database's key (kind 'report' or 'database'), else of its name."""
        return self.key_lines.get((kind, name, key)) or self.key_lines.get((kind, name, None))


# ---------------------------------------------------------------- helpers


class _Where:
    """Builds error messages that name file, report and key. In a database
    section (`hides_values`) a bad value is described, never shown: any of
    its keys may hold a password by mistake (a URL in a map of servers, a mapping
    in `url`, a password in the wrong key), and config errors reach logs,
    `validate` and `status --json`. The key and its line say where to look."""

    def __init__(self, config_path: Path, section: str, hides_values: bool = False, *,
                 report: str | None = None, database: str | None = None):
        self.config_path = config_path
        self.section = section  # 'graphite', or the section of the report or database
        self.hides_values = hides_values
        self.report, self.database = report, database

    @classmethod
    def report_(cls, config_path: Path, key: str) -> _Where:
        return cls(config_path, "reports", report=key)

    @classmethod
    def database_(cls, config_path: Path, key: str) -> _Where:
        return cls(config_path, "databases", hides_values=True, database=key)

    @property
    def label(self) -> str:
        if self.report is not None:
            return f"report '{self.report}'"
        if self.database is not None:
            return f"database '{self.database}'"
        return self.section

    def error(self, key: str | None, message: str) -> ConfigError:
        where = f"{self.config_path}: {self.label}"
        if key is not None:
            where += f": key '{key}'"
        return ConfigError(_clean(f"{where}: {message}"), file=self.config_path, section=self.section,
                           report=self.report, database=self.database, key=key)

    def warning(self, message: str) -> ConfigWarning:
        return ConfigWarning(f"{self.config_path}: {self.label}: {message}", file=self.config_path,
                             section=self.section, report=self.report, database=self.database)

    def show(self, key: str | None, value: Any) -> str:
        """The value as an error message shows it."""
        if self.hides_values:
            return _describe(value)
        return _show(value)


def _nearest(name: str, known: set[str] | frozenset[str]) -> str:
    match = difflib.get_close_matches(str(name), sorted(known), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 60
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict = 2, 4, 4


def _show(value: Any) -> str:
    """A value as written: bare when YAML 1.1 would have read it as a number,
    a boolean or null (`1.5`, `true`, `07`), quoted when it is text; bounded,
    however large or deep the value (aliases can make it huge)."""
    if (isinstance(value, str) and value and not isinstance(value, QuotedText)
            and _yaml11_tag(value) in _YAML11_BARE_TAGS):
        return value if len(value) <= 60 else value[:57] + "..."
    if isinstance(value, dict):  # its keys say what it is; its values stay out of messages
        keys = [str(key) for key in itertools.islice(value, 4)]
        text = "{" + ", ".join(f"{key}: ..." for key in keys) + (", ..." if len(value) > 4 else "") + "}"
    else:
        text = _SHOWN.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(value: Any) -> str:
    kinds: dict[type, str] = {str: "a text", dict: "a mapping", list: "a list"}
    if value is None:
        return "null"
    return f"{kinds.get(type(value), 'a value')} (not shown: it may hold a password)"


# Secrets in text headed for a log, a file or the screen. A URL's password
# is masked wherever it shows (`scheme://user:***@host`); known passwords
# (a creds file's, a ${VAR} expanded into a URL) are masked wherever they
# show, whole or percent-encoded.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*):[^\s'\"]*@")
SECRET_MASK = "***"


def _clean(message: str) -> str:
    """A config message as shown: one line (names with control characters
    escaped), URL passwords masked."""
    one_line = re.sub(r"[\x00-\x1f\x7f\u2028\u2029]", lambda match: repr(match.group())[1:-1], message)
    return hide_secrets(one_line)


def hide_secrets(text: str, secrets: Iterable[str | None] = ()) -> str:
    for secret in sorted((secret for secret in secrets if secret), key=len, reverse=True):
        # One- and two-character passwords are left: masking them would
        # garble every message and hide nothing worth hiding.
        if secret and len(secret) >= 3:
            for form in {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}:
                text = text.replace(form, SECRET_MASK)
    return _URL_PASSWORD.sub(lambda match: f"{match.group('head')}:{SECRET_MASK}@", text)


# ------------------------------------------------------------ typed values
#
# The YAML loader below keeps every scalar as the text written (null
# aside); each key reads that text as the type it needs. Only unambiguous
# text is accepted as a number or a boolean: YAML 1.1, which PyYAML
# implements, reads `010` as 8, `0x1F` as 31, `1:30` as 90 and `yes`/`off`
# as booleans, and a config where that matters is refused, naming the key,
# rather than read in a way the analyst may not mean.

_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_DECIMAL_NUMBER = re.compile(r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
_YAML11_RESOLVER = yaml.resolver.Resolver()


_YAML11_BARE_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("int", "float", "bool", "null"))


def _yaml11_tag(text: str) -> str:
    return _YAML11_RESOLVER.resolve(yaml.ScalarNode, text, (True, False))


def _yaml11_value(text: str) -> Any:
    """What PyYAML's YAML 1.1 rules make of `text` written unquoted; `text`
    itself (the same object) when they leave it a string."""
    if _yaml11_tag(text) == "tag:yaml.org,2002:str":
        return text
    try:
        return yaml.load(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, ValueError):  # an impossible date: 2026-02-30
        return None


def _yaml11_hint(value: Any, kind: str) -> str:
    """` (YAML 1.1 would read 010 as 8; ...)` for text that YAML 1.1 reads as
    the kind of value the key wants ('integer', 'number' or 'boolean'), but
    that is not written unambiguously."""
    if not isinstance(value, str):
        return ""
    typed = _yaml11_value(value)
    if isinstance(typed, bool):
        matches, wanted = kind == "boolean", "true or false"
    elif isinstance(typed, int):
        matches, wanted = kind in ("integer", "number"), "plain decimal digits"
    elif isinstance(typed, float):
        matches, wanted = kind == "number", "plain decimal digits"
    else:
        return ""
    return f" (YAML 1.1 would read {value} as {typed!r}; write {wanted})" if matches else ""




def _quoted_hint(value: Any) -> str:
    return " (it is in quotes: write it without them)" if isinstance(value, QuotedText) else ""


def _int(where: _Where, key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and not isinstance(value, QuotedText) and _DECIMAL.fullmatch(value.strip()):
        number = int(value)
    if number is None:
        hint = "" if where.hides_values else _quoted_hint(value) or _yaml11_hint(value, "integer")
        raise where.error(key, f"{where.show(key, value)} is not an integer >= {minimum}{hint}")
    if number < minimum:
        raise where.error(key, f"{_number_shown(where, key, value, number)} is not an integer >= {minimum}")
    if maximum is not None and number > maximum:
        raise where.error(key, f"{_number_shown(where, key, value, number)} is more than {maximum}, "
                               "the most this key allows")
    return number


def _number_shown(where: _Where, key: str, value: Any, number: Any) -> str:
    return where.show(key, value) if where.hides_values else str(number)


def _bool(where: _Where, key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and not isinstance(value, QuotedText) and value.strip() in _TRUE | _FALSE:
        return value.strip() in _TRUE
    hint = "" if where.hides_values else _quoted_hint(value) or _yaml11_hint(value, "boolean")
    raise where.error(key, f"{where.show(key, value)} is not true or false{hint}")


def _str(where: _Where, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(key, f"{where.show(key, value)} is not a non-empty string")
    return value


def _seconds(where: _Where, key: str, value: Any) -> float:
    number: float | None = None
    if ((isinstance(value, (int, float)) and not isinstance(value, bool))
            or (isinstance(value, str) and not isinstance(value, QuotedText)
                and _DECIMAL_NUMBER.fullmatch(value.strip()))):
        number = float(value)
    if number is None or not number > 0:
        shown = where.show(key, value)
        hint = ("" if number is not None or where.hides_values
                else _quoted_hint(value) or _yaml11_hint(value, "number"))
        raise where.error(key, f"{shown} is not a number of seconds > 0{hint}")
    if number > MAX_SECONDS:
        raise where.error(key, f"{_number_shown(where, key, value, value)} seconds is more than "
                               f"{MAX_SECONDS} (366 days)")
    return number


def _scalar(where: _Where, key: str, value: Any) -> str:
    """A value that must be one piece of text (an explode value, a metric's
    column, a Hive setting), not a list, a mapping or null."""
    if not isinstance(value, str):
        raise where.error(key, f"{where.show(key, value)} is not a single value")
    return value


def _inside(folder: Path, relative: str) -> Path | None:
    """The path of `relative` under `folder`, or None when it escapes it (symlinks included)."""
    candidate = (folder / relative).resolve()
    root = folder.resolve()
    if candidate != root and root not in candidate.parents:
        return None
    return candidate


# -------------------------------------------------------------- databases

def _expand_env(where: _Where, key: str, text: str) -> str:
    """${VAR} from the environment; inside a URL's user:password@ part the
    value is percent-encoded, so a password holding @ / : # ? % stays whole."""
    scheme, sep, rest = text.partition("://")
    userinfo_end = len(scheme) + len(sep) + rest.split("/", 1)[0].rfind("@") if sep else -1

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise where.error(key, f"environment variable ${{{name}}} is not set")
        value = os.environ[name]
        in_userinfo = sep and len(scheme) + len(sep) <= match.start() < userinfo_end
        return urllib.parse.quote(value, safe="") if in_userinfo else value

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", replace, text)


def is_memory_sqlite(url: str) -> bool:
    """`sqlite://`, `sqlite:///:memory:` or a `mode=memory` URI: a database
    that lives in the process, not in a file."""
    match = re.match(r"^sqlite(?:\+\w+)?://(?:/(?P<path>[^?]*))?(?:\?(?P<query>.*))?$", url)
    if not match:
        return False
    path, query = match.group("path") or "", match.group("query") or ""
    return path in ("", ":memory:") or bool(re.search(r"(?:^|&)mode=memory(?:&|$)", query)) or (
        path.startswith("file::memory:"))


def _resolve_sqlite_url(url: str, query_folder: Path) -> str:
    # sqlite:///relative.db is relative to the query folder, not the cwd;
    # sqlite:////abs.db and the in-memory forms are left alone.
    match = re.match(r"^(sqlite(?:\+\w+)?:///)([^/].*)$", url)
    if not match or is_memory_sqlite(url):
        return url
    prefix, rest = match.groups()
    path_part, sep, query = rest.partition("?")
    return f"{prefix}{(query_folder / path_part).resolve()}{sep}{query}"


_URL_EXAMPLE = "such as postgresql://reports@pg.example.org/analytics"


def _parse_url(where: _Where, raw: Any, query_folder: Path | None) -> str:
    """The URL with ${VAR} expanded; a relative sqlite path made relative to
    `query_folder` (None: left relative, for its user to resolve)."""
    if not isinstance(raw, str) or not raw.strip():
        raise where.error("url", f"{where.show('url', raw)} is not a URL ({_URL_EXAMPLE})")
    authority = raw.strip().partition("://")[2].split("/", 1)[0]
    if authority.count("@") > 1:
        # make_url would cut the password at its first @ and take the rest
        # for the host name, which then shows in every connection error.
        raise where.error("url", "the password holds an @: percent-encode it (%40) or put it in "
                                 "an environment variable, ${NAME}")
    url = _expand_env(where, "url", raw.strip())
    if query_folder is not None:
        url = _resolve_sqlite_url(url, query_folder)
    # The shape SQLAlchemy's make_url takes, checked here without importing
    # SQLAlchemy (0.1 s and 20 MB for every run, most of which run nothing);
    # the engine parses it fully on first use.
    match = _URL_SHAPE.match(url)
    host_port = match.group(1).rpartition("@")[2] if match else ""
    port = host_port.rpartition("]")[2].partition(":")[2] if host_port else ""
    if match is None or (port and not (port.isdigit() and int(port) <= 65535)):
        raise where.error("url", f"is not a SQLAlchemy URL ({_URL_EXAMPLE}; the value is not shown: "
                                 "it may hold a password)")
    return url


_URL_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://([^/?#]*)")


def _parse_database(config_path: Path, query_folder: Path, key: str, raw: Any,
                    warnings: list[str]) -> DatabaseConfig:
    where = _Where.database_(config_path, key)
    if not isinstance(raw, dict):
        raise where.error(None, f"{where.show(None, raw)} is not a mapping of keys")
    database_keys = frozenset(config_keys.database_keys())
    for name in raw:
        if name not in database_keys:
            warnings.append(where.warning(f"unknown key '{name}'{_nearest(name, database_keys)}; ignored"))
    values: dict[str, Any] = {"key": key}
    if "url" in raw:
        # Two descriptions of one server: which is meant is not ours to guess
        # (the URL would silently win). A hive URL may take its password from
        # a creds_file.
        engines = report_types.declarations()
        creds_ok = any(raw.get("engine") in engine.database_engines and engine.creds_file_with_url
                       for engine in engines)
        server_keys = ("host", "port", "db", "database",
                       *(name for engine in engines for name in engine.not_with_url), "creds_file")
        other = [name for name in server_keys if name in raw and not (name == "creds_file" and creds_ok)]
        if other:
            raise where.error(other[0], "cannot be given with 'url' (the URL names the server and "
                                        "database): give one or the other")
        values["url"] = _parse_url(where, raw["url"], query_folder)
    for name in ("host", "db", "timeout", "max_connections", "port"):
        if name in raw:
            values[name] = _plain(where, config_keys.DATABASE[name], raw[name])
    draft = DatabaseDraft(where, raw, values, query_folder)
    if "creds_file" in raw:
        values["creds_file"] = draft.path(_str(where, "creds_file", raw["creds_file"]))
    _parse_engine_keys(draft)
    if "seed" in raw:
        seed = _inside(query_folder, _str(where, "seed", raw["seed"]))
        if seed is None or not seed.is_file():
            raise where.error("seed", f"{where.show('seed', raw['seed'])} "
                              "is not a file inside the query folder")
        values["seed"] = seed
    engine = report_types.database_engine(values["engine"], values.get("url"))
    if engine is not None and engine.check_database is not None:
        engine.check_database(draft)
    return DatabaseConfig(**values)


@dataclass
class DatabaseDraft:
    """A database being read, as its engines' `parse_database` and
    `check_database` see it: its raw keys and the values read so far
    (`options` takes the engines' own keys). Its values are described in
    messages, never shown (they may hold a password)."""

    where: _Where
    raw: dict[str, Any]
    values: dict[str, Any]
    query_folder: Path

    def error(self, key: str | None, message: str) -> ConfigError:
        return self.where.error(key, message)

    def show(self, key: str | None, value: Any) -> str:
        return self.where.show(key, value)

    def path(self, text: str) -> Path:
        """A file or folder a key names: relative to the query folder, ~ expanded."""
        return self.query_folder / os.path.expanduser(text)

    def template_fields(self, key: str, text: str) -> set[str]:
        """The placeholders of a key's template text."""
        return _template_fields(self.where, key, text)

    def text(self, key: str, value: Any) -> str:
        return _str(self.where, key, value)

    def scalar(self, key: str, value: Any) -> str:
        return _scalar(self.where, key, value)


def _parse_engine_keys(draft: DatabaseDraft) -> None:
    """`engine:`, the engines' plain database keys as declared, `database`
    (db's other name), then the others by each engine's parse_database."""
    raw, values = draft.raw, draft.values
    declared = config_keys.database_keys()["engine"]
    values["engine"] = _plain(draft.where, declared, raw.get("engine", declared.default))
    options: dict[str, Any] = values.setdefault("options", {})
    engines = report_types.declarations()
    for engine in engines:
        for name, key in engine.database_keys.items():
            if key.kind in config_keys.PLAIN_KINDS and name in raw:
                options[name] = _plain(draft.where, key, raw[name])
    if "database" in raw:
        if "db" in raw:
            raise draft.error("database", "and 'db' are the same key: give one")
        values["db"] = _str(draft.where, "database", raw["database"])
    for engine in engines:
        if engine.parse_database is not None:
            engine.parse_database(draft)


def _template_fields(where: _Where, key: str, text: str) -> set[str]:
    try:
        return templates.fields(text)
    except templates.TemplateError as exc:
        raise where.error(key, f"{where.show(key, text)}: {exc}") from None


# ---------------------------------------------------------------- reports


# The dates `starts` may name: labels, file rows and the interval arithmetic
# all assume four-digit years well inside the calendar (strftime('%Y')
# gives '1' for year 1, which the tool's own date check then rejects).
EARLIEST_STARTS = date(1900, 1, 1)
LATEST_STARTS = date(9000, 1, 1)


def _parse_starts(where: _Where, value: Any) -> date:
    day: date | None = None
    if isinstance(value, datetime):
        day = value.date()
    elif isinstance(value, date):
        day = value
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d{4}-\d{1,2}-\d{1,2})(?:[ Tt].*)?", value)
        try:
            if match:
                day = datetime.strptime(match.group(1), "%Y-%m-%d").date()
        except ValueError:
            pass
    if day is None:
        raise where.error("starts", f"{_show(value)} is not a date YYYY-MM-DD")
    if not EARLIEST_STARTS <= day <= LATEST_STARTS:
        raise where.error("starts", f"{day.isoformat()} is not between {EARLIEST_STARTS} and {LATEST_STARTS}")
    return day


def _read_explode_values(where: _Where, query_folder: Path, placeholder: str,
                         raw: Any) -> list[str]:
    if isinstance(raw, list):
        for value in raw:
            if not isinstance(value, str):  # null, or a list or mapping inside the list
                raise where.error(f"explode_by.{placeholder}",
                                  f"{_show(value)} in {_show(raw)} is not a value "
                                  "(quote it, e.g. 'null', to mean the text)")
        return [value.strip() for value in raw]
    if not isinstance(raw, str):
        raise where.error(f"explode_by.{placeholder}", f"{_show(raw)} is not a list or file name")
    if "," in raw:
        return [value.strip() for value in raw.split(",")]
    token = raw.strip()
    path = _inside(query_folder, token)
    if path is None and "/" not in token and (query_folder / token).is_file():
        # A values file in the folder that is a symlink to a file outside it.
        raise where.error(f"explode_by.{placeholder}",
                          f"values file {token!r} points outside the query folder")
    if path is not None and path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise where.error(f"explode_by.{placeholder}", f"cannot read {path}: {exc}") from None
        return [line.strip() for line in lines if line.strip()]
    return [token]  # the original's rule: a token that names no file is the one value


def _parse_explode_by(where: _Where, query_folder: Path, raw: Any,
                      pattern: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict) or not raw:
        raise where.error("explode_by", f"{_show(raw)} is not a mapping placeholder -> values")
    safe = re.compile(pattern)
    explode: dict[str, tuple[str, ...]] = {}
    for placeholder in sorted(raw, key=str):
        name = str(placeholder)
        if not name.isidentifier() or name in templates.INTERVAL_PLACEHOLDERS:
            raise where.error("explode_by", f"{name!r} cannot be a placeholder name")
        values = _read_explode_values(where, query_folder, name, raw[placeholder])
        if not values or any(value == "" for value in values):
            raise where.error(f"explode_by.{name}", f"{_show(raw[placeholder])} gives an empty value")
        for value in values:
            if not safe.fullmatch(value):
                raise where.error(f"explode_by.{name}",
                                  f"value {value!r} is not allowed (must match {pattern})")
        twice = sorted({value for value in values if values.count(value) > 1})
        if twice:
            raise where.error(f"explode_by.{name}", f"lists the value {twice[0]!r} twice")
        explode[name] = tuple(values)
    return explode


def _parse_report_graphite(where: _Where, raw: Any) -> ReportGraphite:
    if not isinstance(raw, dict) or "path" not in raw or "metrics" not in raw:
        raise where.error("graphite", "needs 'path' and 'metrics'")
    path = _str(where, "graphite.path", raw["path"])
    metrics = raw["metrics"]
    if not isinstance(metrics, dict) or not metrics:
        raise where.error("graphite.metrics", f"{_show(metrics)} is not a mapping metric -> column")
    try:
        names = templates.fields(path)
    except templates.TemplateError:
        names = {"_metric"}  # validate names the broken path; the run fails its Graphite step
    if len(metrics) > 1 and "_metric" not in names:
        # Every metric of a row would go to the same path, each point
        # overwriting the one before it in Graphite.
        raise where.error("graphite.path", f"{path!r} has no {{_metric}}: its {len(metrics)} metrics "
                                           "would all be sent to the same path")
    return ReportGraphite(path=path, metrics={name: _str(where, f"graphite.metrics.{name}", column)
                                              for name, column in metrics.items()})


def _load_template(where: _Where, query_folder: Path, execute: str, suffix: str,
                   available: set[str]) -> str:
    path = _inside(query_folder, execute + suffix)
    if path is None:
        raise where.error("execute", f"{execute!r} points outside the query folder")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise where.error("execute", f"cannot read template {path}: "
                                     f"{getattr(exc, 'strerror', None) or exc}") from None
    try:
        fields = templates.fields(text)
    except templates.TemplateError as exc:
        raise where.error("execute", f"{path}: {exc}") from None
    unknown = sorted(fields - available)
    if unknown:
        raise where.error("execute", f"{path}: unknown placeholder {{{unknown[0]}}}"
                                     f"{_nearest(unknown[0], available)}")
    return text


def _find_script(where: _Where, query_folder: Path, execute: str) -> Path:
    path = _inside(query_folder, execute)
    if path is None:
        raise where.error("execute", f"{execute!r} points outside the query folder")
    if not path.is_file():
        raise where.error("execute", f"script {path} does not exist")
    if not os.access(path, os.X_OK):
        raise where.error("execute", f"script {path} is not executable (chmod +x)")
    return path


def _report_keys() -> frozenset[str]:
    """The report keys the core and the registered engines read (legacy keys aside)."""
    return frozenset(config_keys.report_keys()) - LEGACY_REPORT_KEYS


def __getattr__(name: str) -> Any:
    # Computed when asked for: they include the engines' keys, and an engine
    # may be registered after this module is imported.
    if name == "REPORT_KEYS":
        return _report_keys()
    if name == "DATABASE_KEYS":
        return frozenset(config_keys.database_keys())
    if name == "REPORT_TYPES":
        return report_types.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class ReportDraft:
    """A report being read, as its engine's `check_report` sees it: the
    merged raw keys, the values parsed so far (`options` takes the engine's
    own keys), the folder's databases; `check` records a problem and goes on."""

    where: _Where
    raw: dict[str, Any]
    values: dict[str, Any]
    databases: dict[str, DatabaseConfig]
    database_errors: dict[str, ConfigError]
    explode_ok: bool  # explode_by parsed (else its placeholders are unknown)
    check: Callable[[str, Callable[[], Any]], bool]

    def error(self, key: str | None, message: str) -> ConfigError:
        return self.where.error(key, message)

    def show(self, value: Any) -> str:
        return _show(value)

    def database(self, db: Any) -> DatabaseConfig:
        """The database a `db` value names; raises ConfigError when it names
        none, or a broken one."""
        if not isinstance(db, str):
            raise self.error("db", f"{_show(db)} is not a key of 'databases'")
        if db in self.database_errors:
            raise self.error("db", f"database {db!r} is broken (see its own error)")
        if db not in self.databases:
            raise self.error("db", f"{_show(db)} is not a key of 'databases'"
                                   f"{_nearest(db, set(self.databases))}")
        return self.databases[db]


class ReportErrors(Exception):
    """Every problem of one report, so that `validate` can list them all."""

    def __init__(self, errors: list[ConfigError]):
        super().__init__(str(errors[0]))
        self.errors = errors


def _parse_timezone(where: _Where, value: Any, granularity: Any) -> str:
    name = _str(where, "timezone", value)
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise where.error("timezone", f"{name!r} is not an IANA time zone (e.g. Europe/Paris)") from None
    if granularity == "hours" and name != "UTC":
        # Local hours repeat at the autumn change; hourly labels stay in UTC.
        raise where.error("timezone", f"{name!r}: hourly reports run in UTC")
    return name


def _parse_pivot(where: _Where, value: Any) -> Pivot:
    if not isinstance(value, dict) or not {"index", "columns", "values"} <= set(value):
        raise where.error("pivot", f"{_show(value)} needs index, columns and values")
    unknown = set(value) - {"index", "columns", "values", "fill"}
    if unknown:
        raise where.error("pivot", f"unknown key {sorted(unknown)[0]!r} (index, columns, values, fill)")
    names = {key: _str(where, f"pivot.{key}", value[key]) for key in ("index", "columns", "values")}
    fill = value.get("fill")
    return Pivot(fill="" if fill is None else _scalar(where, "pivot.fill", fill), **names)


def _parse_ready(where: _Where, query_folder: Path, value: Any, engine: report_types.EngineKeys,
                 available: set[str]) -> ReadyCheck:
    kinds = report_types.ready_when_kinds()
    if not isinstance(value, dict) or len(value) != 1 or not set(value) <= set(kinds):
        raise where.error("ready_when", f"{_show(value)} needs exactly one of {', '.join(kinds)}")
    kind, text = next(iter(value.items()))
    text = _str(where, f"ready_when.{kind}", text)
    if kind == "script":
        return ReadyCheck(script_path=_find_script(where, query_folder, text))
    if kind not in engine.ready_when:
        raise where.error(f"ready_when.{kind}", engine.ready_when_refused.get(
            kind, f"{engine.type} reports cannot check ready_when {kind}"))
    try:
        unknown = sorted(templates.fields(text) - available)
    except templates.TemplateError as exc:
        raise where.error(f"ready_when.{kind}", str(exc)) from None
    if unknown:
        raise where.error(f"ready_when.{kind}", f"unknown placeholder {{{unknown[0]}}}")
    if kind == "partition" and not re.fullmatch(r"[\w.]+(/\w+=[^/]+)+", text):
        raise where.error("ready_when.partition", f"{text!r} is not db.table/key=value/...")
    return ReadyCheck(**{kind: text})  # type: ignore[arg-type]  # query or partition: text


# Intervals of each granularity in a year, to bound max_data_points.
_PER_YEAR = {Granularity.HOURS: 365.2425 * 24, Granularity.DAYS: 365.2425,
             Granularity.WEEKS: 365.2425 / 7, Granularity.MONTHS: 12, Granularity.QUARTERS: 4,
             Granularity.YEARS: 1}


def _parse_max_data_points(where: _Where, value: Any, granularity: Granularity | None) -> int:
    """At most MAX_YEARS of intervals: more reaches back past any date a
    report can start on, towards the calendar's start."""
    count = _int(where, "max_data_points", value, 1)
    granularity = granularity or Granularity.HOURS  # unknown: its own error; allow the most
    limit = int(MAX_YEARS * _PER_YEAR[granularity])
    if count > limit:
        raise where.error("max_data_points", f"{count} {granularity.value} span more than {MAX_YEARS} "
                                             f"years; at most {limit}")
    return count


def _parse_on_query_change(where: _Where, value: Any) -> QueryChange:
    if value in ("keep", "rerun"):
        return QueryChange(policy=str(value))
    if isinstance(value, dict) and set(value) == {"rerun_since"}:
        since = value["rerun_since"]
        day: date | None = since if isinstance(since, date) and not isinstance(since, datetime) else None
        if isinstance(since, str) and re.fullmatch(r"\s*\d{4}-\d{1,2}-\d{1,2}\s*", since):
            try:
                day = datetime.strptime(since.strip(), "%Y-%m-%d").date()
            except ValueError:
                day = None
        if day is None:
            raise where.error("on_query_change.rerun_since", f"{_show(since)} is not a date YYYY-MM-DD")
        return QueryChange(policy="rerun", since=day)
    raise where.error("on_query_change", f"{_show(value)} is not keep, rerun or {{rerun_since: YYYY-MM-DD}}")


def _parse_batch(where: _Where, value: Any) -> int | str:
    if value == "month":
        return value
    try:
        return _int(where, "batch", value, 1)
    except ConfigError:
        raise where.error("batch", f"{_show(value)} is not a number of intervals >= 1 or 'month'") from None


def _parse_schedule(where: _Where, value: Any) -> str:
    text = _str(where, "schedule", value)
    from croniter import croniter  # 40 ms to import; only `schedule:` needs it
    if not croniter.is_valid(text):
        raise where.error("schedule", f"{text!r} is not a cron expression (e.g. '0 2 * * *')")
    return text


# Parsed before the others (type, granularity, starts) or after them, by
# rules of their own (what the report's type needs).
_REPORT_KEYS_APART = frozenset({"type", "granularity", "starts", "explode_value_pattern", "explode_by",
                                "graphite", "execute", "db", "ready_when", "table", "prometheus"})


def _given(declared: Key, raw: dict) -> bool:
    """Whether a key counts as given: present, and not null unless null is an error for it."""
    return declared.name in raw and (raw[declared.name] is not None or not declared.null_is_unset)


def _plain(where: _Where, declared: Key, value: Any) -> Any:
    """A value of a plain kind (config_keys.PLAIN_KINDS), checked as declared."""
    name = declared.name
    if declared.kind == "integer":
        return _int(where, name, value, declared.minimum or 0, declared.maximum)
    if declared.kind == "boolean":
        return _bool(where, name, value)
    if declared.kind == "text":
        return _str(where, name, value)
    if declared.kind == "seconds":
        return _seconds(where, name, value)
    if declared.kind == "choice":
        if not isinstance(value, str) or value not in declared.choices:
            choices = declared.choices
            wanted = (f"{choices[0]} or {choices[1]}" if len(choices) == 2
                      else f"one of {', '.join(choices)}")
            raise where.error(name, f"{where.show(name, value)} is not {wanted}")
        return str(value)
    raise AssertionError(f"{name}: kind {declared.kind!r} has a parser of its own")


def _parse_report(config_path: Path, query_folder: Path, key: str, raw: dict,
                  databases: dict[str, DatabaseConfig],
                  database_errors: dict[str, ConfigError]) -> ReportConfig:
    """A report's settings; raises ReportErrors with every problem found."""
    where = _Where.report_(config_path, key)
    values: dict[str, Any] = {"key": key}
    errors: list[ConfigError] = []

    def check(name: str, parse: Callable[[], Any]) -> bool:
        try:
            values[name] = parse()
            return True
        except ConfigError as exc:
            errors.append(exc)
            return False

    def required(name: str, hint: str) -> Any:
        if name not in raw:
            raise where.error(name, f"is required ({hint})")
        return raw[name]

    def granularity() -> Granularity:
        value = required("granularity", "days, weeks or months")
        return Granularity(_plain(where, config_keys.REPORT["granularity"], value))

    def report_type() -> str:
        declared = config_keys.report_keys()["type"]
        name = _plain(where, declared, raw.get("type", declared.default))
        try:
            report_types.declaration(name)
        except report_types.UnknownReportType as exc:
            raise where.error("type", str(exc)) from None
        return name

    def explode_pattern() -> str:
        pattern = _str(where, "explode_value_pattern", raw["explode_value_pattern"])
        try:
            re.compile(pattern)
        except re.error as exc:
            raise where.error("explode_value_pattern",
                              f"{pattern!r} is not a regular expression: {exc}") from None
        return pattern

    if not REPORT_KEY_PATTERN.fullmatch(key):
        errors.append(where.error(None, f"the report name must match {DEFAULT_EXPLODE_VALUE_PATTERN} "
                                        "(it becomes a file name)"))
    type_ok = check("type", report_type)
    check("granularity", granularity)
    check("starts", lambda: _parse_starts(where, required("starts", "YYYY-MM-DD")))
    shaped: dict[str, Callable[[Any], Any]] = {  # keys with a parser of their own
        "max_data_points": lambda value: _parse_max_data_points(where, value, values.get("granularity")),
        "schedule": lambda value: _parse_schedule(where, value),
        "batch": lambda value: _parse_batch(where, value),
        "timezone": lambda value: _parse_timezone(where, value, raw.get("granularity")),
        "pivot": lambda value: _parse_pivot(where, value),
        "on_query_change": lambda value: _parse_on_query_change(where, value),
    }
    for name, declared in config_keys.REPORT.items():
        if name in _REPORT_KEYS_APART or declared.legacy or not _given(declared, raw):
            continue
        parse = shaped.get(name) or functools.partial(_plain, where, declared)
        check(name, functools.partial(parse, raw[name]))
    pattern_ok = True
    if "explode_value_pattern" in raw:
        pattern_ok = check("explode_value_pattern", explode_pattern)
    explode_ok = pattern_ok
    if raw.get("explode_by") is not None and pattern_ok:
        pattern = values.pop("explode_value_pattern", DEFAULT_EXPLODE_VALUE_PATTERN)
        explode_ok = check("explode_by", lambda: _parse_explode_by(where, query_folder,
                                                                   raw["explode_by"], pattern))
    values.pop("explode_value_pattern", None)
    if raw.get("graphite") is not None:
        check("graphite", lambda: _parse_report_graphite(where, raw["graphite"]))
    if raw.get("table") is not None:
        check("table", lambda: _parse_report_table(where, raw["table"]))
    if raw.get("prometheus") is not None and explode_ok:
        check("prometheus", lambda: _parse_report_prometheus(where, raw["prometheus"],
                                                             values.get("explode_by", {})))
    execute_ok = check("execute", lambda: _str(where, "execute", raw.get("execute", key)))

    if type_ok and execute_ok:
        execute = values["execute"]
        # With a broken explode_by, its placeholders are unknown: do not
        # report them as unknown placeholders of the template as well.
        available = set(templates.INTERVAL_PLACEHOLDERS) | set(values.get("explode_by", {}))
        if not explode_ok:
            available |= {str(name) for name in raw.get("explode_by") or {}} if isinstance(
                raw.get("explode_by"), dict) else set()
        engine = report_types.declaration(values["type"])
        options: dict[str, Any] = {}
        for name, declared in engine.report_keys.items():
            if declared.kind in config_keys.PLAIN_KINDS and _given(declared, raw):
                try:
                    options[name] = _plain(where, declared, raw[name])
                except ConfigError as exc:
                    errors.append(exc)
        values["options"] = options
        if engine.check_report is not None:
            engine.check_report(ReportDraft(where, raw, values, databases, database_errors,
                                            explode_ok, check))
        suffix = engine.template_suffix
        if suffix is not None:
            check("template", lambda: _load_template(where, query_folder, execute, suffix, available))
        else:
            check("script_path", lambda: _find_script(where, query_folder, execute))
        if raw.get("ready_when") is not None:
            check("ready_when", lambda: _parse_ready(where, query_folder, raw["ready_when"],
                                                     engine, available))

    if errors:
        raise ReportErrors(errors)
    return ReportConfig(**values)


# ----------------------------------------------------------------- folder

TOP_LEVEL_KEYS = frozenset(config_keys.TOP_LEVEL)
GRAPHITE_KEYS = frozenset(config_keys.GRAPHITE)


def _parse_graphite(config_path: Path, query_folder: Path, raw: Any,
                    warnings: list[str]) -> GraphiteConfig:
    where = _Where(config_path, "graphite")
    if not isinstance(raw, dict):
        raise where.error(None, f"{_show(raw)} is not a mapping")
    for name in raw:
        if name not in GRAPHITE_KEYS:
            warnings.append(where.warning(f"unknown key '{name}'{_nearest(name, GRAPHITE_KEYS)}; ignored"))
    if not raw.get("host"):
        raise where.error("host", "is required (the Graphite server's name)")
    host = _str(where, "host", raw["host"])
    port = _plain(where, config_keys.GRAPHITE["port"], raw.get("port", config_keys.GRAPHITE["port"].default))
    prefix = raw.get("prefix") or ""
    if not isinstance(prefix, str):
        raise where.error("prefix", f"{_show(prefix)} is not a string")
    lookups: dict[str, Path] = {}
    raw_lookups = raw.get("lookups") or {}
    if not isinstance(raw_lookups, dict):
        raise where.error("lookups", f"{_show(raw_lookups)} is not a mapping placeholder -> file")
    for placeholder, file_name in raw_lookups.items():
        path = _inside(query_folder, _str(where, f"lookups.{placeholder}", file_name))
        if path is None:
            raise where.error(f"lookups.{placeholder}", f"{file_name!r} points outside the query folder")
        lookups[str(placeholder)] = path
    return GraphiteConfig(host=host, port=port, prefix=prefix, lookups=lookups)


# ------------------------------------------------------------- publishers
#
# The top-level `tables:` and `prometheus:` sections and the report keys
# `table:` and `prometheus:`, declared in their publisher modules (see
# config_keys.py). A broken section is a config error; the reports still
# run and nothing is published there.


def _section_error(where: _Where, key_lines: KeyLines, name: str, key: str | None,
                   message: str) -> ConfigError:
    error = where.error(key, message)
    error.line = key_lines.get(("top", name, None))
    return error


def _parse_publisher_sections(config_path: Path, query_folder: Path, raw: dict,
                              duplicates: list[_Duplicate], key_lines: KeyLines,
                              errors: list[ConfigError], warnings: list[str]) -> dict[str, Any]:
    """{"tables": TablesSettings | None, "prometheus": PrometheusSettings | None}."""
    parsers: dict[str, Callable[[_Where, dict], Any]] = {
        "tables": _parse_tables,
        "prometheus": _parse_prometheus,
    }
    parsed: dict[str, Any] = {}
    for name, parse in parsers.items():
        parsed[name] = None
        section = raw.get(name)
        if section is None:
            continue
        # Its values may hold a password (a URL, a header's token): never shown.
        where = _Where(config_path, name, hides_values=True)
        twice = [d for d in duplicates if d.path[:1] == (name,)]
        if twice:
            errors.append(_duplicate_error(config_path, twice[0])[2])
            continue
        if not isinstance(section, dict):
            errors.append(_section_error(where, key_lines, name, None,
                                         f"{_describe(section)} is not a mapping"))
            continue
        known = config_keys.PUBLISHER_SECTIONS[name]
        for key in section:
            if key not in known:
                warnings.append(where.warning(f"unknown key '{key}'{_nearest(key, set(known))}; ignored"))
        try:
            parsed[name] = parse(where, section)
        except ConfigError as exc:
            exc.line = exc.line or key_lines.get(("top", name, None))
            errors.append(exc)
    return parsed


def _parse_tables(where: _Where, raw: dict) -> TablesSettings:
    if raw.get("url") is None:
        raise where.error("url", f"is required ({_URL_EXAMPLE.replace('analytics', 'metrics')})")
    # A relative sqlite:///metrics.db is relative to the output folder (the
    # tables publisher resolves it): published tables are outputs.
    url = _parse_url(where, raw["url"], None)
    schema = None
    if raw.get("schema") is not None:
        schema = _plain(where, config_keys.TABLES["schema"], raw["schema"])
    return TablesSettings(url=url, schema=schema)


def _parse_prometheus(where: _Where, raw: dict) -> PrometheusSettings:
    if raw.get("remote_write_url") is None:
        raise where.error("remote_write_url", "is required (such as "
                                              "http://127.0.0.1:8428/api/v1/write)")
    url = _expand_env(where, "remote_write_url", _str(where, "remote_write_url", raw["remote_write_url"]))
    if not re.match(r"(?i)https?://[^/?#\s]+", url.strip()):
        raise where.error("remote_write_url", "is not an http:// or https:// URL (such as "
                                              "http://127.0.0.1:8428/api/v1/write)")
    values: dict[str, Any] = {"remote_write_url": url.strip()}
    if raw.get("read_url") is not None:
        read_url = _expand_env(where, "read_url", _str(where, "read_url", raw["read_url"])).strip()
        if not re.match(r"(?i)https?://[^/?#\s]+", read_url):
            raise where.error("read_url", "is not an http:// or https:// URL (such as http://127.0.0.1:9090)")
        values["read_url"] = read_url.rstrip("/")
    for name in ("basic_auth_user", "basic_auth_password_env", "timeout"):
        if raw.get(name) is not None:
            values[name] = _plain(where, config_keys.PROMETHEUS[name], raw[name])
    if "basic_auth_password_env" in values and "basic_auth_user" not in values:
        raise where.error("basic_auth_password_env", "needs basic_auth_user")
    headers = raw.get("headers")
    if headers is not None:
        if not isinstance(headers, dict):
            raise where.error("headers", f"{_describe(headers)} is not a mapping name -> value")
        for name, value in headers.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", str(name)):
                raise where.error(f"headers.{name}", "is not an HTTP header name")
            if not isinstance(value, str) or "\n" in value or "\r" in value:
                raise where.error(f"headers.{name}", f"{_describe(value)} is not one line of text")
        values["headers"] = {str(name): value for name, value in headers.items()}
    return PrometheusSettings(**values)


def _publisher_warnings(config_path: Path, key: str, merged: dict, raw: dict) -> list[ConfigWarning]:
    """A report's publisher key without the top-level section it needs."""
    where = _Where.report_(config_path, key)
    found = []
    if merged.get("prometheus") is not None and raw.get("prometheus") is None:
        found.append(where.warning("has a 'prometheus' section but the config has no top-level "
                                   "'prometheus' (remote_write_url): nothing is sent"))
    if isinstance(merged.get("table"), str) and raw.get("tables") is None:
        found.append(where.warning("has a 'table' but the config has no top-level 'tables' (url): "
                                   "nothing is published"))
    return found


def _parse_report_table(where: _Where, raw: Any) -> str | bool:
    if raw is False or (isinstance(raw, str) and not isinstance(raw, QuotedText)
                        and raw.strip() in _FALSE):
        return False
    if isinstance(raw, str) and not isinstance(raw, QuotedText) and raw.strip() in _TRUE:
        return True
    name = _str(where, "table", raw).strip()
    if len(name.encode("utf-8")) > tables_publisher.MAX_NAME_BYTES:
        raise where.error("table", f"{name[:20]!r}...: longer than {tables_publisher.MAX_NAME_BYTES} "
                                   "bytes (PostgreSQL would cut it)")
    return name


def _parse_report_prometheus(where: _Where, raw: Any,
                             explode_by: dict[str, tuple[str, ...]]) -> PrometheusTarget:
    """Names are checked here; whether a label or a metric's column is a
    result column can only be told from the results (at publish)."""
    if not isinstance(raw, dict) or raw.get("metrics") is None:
        raise where.error("prometheus", "needs 'metrics' (metric name -> column)")
    unknown = sorted(set(raw) - {"metrics", "labels"})
    if unknown:
        raise where.error(f"prometheus.{unknown[0]}", "is not a key of a report's prometheus "
                                                      "section (metrics, labels)")
    metrics = raw["metrics"]
    if not isinstance(metrics, dict) or not metrics:
        raise where.error("prometheus.metrics", f"{_show(metrics)} is not a mapping metric -> column")
    for name in metrics:
        problem = prometheus_publisher.metric_name_problem(str(name))
        if problem:
            raise where.error(f"prometheus.metrics.{name}", problem)
    columns = {str(name): _str(where, f"prometheus.metrics.{name}", column).strip()
               for name, column in metrics.items()}
    labels: list[str] | None = None
    if raw.get("labels") is not None:
        if isinstance(raw["labels"], str):
            raw_labels: Any = [part.strip() for part in raw["labels"].split(",")]
        else:
            raw_labels = raw["labels"]
        if not isinstance(raw_labels, list):
            raise where.error("prometheus.labels", f"{_show(raw['labels'])} is not a list of names")
        labels = []
        for label in raw_labels:
            text = _scalar(where, "prometheus.labels", label).strip()
            problem = prometheus_publisher.label_name_problem(text)
            if problem:
                raise where.error("prometheus.labels", problem)
            if text in labels:
                raise where.error("prometheus.labels", f"lists {text!r} twice")
            labels.append(text)
    else:
        for name in explode_by:  # the default labels: every explode key
            problem = prometheus_publisher.label_name_problem(name)
            if problem:
                raise where.error("prometheus.labels", f"explode key {problem}; give 'labels' without it")
    return PrometheusTarget(metrics=columns, labels=tuple(labels) if labels is not None else None)


def _check_shared_tables(config_path: Path, reports: dict[str, ReportConfig],
                         errors: list[ConfigError], broken: set[str]) -> None:
    """Two reports in one table would replace each other's rows: the later one is an error."""
    owners: dict[str, str] = {}
    for key, report in list(reports.items()):
        name = report.table_name
        if name is None:
            continue
        folded = name.lower()  # databases compare names case-insensitively (unquoted)
        if folded in owners:
            errors.append(_Where.report_(config_path, key).error(
                "table", f"{name!r} is also the table of report {owners[folded]!r}: give one of "
                         "them another 'table'"))
            del reports[key]
            broken.add(key)
        else:
            owners[folded] = key


# ------------------------------------------------------------------- YAML

# Aliases share nodes, so a short file can stand for a huge one ("billion
# laughs"); the values below are at most this many nodes once expanded.
MAX_YAML_NODES = 1_000_000
_TEXT_TAGS = ("str", "int", "float", "bool", "timestamp", "value", "binary")


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 5x faster on big folders


class TextLoader(_BaseLoader):
    """SafeLoader that keeps every scalar as the text written, null aside
    (see `typed values` above), mapping keys included: `no:` stays 'no',
    `1:` stays '1'. Merge keys (`<<: *defaults`) work as in YAML."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[str, Any]:
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
        mapping = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a name, not a list or a mapping", key_node.start_mark)
            mapping[key_node.value] = self.construct_object(value_node, deep=deep)
        return mapping


TextLoader.yaml_implicit_resolvers = {}
TextLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"),
                              ["~", "n", "N", ""])
TextLoader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])
class QuotedText(str):
    """A scalar written in quotes: text the writer meant as text, so never
    taken for a number or a boolean (`lag: "3600"` is refused, as a JSON
    Schema and an editor refuse it)."""


def _construct_text(loader: yaml.BaseLoader, node: yaml.ScalarNode) -> str:
    text = loader.construct_scalar(node)
    return QuotedText(text) if getattr(node, "style", None) in ("'", '"') else text


for _tag in _TEXT_TAGS:  # also what an explicit !!int 07 or !!bool yes says: the text
    TextLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _construct_text)


@dataclass(frozen=True)
class _Duplicate:
    """A key given twice in one mapping: YAML would silently keep the last."""

    path: tuple[str, ...]  # the keys leading to the mapping
    key: str
    first_line: int
    second_line: int


def _expanded_size(root: yaml.Node, config_path: Path) -> int:
    """Nodes in the document once aliases are expanded (memoized, so linear
    in the file); a recursive alias is an error."""
    sizes: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = ([child for pair in node.value for child in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            continue
        if id(node) in entered:
            raise ConfigError(f"{config_path}: line {node.start_mark.line + 1}: invalid YAML: "
                              "an alias refers to the value that holds it",
                              file=config_path, line=node.start_mark.line + 1, line_shown=True)
        entered.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def _duplicates(root: yaml.Node) -> list[_Duplicate]:
    """Keys given twice in any mapping, at any depth, under every path an
    alias reaches them by (merged keys, `<<`, may be overridden: not duplicates)."""
    found: list[_Duplicate] = []
    stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, (*path, f"[{index}]")) for index, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                line = key_node.start_mark.line + 1
                if name in seen:
                    found.append(_Duplicate(path, name, seen[name], line))
                else:
                    seen[name] = line
                stack.append((value_node, (*path, name)))
    return sorted(found, key=lambda duplicate: (duplicate.second_line, duplicate.path))


def _yaml_error(config_path: Path, text: str, exc: yaml.YAMLError) -> ConfigError:
    """One line, file and line number first."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    number = mark.line + 1 if mark is not None else None
    if number is None and isinstance(exc, yaml.reader.ReaderError):
        number = text.count("\n", 0, exc.position) + 1
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    lines = text.split("\n")
    if number is not None:
        tabbed = [index + 1 for index, line in enumerate(lines[:number])
                  if "\t" in line[:len(line) - len(line.lstrip(" \t"))]]
        if tabbed and ("tab" in problem or tabbed[-1] == number or "cannot start any token" in problem):
            number = number if number in tabbed else tabbed[-1]
            problem = "a tab in the indentation: tabs are not allowed in YAML indentation, use spaces"
    where = f" line {number}" if number is not None else ""
    return ConfigError(_clean(f"{config_path}:{where}: invalid YAML: {problem}"), file=config_path,
                       line=number, line_shown=True)


KeyLines = dict[tuple[str, str, str | None], int]


def _key_lines(root: yaml.Node) -> KeyLines:
    """(kind, name, key or None) -> 1-based line, from the YAML node marks:
    ('top', section, None), ('report' or 'database', name, None) and
    ('report' or 'database', name, key); a key given twice: its last line."""
    lines: KeyLines = {}
    if not isinstance(root, yaml.MappingNode):
        return lines
    for section_key, section in root.value:
        if not isinstance(section_key, yaml.ScalarNode):
            continue
        lines[("top", str(section_key.value), None)] = section_key.start_mark.line + 1
        if section_key.value not in ("reports", "databases") or not isinstance(section, yaml.MappingNode):
            continue
        kind = "report" if section_key.value == "reports" else "database"
        for name_node, body in section.value:
            lines[(kind, str(name_node.value), None)] = name_node.start_mark.line + 1
            if isinstance(body, yaml.MappingNode):
                for key_node, _ in body.value:
                    lines[(kind, str(name_node.value), str(key_node.value))] = key_node.start_mark.line + 1
    return lines


def _read_yaml(config_path: Path, text: str) -> tuple[Any, list[_Duplicate], KeyLines]:
    loader = TextLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, [], {}
        if _expanded_size(root, config_path) > MAX_YAML_NODES:
            raise ConfigError(f"{config_path}: invalid YAML: its aliases expand to more than "
                              f"{MAX_YAML_NODES} values")
        duplicates = _duplicates(root)  # before construction: merging rewrites the nodes
        key_lines = _key_lines(root)
        return loader.construct_document(root), duplicates, key_lines
    except yaml.YAMLError as exc:
        raise _yaml_error(config_path, text, exc) from None
    except RecursionError:  # nesting deeper than the pure-Python parser can follow
        raise ConfigError(f"{config_path}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def _duplicate_error(config_path: Path, duplicate: _Duplicate) -> tuple[str | None, str | None, ConfigError]:
    """(report or None, database or None, the error) for a key given twice."""
    path, key = duplicate.path, duplicate.key
    lines = f"lines {duplicate.first_line} and {duplicate.second_line}"
    for section, kind in (("reports", "report"), ("databases", "database")):
        if path[:1] != (section,):
            continue
        if len(path) == 1:
            where = (_Where.report_(config_path, key) if kind == "report"
                     else _Where.database_(config_path, key))
            error = where.error(None, f"is defined twice in '{section}' ({lines}); keep one")
            return (key, None, error) if kind == "report" else (None, key, error)
        where = (_Where.report_(config_path, path[1]) if kind == "report"
                 else _Where.database_(config_path, path[1]))
        error = where.error(".".join((*path[2:], key)), f"is given twice ({lines}); keep one")
        return (path[1], None, error) if kind == "report" else (None, path[1], error)
    dotted = ".".join((*path, key))
    return None, None, ConfigError(_clean(f"{config_path}: line {duplicate.second_line}: key '{dotted}' "
                                          f"is given twice ({lines}); keep one"),
                                   file=config_path, section=path[0] if path else None, key=dotted,
                                   line=duplicate.second_line, line_shown=True)


# Report keys become file and folder names under the output folder.
REPORT_KEY_PATTERN = re.compile(DEFAULT_EXPLODE_VALUE_PATTERN)


def load(query_folder: str | Path, config_path: str | Path | None = None) -> FolderConfig:
    """Read and validate a query folder's configuration.

    Raises ConfigError for problems that stop the whole folder (unreadable
    file, bad YAML, no reports); a broken report or database only lands in
    FolderConfig.errors.
    """
    query_folder = Path(query_folder)
    if not query_folder.is_dir():
        raise ConfigError(f"{query_folder}: query folder does not exist")
    config_path = Path(config_path) if config_path else query_folder / "config.yaml"
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"{config_path}: cannot read config: {reason}") from None
    raw, duplicates, key_lines = _read_yaml(config_path, text)
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: expected a mapping with a 'reports' key")
    if not isinstance(raw.get("reports"), dict) or not raw["reports"]:
        raise ConfigError(f"{config_path}: key 'reports': is required and must map report names to settings")

    warnings: list[str] = []
    errors: list[ConfigError] = []
    # A key given twice breaks what holds it: its report, its database, the
    # graphite section, else the whole folder (which definition was meant
    # is not ours to guess).
    report_duplicates: dict[str, list[ConfigError]] = {}
    database_duplicates: dict[str, list[ConfigError]] = {}
    graphite_duplicate: ConfigError | None = None
    for duplicate in duplicates:
        report, database, error = _duplicate_error(config_path, duplicate)
        if report is not None:
            report_duplicates.setdefault(report, []).append(error)
        elif database is not None:
            database_duplicates.setdefault(database, []).append(error)
        elif duplicate.path[:1] == ("graphite",):
            graphite_duplicate = graphite_duplicate or error
        elif duplicate.path[:1] in (("tables",), ("prometheus",)):
            pass  # breaks that section: _parse_publisher_sections
        else:
            raise error
    for name in raw:
        if name not in TOP_LEVEL_KEYS:
            warnings.append(ConfigWarning(f"{config_path}: unknown top-level key '{name}'"
                                          f"{_nearest(name, TOP_LEVEL_KEYS)}; ignored", file=config_path,
                                          key=str(name)))

    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(_clean(f"{config_path}: key 'defaults': {_show(defaults)} is not a mapping"))
    report_keys = _report_keys()
    known_report_keys = report_keys | LEGACY_REPORT_KEYS
    for name in defaults:
        if name not in known_report_keys:
            warnings.append(_Where(config_path, "defaults").warning(
                f"unknown key '{name}'{_nearest(name, report_keys)}; ignored"))

    databases: dict[str, DatabaseConfig] = {}
    database_errors: dict[str, ConfigError] = {}
    raw_databases = raw.get("databases") or {}
    if not isinstance(raw_databases, dict):
        raise ConfigError(f"{config_path}: key 'databases': {_describe(raw_databases)} is not a mapping")
    for key, raw_db in raw_databases.items():
        if key in database_duplicates:
            database_errors[key] = database_duplicates[key][0]
            errors.extend(database_duplicates[key])
            continue
        try:
            databases[key] = _parse_database(config_path, query_folder, key, raw_db, warnings)
        except ConfigError as exc:
            database_errors[key] = exc
            errors.append(exc)

    graphite = None
    if graphite_duplicate is not None:
        errors.append(graphite_duplicate)
    elif raw.get("graphite") is not None:
        try:
            graphite = _parse_graphite(config_path, query_folder, raw["graphite"], warnings)
        except ConfigError as exc:  # the reports still run; nothing is sent
            errors.append(exc)

    publishers = _parse_publisher_sections(config_path, query_folder, raw, duplicates, key_lines,
                                           errors, warnings)

    reports: dict[str, ReportConfig] = {}
    broken: set[str] = set()
    for key, raw_report in raw["reports"].items():
        if key in report_duplicates:
            errors.extend(report_duplicates[key])
            broken.add(key)
            continue
        if not isinstance(raw_report, dict):
            errors.append(_Where.report_(config_path, key).error(
                None, f"{_show(raw_report)} is not a mapping of keys"))
            broken.add(key)
            continue
        for name in raw_report:
            if name not in known_report_keys:
                warnings.append(_Where.report_(config_path, key).warning(
                    f"unknown key '{name}'{_nearest(name, report_keys)}; ignored"))
        merged = {**defaults, **raw_report}
        if merged.get("graphite") is not None and raw.get("graphite") is None:
            warnings.append(_Where.report_(config_path, key).warning(
                "has a 'graphite' section but the config has no top-level 'graphite' (host, port): "
                "nothing is sent"))
        warnings.extend(_publisher_warnings(config_path, key, merged, raw))
        try:
            reports[key] = _parse_report(config_path, query_folder, key, merged,
                                         databases, database_errors)
        except ReportErrors as exc:
            errors.extend(exc.errors)
            broken.add(key)
    if publishers.get("tables") is not None:
        _check_shared_tables(config_path, reports, errors, broken)

    for problem in (*errors, *warnings):
        if isinstance(problem, _Located):
            _set_line(problem, key_lines)
    return FolderConfig(config_path=config_path, query_folder=query_folder, reports=reports,
                        databases=databases, graphite=graphite, errors=errors, warnings=warnings,
                        broken_reports=broken, key_lines=key_lines, **publishers)


def _set_line(problem: _Located, key_lines: dict[tuple[str, str, str | None], int]) -> None:
    """The line of the key a problem names (its first part: `explode_by` of
    `explode_by.wiki`), else of its report or database."""
    if problem.line is not None:
        return
    kind, name = ("report", problem.report) if problem.report is not None else ("database", problem.database)
    if name is None:
        return
    first = (problem.key or "").split(".")[0] or None
    problem.line = key_lines.get((kind, name, first)) or key_lines.get((kind, name, None))


def check_known_reports(folder: FolderConfig, keys: Iterable[str]) -> None:
    """Raise ConfigError for the first of `keys` that names no report, valid
    or broken (a broken one is the caller's to skip or to explain)."""
    for key in keys:
        if key not in folder.reports and key not in folder.broken_reports:
            find_report(folder, key)


def find_report(folder: FolderConfig, key: str) -> ReportConfig:
    """The report named `key`. Raises ConfigError: the report's own first
    error when it is broken, else that the folder has no such report."""
    if key in folder.reports:
        return folder.reports[key]
    if key in folder.broken_reports:
        own = [error for error in folder.errors if error.report == key]
        raise own[0] if own else ConfigError(f"{folder.config_path}: report {key!r} has config errors",
                                             file=folder.config_path, section="reports", report=key)
    raise ConfigError(f"{folder.config_path}: report {key!r} is not in 'reports'",
                      file=folder.config_path, section="reports", report=key)
