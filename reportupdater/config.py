# Stage 1 of 5: configuration (config -> plan -> execute -> store -> publish).
#
# Reads a query folder's config.yaml into typed dataclasses and validates
# every key. May read: config.yaml, explode_by value files, templates and
# scripts (to check they exist and know their placeholders). Writes nothing,
# connects to nothing. A broken report becomes a ConfigError in
# FolderConfig.errors; it never stops the other reports from loading.

from __future__ import annotations

import difflib
import enum
import itertools
import os
import re
import shlex
import urllib.parse
from dataclasses import dataclass, field
from datetime import date, datetime, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
from pathlib import Path
from typing import Any, Callable

import yaml

from . import templates


class ConfigError(Exception):
    """A one-line, user-facing configuration problem."""


class Granularity(enum.Enum):
    HOURS = "hours"
    DAYS = "days"
    WEEKS = "weeks"
    MONTHS = "months"
    QUARTERS = "quarters"
    YEARS = "years"


REPORT_TYPES = ("sql", "script", "hive")
# Values end up in file paths, SQL text and metric paths: letters, digits,
# '_', '-', '.', and no leading dot (so never '.' or '..').
DEFAULT_EXPLODE_VALUE_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
DEFAULT_TIMEOUT_SECONDS = 3600.0
# Keys the original tool accepted at some point and that mean nothing now.
LEGACY_REPORT_KEYS = frozenset({"frequency", "timeboxed", "funnel"})


@dataclass(frozen=True)
class DatabaseConfig:
    key: str
    url: str | None = field(default=None, repr=False)  # may hold a secret
    host: str | None = None
    port: int | None = None
    db: str | None = None
    creds_file: Path | None = None
    auto_find_db_shard: bool = False
    wiki_db_placeholder: str | None = None
    use_x1: bool = False
    mw_config_path: Path | None = None
    seed: Path | None = None  # sqlite only: SQL script that creates a missing database file
    shards: dict[str, str] = field(default_factory=dict)  # shard -> "host:port"
    shard_host_template: str | None = None  # "{shard}-replica.example.org:3306"
    srv_template: str | None = None         # DNS SRV name, "_{shard}-analytics._tcp.eqiad.wmnet"
    timeout: float | None = None            # seconds per query, server and client side
    max_connections: int | None = None      # jobs at a time on this database
    # Hive (HiveServer2 through PyHive, or a command line)
    engine: str = "sql"                     # sql, hive or hive-cli
    username: str | None = None
    auth: str | None = None                 # NONE, NOSASL, LDAP, KERBEROS, CUSTOM
    password_env: str | None = None         # environment variable holding the password
    kerberos_service_name: str | None = None
    configuration: dict[str, str] = field(default_factory=dict)  # Hive session settings
    command: tuple[str, ...] = ()           # hive-cli: the command the query is appended to

    @property
    def is_hive(self) -> bool:
        return self.engine in ("hive", "hive-cli") or (self.url or "").startswith("hive")


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


def _zone(name: str) -> tzinfo:
    return timezone.utc if name == "UTC" else ZoneInfo(name)


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
    pivot: "Pivot | None" = None  # long results turned into one column per category
    ready_when: ReadyCheck | None = None
    ready_timeout: float | None = None  # seconds an interval may wait for its data, then fails
    lookback: int = 0             # newest N computed intervals recomputed every run
    backfill_order: str = "newest"  # newest: yesterday first; oldest: history first
    max_intervals_per_run: int | None = None
    backfill_new_columns: bool = False  # a new column reopens older intervals

    @property
    def zone(self) -> tzinfo:
        return _zone(self.timezone)
    template: str | None = None  # sql/hive template text, read once
    script_path: Path | None = None  # script reports: absolute path of the executable

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(self.explode_by)

    def combinations(self) -> list[tuple[tuple[str, str], ...]]:
        """Every explode combination as (placeholder, value) pairs sorted by placeholder."""
        names = list(self.explode_by)  # already sorted by name
        return [tuple(zip(names, values))
                for values in itertools.product(*(self.explode_by[name] for name in names))]


@dataclass
class FolderConfig:
    config_path: Path
    query_folder: Path
    reports: dict[str, ReportConfig]
    databases: dict[str, DatabaseConfig]
    graphite: GraphiteConfig | None
    errors: list[ConfigError] = field(default_factory=list)  # broken reports and databases
    warnings: list[str] = field(default_factory=list)
    broken_reports: set[str] = field(default_factory=set)


# ---------------------------------------------------------------- helpers


class _Where:
    """Builds error messages that name file, report and key."""

    def __init__(self, config_path: Path, section: str):
        self.config_path = config_path
        self.section = section

    def error(self, key: str | None, message: str) -> ConfigError:
        where = f"{self.config_path}: {self.section}"
        if key is not None:
            where += f": key '{key}'"
        return ConfigError(f"{where}: {message}")


def _nearest(name: str, known: set[str] | frozenset[str]) -> str:
    match = difflib.get_close_matches(str(name), sorted(known), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(where: _Where, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise where.error(key, f"{_show(value)} is not an integer >= {minimum}")
    return value


def _bool(where: _Where, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise where.error(key, f"{_show(value)} is not true or false")
    return value


def _str(where: _Where, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(key, f"{_show(value)} is not a non-empty string")
    return value


def _inside(folder: Path, relative: str) -> Path | None:
    """The path of `relative` under `folder`, or None when it escapes it (symlinks included)."""
    candidate = (folder / relative).resolve()
    root = folder.resolve()
    if candidate != root and root not in candidate.parents:
        return None
    return candidate


# -------------------------------------------------------------- databases

DATABASE_KEYS = frozenset({
    "url", "host", "port", "db", "creds_file", "auto_find_db_shard",
    "wiki_db_placeholder", "use_x1", "mw_config_path", "seed",
    "shards", "shard_host_template", "srv_template", "timeout",
    "engine", "username", "database", "auth", "password_env", "kerberos_service_name",
    "configuration", "command", "max_connections",
})
DATABASE_ENGINES = ("sql", "hive", "hive-cli")
HIVE_AUTH_MODES = ("NONE", "NOSASL", "LDAP", "KERBEROS", "CUSTOM")
# Where the original found MediaWiki's configuration and each shard's replica.
DEFAULT_MW_CONFIG_PATH = "/srv/mediawiki-config"
DEFAULT_SRV_TEMPLATE = "_{shard}-analytics._tcp.eqiad.wmnet"


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


def _resolve_sqlite_url(url: str, query_folder: Path) -> str:
    # sqlite:///relative.db is relative to the query folder, not the cwd;
    # sqlite:////abs.db and sqlite:// (memory) are left alone.
    match = re.match(r"^(sqlite(?:\+\w+)?:///)([^/].*)$", url)
    if not match:
        return url
    prefix, rest = match.groups()
    path_part, sep, query = rest.partition("?")
    return f"{prefix}{(query_folder / path_part).resolve()}{sep}{query}"


def _parse_database(config_path: Path, query_folder: Path, key: str, raw: Any,
                    warnings: list[str]) -> DatabaseConfig:
    where = _Where(config_path, f"database '{key}'")
    if not isinstance(raw, dict):
        raise where.error(None, f"{_show(raw)} is not a mapping of keys")
    for name in raw:
        if name not in DATABASE_KEYS:
            warnings.append(f"{config_path}: database '{key}': unknown key '{name}'"
                            f"{_nearest(name, DATABASE_KEYS)}; ignored")
    values: dict[str, Any] = {"key": key}
    if "url" in raw:
        url = _expand_env(where, "url", _str(where, "url", raw["url"]))
        values["url"] = _resolve_sqlite_url(url, query_folder)
    for name in ("host", "db", "wiki_db_placeholder", "shard_host_template", "srv_template"):
        if name in raw:
            values[name] = _str(where, name, raw[name])
    for name in ("shard_host_template", "srv_template"):
        if name in values and _template_fields(where, name, values[name]) - {"shard"}:
            raise where.error(name, f"{values[name]!r} may only use the {{shard}} placeholder")
    if "shards" in raw:
        shards = raw["shards"]
        if not isinstance(shards, dict) or not all(
                isinstance(v, str) and re.fullmatch(r"[^\s:]+:\d+", v) for v in shards.values()):
            raise where.error("shards", f"{_show(shards)} is not a mapping shard -> 'host:port'")
        values["shards"] = {str(k): v for k, v in shards.items()}
    if "timeout" in raw:
        values["timeout"] = _seconds(where, "timeout", raw["timeout"])
    if "max_connections" in raw:
        values["max_connections"] = _int(where, "max_connections", raw["max_connections"], 1)
    if "port" in raw:
        values["port"] = _int(where, "port", raw["port"], 1)
    for name in ("auto_find_db_shard", "use_x1"):
        if name in raw:
            values[name] = _bool(where, name, raw[name])
    for name in ("creds_file", "mw_config_path"):
        if name in raw:
            values[name] = query_folder / os.path.expanduser(_str(where, name, raw[name]))
    _parse_hive_keys(where, raw, values)
    if "seed" in raw:
        seed = _inside(query_folder, _str(where, "seed", raw["seed"]))
        if seed is None or not seed.is_file():
            raise where.error("seed", f"{raw['seed']!r} is not a file inside the query folder")
        values["seed"] = seed
    if values.get("auto_find_db_shard"):
        if "creds_file" not in values:
            raise where.error("creds_file", "is required with auto_find_db_shard")
        if "wiki_db_placeholder" not in values and "db" not in values:
            raise where.error("wiki_db_placeholder", "is required with auto_find_db_shard (or give 'db')")
        values.setdefault("mw_config_path", Path(DEFAULT_MW_CONFIG_PATH))
        if not values.get("shards") and "shard_host_template" not in values:
            values.setdefault("srv_template", DEFAULT_SRV_TEMPLATE)
    database = DatabaseConfig(**values)
    if database.engine == "hive" and database.url is None and "host" not in values:
        raise where.error("host", "is required for engine hive (or give 'url: hive://user@host:10000/db')")
    if database.url is None and not database.auto_find_db_shard and not database.is_hive:
        missing = [name for name in ("host", "port", "creds_file", "db") if name not in raw]
        if missing:
            raise where.error(missing[0], "is required (or give 'url')")
    return database


def _parse_hive_keys(where: _Where, raw: dict, values: dict[str, Any]) -> None:
    engine = raw.get("engine", "sql")
    if engine not in DATABASE_ENGINES:
        raise where.error("engine", f"{_show(engine)} is not one of {', '.join(DATABASE_ENGINES)}")
    values["engine"] = engine
    for name in ("username", "password_env", "kerberos_service_name"):
        if name in raw:
            values[name] = _str(where, name, raw[name])
    if "database" in raw:
        values["db"] = _str(where, "database", raw["database"])
    if "auth" in raw:
        auth = str(raw["auth"]).upper()
        if auth not in HIVE_AUTH_MODES:
            raise where.error("auth", f"{_show(raw['auth'])} is not one of {', '.join(HIVE_AUTH_MODES)}")
        values["auth"] = auth
    # What PyHive accepts: a password only with LDAP or CUSTOM, a Kerberos
    # service name only with KERBEROS.
    url_auth = re.search(r"[?&]auth=(\w+)", str(raw.get("url", "")))
    if url_auth and "auth" not in values:
        values["auth"] = url_auth.group(1).upper()
    if "password_env" in raw and values.get("auth") not in ("LDAP", "CUSTOM"):
        raise where.error("password_env", "a password needs auth: LDAP or CUSTOM")
    if "kerberos_service_name" in raw and values.get("auth") != "KERBEROS":
        raise where.error("kerberos_service_name", "needs auth: KERBEROS")
    if "configuration" in raw:
        settings = raw["configuration"]
        if not isinstance(settings, dict):
            raise where.error("configuration", f"{_show(settings)} is not a mapping setting -> value")
        values["configuration"] = {str(k): str(v).lower() if isinstance(v, bool) else str(v)
                                   for k, v in settings.items()}
    if "command" in raw:
        command = raw["command"]
        if isinstance(command, str):
            command = shlex.split(command)
        if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
            raise where.error("command", f"{_show(raw['command'])} is not a command line")
        values["command"] = tuple(command)


def _template_fields(where: _Where, key: str, text: str) -> set[str]:
    try:
        return templates.fields(text)
    except templates.TemplateError as exc:
        raise where.error(key, f"{text!r}: {exc}")


def _seconds(where: _Where, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise where.error(key, f"{_show(value)} is not a number of seconds > 0")
    return float(value)


# ---------------------------------------------------------------- reports


def _parse_starts(where: _Where, value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d{4}-\d{1,2}-\d{1,2})(?:[ Tt].*)?", value)
        try:
            if match:
                return datetime.strptime(match.group(1), "%Y-%m-%d").date()
        except ValueError:
            pass
    raise where.error("starts", f"{_show(value)} is not a date YYYY-MM-DD")


def _read_explode_values(where: _Where, query_folder: Path, placeholder: str,
                         raw: Any) -> list[str]:
    if isinstance(raw, list):
        return [str(value).strip() for value in raw]
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return [str(raw)]
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
            raise where.error(f"explode_by.{placeholder}", f"cannot read {path}: {exc}")
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
    return ReportGraphite(path=path, metrics={str(k): str(v) for k, v in metrics.items()})


def _load_template(where: _Where, query_folder: Path, execute: str, suffix: str,
                   available: set[str]) -> str:
    path = _inside(query_folder, execute + suffix)
    if path is None:
        raise where.error("execute", f"{execute!r} points outside the query folder")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise where.error("execute", f"cannot read template {path}: "
                                     f"{getattr(exc, 'strerror', None) or exc}")
    try:
        fields = templates.fields(text)
    except templates.TemplateError as exc:
        raise where.error("execute", f"{path}: {exc}")
    unknown = sorted(fields - available)
    if unknown:
        raise where.error("execute", f"{path}: unknown placeholder {{{unknown[0]}}}"
                                     f"{_nearest(unknown[0], available)}")
    return text


def _hive_database(where: _Where, db: Any, databases: dict[str, DatabaseConfig],
                   database_errors: dict[str, ConfigError]) -> str | None:
    """The hive database a hive report uses: the one its `db` names, else the
    folder's only one, else None (the site default, else `hive -e`). A `db`
    naming a non-hive database (a defaults value meant for sql reports) is
    ignored, as the original tool ignored `db` for hive reports; one naming
    nothing, a broken entry, or leaving a choice of several is an error."""
    if db is not None and db in database_errors:
        raise where.error("db", f"database {db!r} is broken (see its own error)")
    if db is not None and db not in databases:
        raise where.error("db", f"{_show(db)} is not a key of 'databases'{_nearest(db, set(databases))}")
    if db is not None and databases[db].is_hive:
        return db
    hive = [key for key, database in databases.items() if database.is_hive]
    if len(hive) > 1:
        raise where.error("db", f"name one of the hive databases {', '.join(hive)}")
    return hive[0] if hive else None


def _find_script(where: _Where, query_folder: Path, execute: str) -> Path:
    path = _inside(query_folder, execute)
    if path is None:
        raise where.error("execute", f"{execute!r} points outside the query folder")
    if not path.is_file():
        raise where.error("execute", f"script {path} does not exist")
    if not os.access(path, os.X_OK):
        raise where.error("execute", f"script {path} is not executable (chmod +x)")
    return path


REPORT_KEYS = frozenset({
    "type", "granularity", "starts", "lag", "db", "execute", "explode_by",
    "max_data_points", "graphite", "group", "timeout", "explode_value_pattern",
    "schedule", "parallel", "batch", "timezone", "pivot", "ready_when", "ready_timeout",
    "lookback", "backfill_order", "max_intervals_per_run", "backfill_new_columns",
})


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


def _parse_pivot(where: _Where, value: Any) -> "Pivot":
    if not isinstance(value, dict) or not {"index", "columns", "values"} <= set(value):
        raise where.error("pivot", f"{_show(value)} needs index, columns and values")
    unknown = set(value) - {"index", "columns", "values", "fill"}
    if unknown:
        raise where.error("pivot", f"unknown key {sorted(unknown)[0]!r} (index, columns, values, fill)")
    names = {key: _str(where, f"pivot.{key}", value[key]) for key in ("index", "columns", "values")}
    fill = value.get("fill", "")
    return Pivot(fill="" if fill is None else str(fill), **names)


def _parse_ready(where: _Where, query_folder: Path, value: Any, report_type: str,
                 available: set[str]) -> ReadyCheck:
    if not isinstance(value, dict) or len(value) != 1 or not set(value) <= {"query", "partition", "script"}:
        raise where.error("ready_when", f"{_show(value)} needs exactly one of query, partition, script")
    kind, text = next(iter(value.items()))
    text = _str(where, f"ready_when.{kind}", text)
    if kind == "script":
        return ReadyCheck(script_path=_find_script(where, query_folder, text))
    if kind == "partition" and report_type != "hive":
        raise where.error("ready_when.partition", "partitions are checked on Hive: use it in hive reports")
    if kind == "query" and report_type == "script":
        raise where.error("ready_when.query", "a script report has no database to query: use script")
    try:
        unknown = sorted(templates.fields(text) - available)
    except templates.TemplateError as exc:
        raise where.error(f"ready_when.{kind}", str(exc))
    if unknown:
        raise where.error(f"ready_when.{kind}", f"unknown placeholder {{{unknown[0]}}}")
    if kind == "partition" and not re.fullmatch(r"[\w.]+(/\w+=[^/]+)+", text):
        raise where.error("ready_when.partition", f"{text!r} is not db.table/key=value/...")
    return ReadyCheck(**{kind: text})


def _parse_batch(where: _Where, value: Any) -> int | str:
    if value == "month":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise where.error("batch", f"{_show(value)} is not a number of intervals >= 1 or 'month'")
    return value


def _parse_schedule(where: _Where, value: Any) -> str:
    text = _str(where, "schedule", value)
    from croniter import croniter  # 40 ms to import; only `schedule:` needs it
    if not croniter.is_valid(text):
        raise where.error("schedule", f"{text!r} is not a cron expression (e.g. '0 2 * * *')")
    return text


def _parse_report(config_path: Path, query_folder: Path, key: str, raw: dict,
                  databases: dict[str, DatabaseConfig],
                  database_errors: dict[str, ConfigError]) -> ReportConfig:
    """A report's settings; raises ReportErrors with every problem found."""
    where = _Where(config_path, f"report '{key}'")
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
        try:
            return Granularity(value)
        except ValueError:
            names = ", ".join(g.value for g in Granularity)
            raise where.error("granularity", f"{_show(value)} is not one of {names}") from None

    def report_type() -> str:
        value = raw.get("type", "sql")
        if value not in REPORT_TYPES:
            raise where.error("type", f"{_show(value)} is not one of {', '.join(REPORT_TYPES)}")
        return value

    def explode_pattern() -> str:
        pattern = _str(where, "explode_value_pattern", raw["explode_value_pattern"])
        try:
            re.compile(pattern)
        except re.error as exc:
            raise where.error("explode_value_pattern", f"{pattern!r} is not a regular expression: {exc}")
        return pattern

    if not REPORT_KEY_PATTERN.fullmatch(key):
        errors.append(where.error(None, f"the report name must match {DEFAULT_EXPLODE_VALUE_PATTERN} "
                                        "(it becomes a file name)"))
    type_ok = check("type", report_type)
    check("granularity", granularity)
    check("starts", lambda: _parse_starts(where, required("starts", "YYYY-MM-DD")))
    if "lag" in raw:
        check("lag", lambda: _int(where, "lag", raw["lag"], 0))
    if raw.get("max_data_points") is not None:
        check("max_data_points", lambda: _int(where, "max_data_points", raw["max_data_points"], 1))
    if raw.get("timeout") is not None:
        check("timeout", lambda: _seconds(where, "timeout", raw["timeout"]))
    if raw.get("group") is not None:
        check("group", lambda: _str(where, "group", raw["group"]))
    if raw.get("schedule") is not None:
        check("schedule", lambda: _parse_schedule(where, raw["schedule"]))
    if "parallel" in raw:
        check("parallel", lambda: _bool(where, "parallel", raw["parallel"]))
    if raw.get("batch") is not None:
        check("batch", lambda: _parse_batch(where, raw["batch"]))
    if raw.get("timezone") is not None:
        check("timezone", lambda: _parse_timezone(where, raw["timezone"], raw.get("granularity")))
    if raw.get("pivot") is not None:
        check("pivot", lambda: _parse_pivot(where, raw["pivot"]))
    if raw.get("ready_timeout") is not None:
        check("ready_timeout", lambda: _seconds(where, "ready_timeout", raw["ready_timeout"]))
    if raw.get("lookback") is not None:
        check("lookback", lambda: _int(where, "lookback", raw["lookback"], 0))
    if raw.get("backfill_order") is not None:
        def order() -> str:
            if raw["backfill_order"] not in ("newest", "oldest"):
                raise where.error("backfill_order", f"{_show(raw['backfill_order'])} is not newest or oldest")
            return raw["backfill_order"]
        check("backfill_order", order)
    if raw.get("max_intervals_per_run") is not None:
        check("max_intervals_per_run",
              lambda: _int(where, "max_intervals_per_run", raw["max_intervals_per_run"], 1))
    if "backfill_new_columns" in raw:
        check("backfill_new_columns", lambda: _bool(where, "backfill_new_columns", raw["backfill_new_columns"]))
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
    execute_ok = check("execute", lambda: _str(where, "execute", raw.get("execute", key)))

    if type_ok and execute_ok:
        execute = values["execute"]
        # With a broken explode_by, its placeholders are unknown: do not
        # report them as unknown placeholders of the template as well.
        available = set(templates.INTERVAL_PLACEHOLDERS) | set(values.get("explode_by", {}))
        if not explode_ok:
            available |= {str(name) for name in raw.get("explode_by") or {}} if isinstance(
                raw.get("explode_by"), dict) else set()
        if values["type"] == "sql":
            def database() -> str:
                db = raw.get("db")
                if db is None:
                    raise where.error("db", "is required for sql reports (a key of 'databases')")
                if db in database_errors:
                    raise where.error("db", f"database {db!r} is broken (see its own error)")
                if db not in databases:
                    raise where.error("db", f"{_show(db)} is not a key of 'databases'"
                                            f"{_nearest(db, set(databases))}")
                placeholder = databases[db].wiki_db_placeholder
                if (databases[db].auto_find_db_shard and placeholder and explode_ok
                        and placeholder not in values.get("explode_by", {})):
                    raise where.error("explode_by", f"database {db!r} finds each wiki's shard from the "
                                                    f"explode_by placeholder {placeholder!r}, which "
                                                    "this report lacks")
                return db
            check("db", database)
            check("template", lambda: _load_template(where, query_folder, execute, ".sql", available))
        elif values["type"] == "hive":
            check("db", lambda: _hive_database(where, raw.get("db"), databases, database_errors))
            check("template", lambda: _load_template(where, query_folder, execute, ".hql", available))
        else:
            check("script_path", lambda: _find_script(where, query_folder, execute))
        if raw.get("ready_when") is not None:
            check("ready_when", lambda: _parse_ready(where, query_folder, raw["ready_when"],
                                                     values["type"], available))

    if errors:
        raise ReportErrors(errors)
    return ReportConfig(**values)


# ----------------------------------------------------------------- folder

TOP_LEVEL_KEYS = frozenset({"reports", "defaults", "databases", "graphite"})
GRAPHITE_KEYS = frozenset({"host", "port", "prefix", "lookups"})


def _parse_graphite(config_path: Path, query_folder: Path, raw: Any,
                    warnings: list[str]) -> GraphiteConfig:
    where = _Where(config_path, "graphite")
    if not isinstance(raw, dict):
        raise where.error(None, f"{_show(raw)} is not a mapping")
    for name in raw:
        if name not in GRAPHITE_KEYS:
            warnings.append(f"{config_path}: graphite: unknown key '{name}'"
                            f"{_nearest(name, GRAPHITE_KEYS)}; ignored")
    if not raw.get("host"):
        raise where.error("host", "is required (the Graphite server's name)")
    host = _str(where, "host", raw["host"])
    port = _int(where, "port", raw.get("port", 2003), 1)
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


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: 5x faster on big folders
    """SafeLoader that leaves dates as text: `starts: 2026-02-30` then fails as
    that report's error naming the key, not as a crash of the whole file."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

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
        raise ConfigError(f"{config_path}: cannot read config: {getattr(exc, 'strerror', None) or exc}")
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{config_path}:{line}: invalid YAML: {problem}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: expected a mapping with a 'reports' key")
    if not isinstance(raw.get("reports"), dict) or not raw["reports"]:
        raise ConfigError(f"{config_path}: key 'reports': is required and must map report names to settings")

    warnings: list[str] = []
    errors: list[ConfigError] = []
    for name in raw:
        if name not in TOP_LEVEL_KEYS:
            warnings.append(f"{config_path}: unknown top-level key '{name}'"
                            f"{_nearest(name, TOP_LEVEL_KEYS)}; ignored")

    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{config_path}: key 'defaults': {_show(defaults)} is not a mapping")
    known_report_keys = REPORT_KEYS | LEGACY_REPORT_KEYS
    for name in defaults:
        if name not in known_report_keys:
            warnings.append(f"{config_path}: defaults: unknown key '{name}'"
                            f"{_nearest(name, REPORT_KEYS)}; ignored")

    databases: dict[str, DatabaseConfig] = {}
    database_errors: dict[str, ConfigError] = {}
    raw_databases = raw.get("databases") or {}
    if not isinstance(raw_databases, dict):
        raise ConfigError(f"{config_path}: key 'databases': {_show(raw_databases)} is not a mapping")
    for key, raw_db in raw_databases.items():
        try:
            databases[str(key)] = _parse_database(config_path, query_folder, str(key), raw_db, warnings)
        except ConfigError as exc:
            database_errors[str(key)] = exc
            errors.append(exc)

    graphite = None
    if raw.get("graphite") is not None:
        try:
            graphite = _parse_graphite(config_path, query_folder, raw["graphite"], warnings)
        except ConfigError as exc:  # the reports still run; nothing is sent
            errors.append(exc)

    reports: dict[str, ReportConfig] = {}
    broken: set[str] = set()
    for key, raw_report in raw["reports"].items():
        key = str(key)
        if not isinstance(raw_report, dict):
            errors.append(_Where(config_path, f"report '{key}'").error(
                None, f"{_show(raw_report)} is not a mapping of keys"))
            broken.add(key)
            continue
        for name in raw_report:
            if name not in known_report_keys:
                warnings.append(f"{config_path}: report '{key}': unknown key '{name}'"
                                f"{_nearest(name, REPORT_KEYS)}; ignored")
        merged = {**defaults, **raw_report}
        if merged.get("graphite") is not None and raw.get("graphite") is None:
            warnings.append(f"{config_path}: report '{key}': has a 'graphite' section but the "
                            "config has no top-level 'graphite' (host, port): nothing is sent")
        try:
            reports[key] = _parse_report(config_path, query_folder, key, merged,
                                         databases, database_errors)
        except ReportErrors as exc:
            errors.extend(exc.errors)
            broken.add(key)

    return FolderConfig(config_path=config_path, query_folder=query_folder, reports=reports,
                        databases=databases, graphite=graphite, errors=errors, warnings=warnings,
                        broken_reports=broken)
