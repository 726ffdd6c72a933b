# Stage 3 of 5: execution. The `sql` engine.
#
# Renders a report's template and runs it through SQLAlchemy 2 on the
# database its `db` names: the classic host/port/db/creds_file form becomes a
# mysql+pymysql URL, `url:` takes any SQLAlchemy URL, and
# `auto_find_db_shard` finds each wiki database's shard (dblists) and the
# shard's replica (shards map, host template, or DNS SRV). One pooled engine
# per server (host:port), the database selected per query, so 900 wikis on
# 8 shards open 8 pools. An in-memory SQLite database (`sqlite://`) is one
# connection shared by the run's jobs, one query at a time, built from its
# `seed:` when the run first uses it. May touch: those databases, the creds
# files, the MediaWiki dblists, a sqlite `seed:` (to create a missing demo
# database). Passwords never reach a log line or an error message: every
# error leaving this engine has its database's passwords masked. KEYS
# declares what it reads from config.yaml (its shard keys and rules).

from __future__ import annotations

import logging
import re
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .. import atomic
from ..config_keys import DEFAULT_TIMEOUT_SECONDS, Key
from ..config import DatabaseConfig, hide_secrets
from ..credentials import read_creds_file
from ..datatypes import EngineError, Job, Result
from ..deadlines import watchdog
from ..report_types import EngineKeys
from .base import Engine, SiteDefaults, build_result, render_query, truthy

# SQLAlchemy is imported by the functions that use it, not here: loading a
# config reads this module's declarations, and a run that computes nothing
# must not pay SQLAlchemy's import (0.1 s, 20 MB).
if TYPE_CHECKING:
    import sqlalchemy
    from sqlalchemy.engine import URL

    from ..config import DatabaseDraft, FolderConfig, ReportDraft


# ------------------------------------------------ what it reads from config.yaml

# MediaWiki's one database per wiki: which shard holds a wiki, and where.
DATABASE_KEYS = {key.name: key for key in (
    Key("auto_find_db_shard", "boolean", "Find each wiki's shard from MediaWiki's configuration",
        default=False, null_is_unset=False),
    Key("wiki_db_placeholder", "text", "The explode_by placeholder that names the wiki",
        null_is_unset=False),
    Key("use_x1", "boolean", "Read the x1 (extension) cluster instead of the wiki's shard",
        default=False, null_is_unset=False),
    Key("mw_config_path", "text", "Where MediaWiki's configuration is (default with auto_find_db_shard)",
        default="/srv/mediawiki-config", null_is_unset=False),
    Key("shards", "other", "shard -> 'host:port'", null_is_unset=False,
        schema={"type": "object", "additionalProperties": {"type": "string",
                                                           "pattern": r"^[^\s:/@]+:\d+$"}}),
    Key("shard_host_template", "text", "'{shard}-replica.example.org:3306'", null_is_unset=False),
    Key("srv_template", "text", "DNS SRV name of a shard (default with auto_find_db_shard, no shards)",
        null_is_unset=False,
        default="_{shard}-analytics._tcp.eqiad.wmnet"),
)}
# Where the original found MediaWiki's configuration and each shard's replica.
DEFAULT_MW_CONFIG_PATH = DATABASE_KEYS["mw_config_path"].default
DEFAULT_SRV_TEMPLATE = DATABASE_KEYS["srv_template"].default


def _parse_shards(database: DatabaseDraft, raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise database.error("shards", f"{database.show('shards', raw)} is not a mapping "
                                       "shard -> 'host:port'")
    shards: dict[str, str] = {}
    for shard, server in raw.items():
        if not isinstance(server, str) or not re.fullmatch(r"[^\s:/@]+:\d+", server):
            # Never the value: it is where a URL with its password lands by mistake.
            raise database.error(f"shards.{shard}", f"{database.show(f'shards.{shard}', server)} is not "
                                                    "'host:port' (credentials belong in creds_file)")
        shards[shard] = server
    return shards


def _parse_database(database: DatabaseDraft) -> None:
    """The shard keys of a database (its plain ones are read already), and
    what auto_find_db_shard needs: checked on any database that gives them."""
    raw, values = database.raw, database.values
    options = values["options"]
    for name in ("shard_host_template", "srv_template"):
        if name in options and database.template_fields(name, options[name]) - {"shard"}:
            raise database.error(name, "may only use the {shard} placeholder")
    options["shards"] = _parse_shards(database, raw["shards"]) if "shards" in raw else {}
    if "mw_config_path" in options:
        options["mw_config_path"] = database.path(options["mw_config_path"])
    options.setdefault("auto_find_db_shard", False)
    options.setdefault("use_x1", False)
    if options["auto_find_db_shard"]:
        if "creds_file" not in values:
            raise database.error("creds_file", "is required with auto_find_db_shard")
        if "wiki_db_placeholder" not in options and "db" not in values:
            raise database.error("wiki_db_placeholder", "is required with auto_find_db_shard (or give 'db')")
        options.setdefault("mw_config_path", Path(DEFAULT_MW_CONFIG_PATH))
        if not options["shards"] and "shard_host_template" not in options:
            options.setdefault("srv_template", DEFAULT_SRV_TEMPLATE)


def _report_database(report: ReportDraft) -> str:
    """An sql report's `db`: required, a sound database, and one that finds
    wiki shards from a placeholder the report explodes by."""
    db = report.raw.get("db")
    if db is None:
        raise report.error("db", "is required for sql reports (a key of 'databases')")
    database = report.database(db)
    placeholder = database.wiki_db_placeholder
    if (database.auto_find_db_shard and placeholder and report.explode_ok
            and placeholder not in report.values.get("explode_by", {})):
        raise report.error("explode_by", f"database {db!r} finds each wiki's shard from the "
                                         f"explode_by placeholder {placeholder!r}, which "
                                         "this report lacks")
    return db


def _check_report(report: ReportDraft) -> None:
    report.check("db", lambda: _report_database(report))


def _check_database(database: DatabaseDraft) -> None:
    """A database without a URL names its server and database, and a creds
    file, unless it finds each wiki's shard."""
    raw, values = database.raw, database.values
    if values.get("url") is None and not values["options"].get("auto_find_db_shard"):
        missing = [name for name in ("host", "port", "creds_file", "db") if name not in raw]
        if missing:
            raise database.error(missing[0], "is required (or give 'url')")


KEYS = EngineKeys(
    type="sql", template_suffix=".sql", ready_when=("query", "script"),
    ready_when_refused={"partition": "partitions are checked on Hive: use it in hive reports"},
    check_report=_check_report, database_keys=DATABASE_KEYS, database_engines=("sql",),
    not_with_url=("auto_find_db_shard",),
    parse_database=_parse_database, check_database=_check_database,
)

log = logging.getLogger(__name__)

# MySQL client error codes of a connection that went away mid-use.
_LOST_CONNECTION = {2006, 2013, 2055}
# Seconds the client waits beyond the server-side limit before giving up.
_CLIENT_GRACE = 5.0


@dataclass(frozen=True)
class Target:
    """Where one job's query goes: a pooled engine and, maybe, a database to USE."""

    engine_key: tuple
    url: URL
    use_database: str | None = None  # selected per query on a shared pool


def _host_port(text: str, where: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"{where}: {text!r} is not host:port")
    return host, int(port)


class ShardFinder:
    """Which shard holds a wiki database, and which server serves that shard."""

    def __init__(self, database: DatabaseConfig):
        self.database = database
        self._shard_of: dict[str, str] | None = None

    def _mapping(self) -> dict[str, str]:
        if self._shard_of is None:
            folder = (self.database.mw_config_path or Path(".")) / "dblists"
            if self.database.use_x1:
                lists = [(folder / "all.dblist", "x1")]
            else:
                lists = [(path, path.stem) for path in sorted(folder.glob("*.dblist"))
                         if re.fullmatch(r"s\d+", path.stem) or path.stem in self.database.shards]
            mapping: dict[str, str] = {}
            for path, shard in lists:
                try:
                    lines = path.read_text(encoding="utf-8").splitlines()
                except OSError as exc:
                    raise EngineError(f"database '{self.database.key}': cannot read {path}: "
                                      f"{exc.strerror}") from None
                for line in lines:
                    name = line.split("#", 1)[0].strip()
                    if name:
                        mapping[name] = shard
            if not mapping:
                raise EngineError(f"database '{self.database.key}': no dblists found in {folder} "
                                  "(check mw_config_path)")
            self._shard_of = mapping
        return self._shard_of

    def shard(self, wiki_db: str) -> str:
        if wiki_db == "staging":
            return "staging"
        if wiki_db == "centralauth":
            return "s7"  # not in any dblist; the original's special case
        if self.database.use_x1:
            return "x1"
        try:
            return self._mapping()[wiki_db]
        except KeyError:
            raise EngineError(f"database '{self.database.key}': {wiki_db!r} is in no "
                              f"dblists/s*.dblist under {self.database.mw_config_path}") from None

    def server(self, shard: str) -> tuple[str, int]:
        where = f"database '{self.database.key}' shard {shard!r}"
        if shard in self.database.shards:
            return _host_port(self.database.shards[shard], where)
        if self.database.shard_host_template:
            return _host_port(self.database.shard_host_template.format(shard=shard), where)
        if self.database.srv_template:
            return _srv_lookup(self.database.srv_template.format(shard=shard), where)
        raise EngineError(f"{where}: not in 'shards' and no shard_host_template")


def _srv_lookup(name: str, where: str) -> tuple[str, int]:
    try:
        import dns.resolver  # optional: only sites that rely on DNS SRV need dnspython
    except ImportError:
        raise EngineError(f"{where}: DNS SRV lookup of {name} needs the dnspython package; "
                          "or set 'shards' or 'shard_host_template'") from None
    try:
        answer = dns.resolver.resolve(name, "SRV")[0]
    except Exception as exc:
        raise EngineError(f"{where}: DNS SRV lookup of {name} failed: {exc}") from None
    return str(answer.target).rstrip("."), int(answer.port)


def classic_url(database: DatabaseConfig, host: str | None, port: int | None,
                name: str | None) -> URL:
    """mysql+pymysql URL from a creds file (may hold a password: never log it as is)."""
    from sqlalchemy.engine import URL
    assert database.creds_file is not None
    creds = read_creds_file(database.creds_file)
    host = host or creds.get("host")
    port = port or (int(creds["port"]) if creds.get("port", "").isdigit() else None)
    return URL.create("mysql+pymysql", username=creds.get("user"), password=creds.get("password"),
                      host=host, port=port, database=name, query={"charset": "utf8mb4"})


def _seed_sqlite(url: URL, seed: Path) -> None:
    """Build a missing sqlite database from its seed script: in memory, then
    put in place by atomic.write (no link followed, an existing file never
    replaced), so no partial or journal file ever sits beside it."""
    import sqlite3  # here, not at start-up: most runs build no database
    target = Path(url.database or "")
    if url.get_backend_name() != "sqlite" or _is_memory(url) or target.exists():
        return
    try:
        connection = sqlite3.connect(":memory:")
        try:
            connection.executescript(seed.read_text(encoding="utf-8"))
            connection.commit()
            data = connection.serialize()
        finally:
            connection.close()
        atomic.write(target, data, replace=False)
    except atomic.TargetExists:
        return  # built meanwhile by another run
    except (OSError, sqlite3.Error) as exc:
        raise EngineError(f"cannot build {target} from {seed}: {exc}") from None
    log.info("built %s from %s", target, seed)


def _check_sqlite_exists(url: URL, database: DatabaseConfig) -> None:
    """sqlite would create a missing database file (an empty one, in the query
    folder for a relative path) and then fail with "no such table"."""
    if (url.get_backend_name() == "sqlite" and url.database and not _is_memory(url)
            and "uri" not in url.query and not Path(url.database).exists()):
        raise EngineError(f"database '{database.key}': sqlite database {url.database} does not "
                          "exist (it is not created; 'seed:' builds a missing one)")


def _is_memory(url: URL) -> bool:
    """The same test as config.is_memory_sqlite, on a parsed URL."""
    if url.get_backend_name() != "sqlite":
        return False
    database = url.database or ""
    return (database in ("", ":memory:") or database.startswith("file::memory:")
            or url.query.get("mode") == "memory")


def _seed_memory(engine: sqlalchemy.Engine, seed: Path) -> None:
    """Run the seed script on the shared connection of an in-memory database."""
    import sqlite3
    try:
        script = seed.read_text(encoding="utf-8")
        with engine.connect() as connection:
            raw = connection.connection.dbapi_connection
            assert raw is not None  # a checked-out connection holds its DBAPI connection
            raw.executescript(script)
            raw.commit()
    except (OSError, UnicodeDecodeError, sqlite3.Error) as exc:
        raise EngineError(f"cannot build the in-memory database from {seed}: {exc}") from None
    log.info("built the in-memory database from %s", seed)


def _password_forms(url: URL | None) -> list[str]:
    return [url.password] if url is not None and url.password else []


# A connection a thread keeps for the run goes back to the pool (and its
# pre-ping) after this long unused: servers close idle connections.
_HELD_IDLE_SECONDS = 30.0


class SqlEngine(Engine):
    type = "sql"

    def __init__(self, folder: FolderConfig, site: SiteDefaults = SiteDefaults()) -> None:
        super().__init__(folder, site)
        self._engines: dict[tuple, sqlalchemy.Engine] = {}
        self._shard_finders: dict[str, ShardFinder] = {}
        self._classic_urls: dict[str, URL] = {}
        self._lock = threading.Lock()  # jobs run in threads; engines are created once
        # In-memory SQLite: one connection for all the run's jobs, one query at a time.
        self._serial: dict[tuple, threading.Lock] = {}
        # Parsed once per database, not per query.
        self._targets: dict[str, Target] = {}
        # Each thread keeps its connection per engine for the run (one
        # checkout and pre-ping per thread, not per query); all of them are
        # closed by close().
        self._local = threading.local()
        self._held: list[sqlalchemy.Connection] = []

    # -- where a job goes

    def target(self, job: Job) -> Target:
        import sqlalchemy
        from sqlalchemy.engine import make_url
        database = self.folder.databases[job.report.db or ""]
        cached = self._targets.get(database.key)
        if cached is not None:
            return cached
        if database.url is not None:
            try:
                url = make_url(database.url)
            except (sqlalchemy.exc.ArgumentError, ValueError):
                raise EngineError(f"database '{database.key}': 'url' is not a SQLAlchemy URL") from None
            self._targets[database.key] = Target(("url", database.key), url)
            return self._targets[database.key]
        if database.key not in self._classic_urls:
            db = None if database.auto_find_db_shard else database.db
            self._classic_urls[database.key] = classic_url(database, database.host, database.port, db)
        base = self._classic_urls[database.key]
        if not database.auto_find_db_shard:
            self._targets[database.key] = Target(("classic", database.key), base)
            return self._targets[database.key]
        wiki_db = (job.explode_values.get(database.wiki_db_placeholder or "")
                   or database.db or "")
        finder = self._shard_finders.setdefault(database.key, ShardFinder(database))
        host, port = finder.server(finder.shard(wiki_db))
        return Target(("server", database.key, host, port), base.set(host=host, port=port), wiki_db)

    def _engine(self, target: Target, database: DatabaseConfig) -> sqlalchemy.Engine:
        with self._lock:
            return self._engine_locked(target, database)

    def _engine_locked(self, target: Target, database: DatabaseConfig) -> sqlalchemy.Engine:
        import sqlalchemy
        from sqlalchemy.pool import StaticPool
        engine = self._engines.get(target.engine_key)
        if engine is None:
            memory = _is_memory(target.url)
            if database.seed is not None and not memory:
                _seed_sqlite(target.url, database.seed)
            if not memory:
                _check_sqlite_exists(target.url, database)
            if memory:
                # Each connection to sqlite:// is a database of its own: the
                # jobs share one (StaticPool) so that they see the same
                # tables, and take turns on it (self._serial).
                options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
            else:
                # Enough connections for every job that may run at once (the
                # worker threads and the calling thread each keep one).
                options = {"pool_size": max(1, self.site.jobs) + 1, "max_overflow": 0,
                           "pool_timeout": 3600}
            if target.url.get_backend_name() == "mysql":
                # Each query its own transaction, so that no snapshot outlives
                # it without a ROLLBACK after it (a round trip per query).
                options["isolation_level"] = "AUTOCOMMIT"
            try:
                engine = sqlalchemy.create_engine(target.url, pool_pre_ping=True, **options)
            except Exception as exc:  # unknown dialect, missing driver
                raise EngineError(f"database '{database.key}' "
                                  f"({target.url.render_as_string(hide_password=True)}): "
                                  f"{type(exc).__name__}: {_first_line(exc)}") from None
            if memory:
                if database.seed is not None:
                    try:
                        _seed_memory(engine, database.seed)
                    except EngineError:
                        engine.dispose()
                        raise
                self._serial[target.engine_key] = threading.Lock()
            self._engines[target.engine_key] = engine
        return engine

    def _secrets(self, database: DatabaseConfig) -> list[str]:
        """The passwords this database's errors must never show."""
        from sqlalchemy.engine import make_url
        urls: list[URL | None] = [self._classic_urls.get(database.key)]
        if database.url is not None:
            try:
                urls.append(make_url(database.url))
            except Exception:  # not a URL: the whole text is unknown ground
                return [database.url]
        return [password for url in urls for password in _password_forms(url)]

    # -- running

    def is_ready(self, job: Job) -> bool:
        check = job.report.ready_when
        if check is None or check.query is None:
            return super().is_ready(job)
        _, rows = self._query(job, render_query(job, check.query))
        return bool(rows) and truthy(rows[0][0])

    def run(self, job: Job) -> Result:
        header, rows = self._query(job, render_query(job))
        return build_result(header, rows, job.interval)

    def _query(self, job: Job, query: str) -> tuple[list[str], Sequence[Any]]:
        database = self.folder.databases[job.report.db or ""]
        try:
            return self._query_unmasked(job, database, query)
        except EngineError as exc:
            raise EngineError(hide_secrets(str(exc), self._secrets(database))) from None
        except Exception as exc:  # a driver's own exception (TypeError for an unknown URL option, ...)
            raise EngineError(hide_secrets(f"database '{database.key}': {type(exc).__name__}: "
                                           f"{_first_line(exc)}", self._secrets(database))) from None

    def _query_unmasked(self, job: Job, database: DatabaseConfig, query: str
                        ) -> tuple[list[str], Sequence[Any]]:
        import sqlalchemy
        log.debug("%s: query:\n%s", job.describe(), query)
        timeout = job.report.timeout or database.timeout or DEFAULT_TIMEOUT_SECONDS
        target = self.target(job)
        engine = self._engine(target, database)
        for attempt in (1, 2):
            started = time.monotonic()
            try:
                with self._serial.get(target.engine_key) or nullcontext():
                    return self._execute(engine, target, query, timeout)
            except sqlalchemy.exc.DBAPIError as exc:
                code = _error_code(exc)
                elapsed = time.monotonic() - started
                if code in (1969, 3024) or elapsed >= timeout:
                    raise EngineError(f"database '{database.key}': query exceeded its timeout of "
                                      f"{timeout:g} s and was stopped") from None
                if attempt == 1 and (exc.connection_invalidated or code in _LOST_CONNECTION):
                    log.warning("%s: lost the connection (%s); retrying once with a new one",
                                job.describe(), hide_secrets(_dbapi_message(database, exc),
                                                             self._secrets(database)))
                    continue
                raise EngineError(_dbapi_message(database, exc)) from None
            except sqlalchemy.exc.SQLAlchemyError as exc:
                raise EngineError(f"database '{database.key}': {type(exc).__name__}: "
                                  f"{_first_line(exc)}") from None
        raise AssertionError("unreachable")

    def in_process(self, job: Job) -> bool:
        """A SQLite database runs inside this process: threads would only take
        turns on the GIL (see docs/performance.md, case f)."""
        try:
            return self.target(job).url.get_backend_name() == "sqlite"
        except EngineError:
            return False  # the job itself reports the error

    def _connection(self, engine: sqlalchemy.Engine, target: Target) -> sqlalchemy.Connection:
        """This thread's connection to the engine, opened on first use. One
        left unused for a while goes back to the pool and is checked out
        again, so that the pool's pre-ping finds a connection the server
        closed meanwhile (as it did when each query checked out its own)."""
        held = getattr(self._local, "connections", None)
        if held is None:
            held = self._local.connections = {}
        connection, last_used = held.get(target.engine_key, (None, 0.0))
        now = time.monotonic()
        if connection is not None and (connection.closed or connection.invalidated
                                       or now - last_used > _HELD_IDLE_SECONDS):
            self._drop_connection(target)
            connection = None
        if connection is None:
            connection = engine.connect()
            with self._lock:
                self._held.append(connection)
        held[target.engine_key] = (connection, now)
        return connection

    def _drop_connection(self, target: Target, discard: bool = False) -> None:
        """Return this thread's connection to the pool, or with `discard`
        (after a failed query) close it for good: the query may have changed
        the session (`USE other`, `SET search_path` fail as queries with no
        result set, but have run), and a pooled connection would carry that
        into later queries, which would then read another database's tables
        without an error."""
        connection, _ = getattr(self._local, "connections", {}).pop(target.engine_key, (None, 0.0))
        if connection is None:
            return
        with self._lock:
            if connection in self._held:
                self._held.remove(connection)
        try:
            if discard and not connection.invalidated:
                connection.invalidate()
            connection.close()
        except Exception as exc:  # closing a broken connection must not hide the query's error
            log.debug("closing a failed connection: %s", exc)

    def _execute(self, engine: sqlalchemy.Engine, target: Target, query: str,
                 timeout: float) -> tuple[list[str], Sequence[Any]]:
        if target.engine_key in self._serial:  # in-memory sqlite: the shared connection, in turns
            with engine.connect() as connection:
                return self._execute_on(connection, engine, target, query, timeout)
        connection = self._connection(engine, target)
        try:
            answer = self._execute_on(connection, engine, target, query, timeout)
            if engine.dialect.name != "mysql":  # (MySQL: autocommit, see _engine_locked)
                connection.rollback()  # what returning it to the pool did: no snapshot outlives a query
        except BaseException:
            self._drop_connection(target, discard=True)
            raise
        return answer

    def _execute_on(self, connection: sqlalchemy.Connection, engine: sqlalchemy.Engine,
                    target: Target, query: str, timeout: float) -> tuple[list[str], Sequence[Any]]:
        if engine.dialect.name == "mysql":
            # Set once per connection, not per query (two round trips): a
            # query that fails drops its connection (_execute), and one that
            # returns rows cannot have changed the session's database or limit.
            session = (timeout, target.use_database)
            if connection.info.get(_MYSQL_SESSION) != session:
                if _MYSQL_SESSION not in connection.info:
                    # Autocommit would commit what a mistaken template changes
                    # (a DELETE fails "no result set" only after it has run):
                    # read-only transactions refuse it instead.
                    connection.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
                connection.info.pop(_MYSQL_SESSION, None)
                _limit_mysql(connection, timeout)
                if target.use_database:
                    connection.exec_driver_sql(f"USE `{target.use_database}`")
                connection.info[_MYSQL_SESSION] = session
            cancel_interrupt = None
        else:
            cancel_interrupt = _interrupt_after(connection, timeout)
        try:
            # no_parameters: the DBAPI gets the text as is, so '%' in
            # DATE_FORMAT(...) stays literal, as with the original tool.
            cursor = connection.execution_options(no_parameters=True).exec_driver_sql(query)
            if not cursor.returns_rows:
                raise EngineError("the query returned no result set (is it a SELECT?)")
            return list(cursor.keys()), cursor.fetchall()
        finally:
            if cancel_interrupt is not None:
                cancel_interrupt()

    def close(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for connection in held:
            try:
                connection.close()
            except Exception as exc:  # closing must not hide the run's outcome
                log.debug("closing a connection: %s", exc)
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()


_MYSQL_SESSION = "reportupdater_session"  # in Connection.info: (timeout, database) the session has


def _limit_mysql(connection: sqlalchemy.Connection, timeout: float) -> None:
    """Bound a query on the server (MariaDB max_statement_time, MySQL
    max_execution_time) and on the client (PyMySQL's socket read timeout)."""
    if getattr(connection.dialect, "is_mariadb", False):
        connection.exec_driver_sql(f"SET SESSION max_statement_time = {timeout:.3f}")
    else:
        connection.exec_driver_sql(f"SET SESSION max_execution_time = {int(timeout * 1000)}")
    raw: Any = connection.connection.dbapi_connection  # PyMySQL's private attributes
    if hasattr(raw, "_read_timeout"):  # PyMySQL applies it to every socket read
        raw._read_timeout = timeout + _CLIENT_GRACE
        if getattr(raw, "_sock", None) is not None:
            raw._sock.settimeout(raw._read_timeout)


def _interrupt_after(connection: sqlalchemy.Connection,
                     timeout: float) -> Callable[[], None] | None:
    """Other databases: interrupt the query from the watchdog thread at the
    timeout (sqlite3's interrupt(), psycopg's cancel()), where the driver
    offers it. Returns the function that cancels the interrupt."""
    raw = connection.connection.dbapi_connection
    stop = getattr(raw, "interrupt", None) or getattr(raw, "cancel", None)
    if stop is None:
        return None
    return watchdog.call_after(timeout, stop)


def _error_code(exc: sqlalchemy.exc.DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _dbapi_message(database: DatabaseConfig, exc: sqlalchemy.exc.DBAPIError) -> str:
    original = exc.orig
    detail = " ".join(str(original).split()) if original is not None else str(exc).splitlines()[0]
    kind = type(original).__name__ if original is not None else type(exc).__name__
    return f"database '{database.key}': {kind}: {detail}"
