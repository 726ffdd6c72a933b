# Stage 3 of 5: execution. The `sql` engine.
#
# Renders a report's template and runs it through SQLAlchemy 2 on the
# database its `db` names: the classic host/port/db/creds_file form becomes a
# mysql+pymysql URL, `url:` takes any SQLAlchemy URL. May touch: those
# databases (one SQLAlchemy engine per database entry, reused for the whole
# run), the creds files, and a sqlite `seed:` (to create a missing demo
# database). Passwords never reach a log line or an error message.

from __future__ import annotations

import configparser
import logging
import os
import sqlite3
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import URL, make_url

from .. import templates
from ..config import DatabaseConfig
from .base import Engine, EngineError, Job, Result, build_result

log = logging.getLogger(__name__)


def read_creds_file(path: Path) -> dict[str, str]:
    """user/password (and host/port if given) from a my.cnf [client] section."""
    parser = configparser.ConfigParser(allow_no_value=True, strict=False, interpolation=None,
                                       comment_prefixes=("#", ";", "!"))
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineError(f"cannot read creds file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except configparser.Error as exc:
        raise EngineError(f"creds file {path} is not a my.cnf file: {exc.message.splitlines()[0]}") from None
    if not parser.has_section("client"):
        raise EngineError(f"creds file {path} has no [client] section")
    creds: dict[str, str] = {}
    for key in ("user", "password", "host", "port"):
        value = parser.get("client", key, fallback=None)
        if value is not None:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            creds[key] = value
    return creds


def database_url(database: DatabaseConfig) -> URL:
    """The SQLAlchemy URL of a database entry (may hold a password: never log it as is)."""
    if database.url is not None:
        try:
            return make_url(database.url)
        except (sqlalchemy.exc.ArgumentError, ValueError):
            raise EngineError(f"database '{database.key}': 'url' is not a SQLAlchemy URL") from None
    if database.auto_find_db_shard:
        raise EngineError(f"database '{database.key}': auto_find_db_shard is not supported yet")
    assert database.creds_file is not None
    creds = read_creds_file(database.creds_file)
    return URL.create(
        "mysql+pymysql",
        username=creds.get("user"),
        password=creds.get("password"),
        host=database.host,
        port=database.port,
        database=database.db,
        query={"charset": "utf8mb4"},
    )


def _seed_sqlite(url: URL, seed: Path) -> None:
    """Build a missing sqlite database from its seed script, atomically."""
    target = Path(url.database or "")
    if not url.get_backend_name() == "sqlite" or not url.database or target.exists():
        return
    partial = target.with_name(f".{target.name}.seeding")
    partial.unlink(missing_ok=True)
    try:
        connection = sqlite3.connect(partial)
        try:
            connection.executescript(seed.read_text(encoding="utf-8"))
            connection.commit()
        finally:
            connection.close()
        os.replace(partial, target)
    except (OSError, sqlite3.Error) as exc:
        partial.unlink(missing_ok=True)
        raise EngineError(f"cannot build {target} from {seed}: {exc}") from None
    log.info("built %s from %s", target, seed)


class SqlEngine(Engine):
    type = "sql"

    def __init__(self, folder):
        super().__init__(folder)
        self._engines: dict[str, sqlalchemy.Engine] = {}

    def _engine(self, database: DatabaseConfig) -> sqlalchemy.Engine:
        engine = self._engines.get(database.key)
        if engine is None:
            url = database_url(database)
            if database.seed is not None:
                _seed_sqlite(url, database.seed)
            try:
                engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
            except Exception as exc:  # unknown dialect, missing driver
                raise EngineError(f"database '{database.key}' "
                                  f"({url.render_as_string(hide_password=True)}): {exc}") from None
            self._engines[database.key] = engine
        return engine

    def render(self, job: Job) -> str:
        assert job.report.template is not None
        values = templates.interval_values(job.interval.start, job.interval.end)
        values.update(job.explode)
        try:
            return templates.render(job.report.template, values)
        except templates.TemplateError as exc:
            raise EngineError(str(exc)) from None

    def run(self, job: Job) -> Result:
        query = self.render(job)
        log.debug("%s: query:\n%s", job.describe(), query)
        database = self.folder.databases[job.report.db or ""]
        engine = self._engine(database)
        try:
            with engine.connect() as connection:
                # no_parameters: the DBAPI gets the text as is, so '%' in
                # DATE_FORMAT(...) stays literal, as with the original tool.
                cursor = connection.execution_options(no_parameters=True).exec_driver_sql(query)
                if not cursor.returns_rows:
                    raise EngineError("the query returned no result set (is it a SELECT?)")
                header = list(cursor.keys())
                rows = cursor.fetchall()
        except sqlalchemy.exc.DBAPIError as exc:
            raise EngineError(_dbapi_message(database, exc)) from None
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise EngineError(f"database '{database.key}': {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0]}") from None
        return build_result(header, rows, job.interval)

    def close(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()


def _dbapi_message(database: DatabaseConfig, exc: sqlalchemy.exc.DBAPIError) -> str:
    original = exc.orig
    detail = " ".join(str(original).split()) if original is not None else str(exc).splitlines()[0]
    kind = type(original).__name__ if original is not None else type(exc).__name__
    return f"database '{database.key}': {kind}: {detail}"
