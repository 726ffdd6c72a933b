# Stage 3 of 5: execution. The `hive` engine.
#
# Runs a report's HiveQL template, statement by statement on one cursor,
# through HiveServer2 (PyHive) and takes the result of the last statement;
# or, for `engine: hive-cli` databases and folders with no Hive server
# configured, through a command line (`hive -e QUERY` by default, or
# `beeline ... --outputformat=tsv2 -e`) whose TSV stdout is parsed. May
# touch: the Hive server (one connection per database for the run; a query
# over its timeout is cancelled on the server; a server that stops answering
# has its socket shut down by the watchdog) or the command's process group.
# Every error leaving this engine has the database's password masked. KEYS
# declares what it reads from config.yaml (its database keys and rules).

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config_keys import DEFAULT_TIMEOUT_SECONDS, SCALAR_SCHEMA, Key
from ..config import DatabaseConfig, hide_secrets
from ..credentials import read_creds_file
from ..deadlines import watchdog
from ..processes import run_command
from .. import report_types
from ..report_types import EngineKeys
from ..datatypes import EngineError, Job, Result
from .base import Engine, SiteDefaults, build_result, cell_text, render_query, truthy
from .script import parse_tsv

if TYPE_CHECKING:
    from ..config import DatabaseDraft, ReportDraft

log = logging.getLogger(__name__)
# thrift logs a refused connection itself, and with no handler configured
# for it Python prints that bare on stderr beside our one-line error.
logging.getLogger("thrift").addHandler(logging.NullHandler())


# ------------------------------------------------ what it reads from config.yaml

AUTH_MODES = ("NONE", "NOSASL", "LDAP", "KERBEROS", "CUSTOM")
# Command-line parts that put a password in `ps` for every user of the machine
# (beeline -p / --password=, a JDBC URL's ;password=): refused; beeline -w
# FILE reads it from a file.
_PASSWORD_OPTIONS = re.compile(r"^(?:-p|--password)(?:=.*)?$|password=", re.IGNORECASE)

DATABASE_KEYS = {key.name: key for key in (
    Key("username", "text", "Hive user", null_is_unset=False),
    Key("auth", "other", "Hive authentication", null_is_unset=False,
        schema={"type": "string", "pattern": "^(?i:NONE|NOSASL|LDAP|KERBEROS|CUSTOM)$"}),
    Key("password_env", "text", "Environment variable holding the Hive password (LDAP, CUSTOM)",
        null_is_unset=False),
    Key("kerberos_service_name", "text", "Hive's Kerberos service name (KERBEROS)", null_is_unset=False),
    Key("configuration", "other", "Hive session settings: setting -> value", null_is_unset=False,
        schema={"type": "object", "additionalProperties": SCALAR_SCHEMA}),
    Key("command", "other", "hive-cli: the command line the query is appended to", null_is_unset=False,
        schema={"anyOf": [{"type": "string", "pattern": r"\S"},
                          {"type": "array", "minItems": 1, "items": {"type": "string"}}]}),
)}


def _parse_database(database: DatabaseDraft) -> None:
    """Hive's keys of a database (its plain ones are read already): checked
    on any database that gives them."""
    raw, values = database.raw, database.values
    options = values["options"]
    if "auth" in raw:
        auth = raw["auth"].upper() if isinstance(raw["auth"], str) else None
        if auth not in AUTH_MODES:
            raise database.error("auth", f"{database.show('auth', raw['auth'])} is not one of "
                                         f"{', '.join(AUTH_MODES)}")
        options["auth"] = auth
    # What PyHive accepts: a password only with LDAP or CUSTOM, a Kerberos
    # service name only with KERBEROS.
    url_auth = re.search(r"[?&]auth=(\w+)", values.get("url") or "")
    if url_auth and "auth" not in options:
        options["auth"] = url_auth.group(1).upper()
    if "password_env" in raw and options.get("auth") not in ("LDAP", "CUSTOM"):
        raise database.error("password_env", "a password needs auth: LDAP or CUSTOM")
    if "kerberos_service_name" in raw and options.get("auth") != "KERBEROS":
        raise database.error("kerberos_service_name", "needs auth: KERBEROS")
    if "configuration" in raw:
        settings = raw["configuration"]
        if not isinstance(settings, dict):
            raise database.error("configuration", f"{database.show('configuration', settings)} is not a "
                                                  "mapping setting -> value")
        options["configuration"] = {name: database.scalar(f"configuration.{name}", value)
                                    for name, value in settings.items()}
    if "command" in raw:
        command = raw["command"]
        if isinstance(command, str):
            try:
                command = shlex.split(command)
            except ValueError:  # an unclosed quote
                command = None
        if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
            raise database.error("command",
                                 f"{database.show('command', raw['command'])} is not a command line")
        if any(_PASSWORD_OPTIONS.search(part) for part in command):
            raise database.error("command", "holds a password option (-p, --password): every user of the "
                                            "machine sees it in `ps`; use beeline -w PASSWORD_FILE")
        options["command"] = tuple(command)


def _check_database(database: DatabaseDraft) -> None:
    values = database.values
    if values["engine"] == "hive" and values.get("url") is None and "host" not in values:
        raise database.error("host", "is required for engine hive (or give 'url: hive://user@host:10000/db')")


def is_hive(database: DatabaseConfig) -> bool:
    """Whether a database is served by this engine (its `engine:`, or a hive:// URL)."""
    return report_types.database_engine(database.engine, database.url) is KEYS


def _report_database(report: ReportDraft) -> str | None:
    """The hive database a hive report uses: the one its `db` names, else the
    folder's only one, else None (the site default, else `hive -e`). A `db`
    naming a non-hive database (a defaults value meant for sql reports) is
    ignored, as the original tool ignored `db` for hive reports; one naming
    nothing, a broken entry, or leaving a choice of several is an error."""
    db = report.raw.get("db")
    if db is not None and is_hive(report.database(db)):
        return db
    hive = [key for key, database in report.databases.items() if is_hive(database)]
    if len(hive) > 1:
        raise report.error("db", f"name one of the hive databases {', '.join(hive)}")
    return hive[0] if hive else None


def _check_report(report: ReportDraft) -> None:
    report.check("db", lambda: _report_database(report))


KEYS = EngineKeys(
    type="hive", template_suffix=".hql", ready_when=("query", "partition", "script"),
    check_report=_check_report, database_keys=DATABASE_KEYS,
    database_engines=("hive", "hive-cli"), url_schemes=("hive",), creds_file_with_url=True,
    parse_database=_parse_database, check_database=_check_database,
)

DEFAULT_COMMAND = ("hive", "-e")
POLL_SECONDS = 0.5
PROGRESS_EVERY_SECONDS = 30.0
# Opening a connection (TCP, SASL, OpenSession, USE) may take this long at
# most, or the query's timeout when that is shorter.
CONNECT_TIMEOUT_SECONDS = 30.0
# How much longer than its timeout a query's exchange with the server may
# last (the cancel, the fetch) before the server counts as not answering.
ANSWER_MARGIN_SECONDS = 5.0


def split_statements(text: str) -> list[str]:
    """Split HiveQL on `;` outside string literals, backquotes and comments.

    Comments are dropped; empty statements (the trailing `;`) are not kept.
    """
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char in "'\"`":
            end = i + 1
            while end < n and text[end] != char:
                end += 2 if text[end] == "\\" and char != "`" else 1
            current.append(text[i:end + 1])
            i = end + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end == -1 else end  # keep the newline
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end == -1 else end + 2
            current.append(" ")
        elif char == ";":
            statements.append("".join(current))
            current = []
            i += 1
        else:
            current.append(char)
            i += 1
    statements.append("".join(current))
    return [statement.strip() for statement in statements if statement.strip()]


def hive_cell(value: Any) -> str:
    """A value as Hive prints it: booleans true/false, NULL empty."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return cell_text(value)


@dataclass(frozen=True)
class HiveServer:
    host: str
    port: int
    username: str | None
    database: str
    auth: str | None
    password: str | None = field(repr=False)
    kerberos_service_name: str | None
    configuration: dict[str, str]


def _server_from_url(url_text: str, where: str) -> HiveServer:
    from sqlalchemy.engine import make_url  # not at module level: config reads this module

    try:
        url = make_url(url_text)
    except Exception:  # never the text: it may hold a password
        raise EngineError(f"{where}: the URL is not a hive:// URL") from None
    if not url.get_backend_name().startswith("hive"):
        raise EngineError(f"{where}: expected a hive:// URL")
    # A key given twice in the URL's query comes as a tuple: the last one wins.
    query = {key: value if isinstance(value, str) else value[-1] for key, value in url.query.items()}
    auth = query.pop("auth", None)
    return HiveServer(host=url.host or "localhost", port=url.port or 10000, username=url.username,
                      database=url.database or "default", auth=auth, password=url.password,
                      kerberos_service_name=query.pop("kerberos_service_name", None),
                      configuration={k: str(v) for k, v in query.items()})


def _password(database: DatabaseConfig) -> str | None:
    variable = database.options.get("password_env")
    if variable:
        if variable not in os.environ:
            raise EngineError(f"database '{database.key}': environment variable "
                              f"{variable} is not set")
        return os.environ[variable]
    if database.creds_file:
        return read_creds_file(database.creds_file).get("password")
    return None


def server_for(database: DatabaseConfig) -> HiveServer:
    where = f"database '{database.key}'"
    if database.url:
        server = _server_from_url(database.url, where)
        settings = {**server.configuration, **database.options.get("configuration", {})}
        return HiveServer(server.host, server.port, server.username or database.options.get("username"),
                          server.database, server.auth or database.options.get("auth"),
                          server.password or _password(database),
                          server.kerberos_service_name or database.options.get("kerberos_service_name"),
                          settings)
    return HiveServer(host=database.host or "localhost", port=database.port or 10000,
                      username=database.options.get("username"), database=database.db or "default",
                      auth=database.options.get("auth"), password=_password(database),
                      kerberos_service_name=database.options.get("kerberos_service_name"),
                      configuration=dict(database.options.get("configuration", {})))


# The distributions of the modules PyHive needs to reach HiveServer2 (all
# dependencies of reportupdater: only a broken installation lacks one).
_PACKAGES = {"pyhive": "PyHive", "TCLIService": "PyHive", "thrift": "thrift",
             "thrift_sasl": "thrift-sasl", "puresasl": "pure-sasl"}


def _pyhive(server: HiveServer):
    """PyHive's hive module, or an error naming the package that is missing."""
    try:
        import puresasl  # noqa: F401  (PyHive imports these two only when it connects)
        import thrift_sasl  # noqa: F401
        from pyhive import hive
    except ImportError as exc:
        module = (exc.name or "pyhive").split(".")[0]
        raise EngineError(f"hive reports need the Python package {_PACKAGES.get(module, module)!r} "
                          f"(module {module}), a dependency of reportupdater missing from this "
                          "installation: reinstall reportupdater") from None
    kerberos = (server.auth or "").upper() == "KERBEROS"
    if kerberos and not _importable("kerberos") and not _importable("sasl"):
        # pure-sasl drops GSSAPI without `kerberos` (PyHive prefers the C
        # `sasl` package when there is one), and the connection then fails
        # with an obscure SASL error.
        raise EngineError("auth: KERBEROS needs the Python package 'kerberos': "
                          "pip install 'reportupdater[kerberos]' (it compiles against libkrb5-dev)")
    return hive


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@dataclass
class _Link:
    """A HiveServer2 connection and the socket under it (which PyHive does
    not expose: its timeout is ours to set)."""
    connection: Any
    socket: Any  # thrift.transport.TSocket.TSocket


class _SilenceGuard:
    """Shuts the socket down if the exchange with the server is not over in
    `seconds`: a blocked read then returns at once, whatever the server does
    (a socket timeout alone does not end a read of a server that trickles a
    byte now and then). disarm() says whether it fired."""

    def __init__(self, tsocket, seconds: float) -> None:
        self._socket = tsocket
        self._lock = threading.Lock()
        self._armed = True
        self.fired = False
        self._cancel = watchdog.call_after(seconds, self._fire)

    def _fire(self) -> None:
        with self._lock:
            if not self._armed:
                return
            self.fired = True
            handle = self._socket.handle
            if handle is not None:
                import socket  # here, not at start-up: only a guard that fires needs it
                # shutdown, not close: close() does not wake a thread blocked in recv()
                handle.shutdown(socket.SHUT_RDWR)

    def disarm(self) -> bool:
        self._cancel()
        with self._lock:
            self._armed = False
            return self.fired


def _transport(server: HiveServer, username: str, tsocket):
    """The transport PyHive's hive.connect builds for `server.auth` (PyHive
    0.7, hive.Connection.__init__), around our socket. Same checks, same
    messages."""
    from pyhive.hive import get_installed_sasl
    from thrift.transport.TTransport import TBufferedTransport

    auth = (server.auth or "NONE").upper()
    password = server.password
    if (password is not None) != (auth in ("LDAP", "CUSTOM")):
        raise ValueError("Password should be set if and only if in LDAP or CUSTOM mode; "
                         "Remove password or use one of those modes")
    if (server.kerberos_service_name is not None) != (auth == "KERBEROS"):
        raise ValueError("kerberos_service_name should be set if and only if in KERBEROS mode")
    if auth == "NOSASL":
        return TBufferedTransport(tsocket)
    if auth not in ("LDAP", "KERBEROS", "NONE", "CUSTOM"):
        raise NotImplementedError("Only NONE, NOSASL, LDAP, KERBEROS, CUSTOM "
                                  f"authentication are supported, got {server.auth}")
    import thrift_sasl

    sasl_auth = "GSSAPI" if auth == "KERBEROS" else "PLAIN"
    if password is None:
        password = "x"  # as PyHive: NONE needs a password, any non-empty one

    def sasl_client():
        return get_installed_sasl(host=server.host, sasl_auth=sasl_auth,
                                  service=server.kerberos_service_name, username=username,
                                  password=password)
    return thrift_sasl.TSaslClientTransport(sasl_client, sasl_auth, tsocket)


def _open(hive, server: HiveServer, connect_timeout: float) -> _Link:
    """A session on the server, within `connect_timeout` (each read; the
    whole opening within it plus the margin)."""
    import getpass

    from thrift.transport.TSocket import TSocket

    tsocket = TSocket(server.host, server.port)
    tsocket.setTimeout(connect_timeout * 1000)
    guard = None
    try:
        username = server.username or getpass.getuser()
        transport = _transport(server, username, tsocket)
        guard = _SilenceGuard(tsocket, connect_timeout + ANSWER_MARGIN_SECONDS)
        connection = hive.connect(thrift_transport=transport, username=username,
                                  database=server.database,
                                  configuration=server.configuration or None)
    except Exception as exc:
        fired = guard is not None and guard.disarm()
        _close_quietly(tsocket)
        if fired or _timed_out(exc):
            raise _unanswered(server, connect_timeout) from None
        raise EngineError(f"cannot connect to Hive at {server.host}:{server.port}: "
                          f"{_one_line(exc)}") from None
    if guard.disarm():  # fired just as the session opened: the socket is shut
        _close_quietly(tsocket)
        raise _unanswered(server, connect_timeout)
    return _Link(connection, tsocket)


def _timed_out(exc: BaseException) -> bool:
    """Whether a read or the TCP connect timed out (thrift wraps the
    socket's error, PyHive may wrap thrift's)."""
    from thrift.transport.TTransport import TTransportException

    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError):
            return True
        if isinstance(seen, TTransportException) and seen.type == TTransportException.TIMED_OUT:
            return True
        seen = getattr(seen, "inner", None) or seen.__cause__ or seen.__context__
    return False


def _unanswered(server: HiveServer, seconds: float) -> EngineError:
    return EngineError(f"Hive server at {server.host}:{server.port} did not answer "
                       f"within {seconds:g} s")


class HiveEngine(Engine):
    type = "hive"

    def __init__(self, folder, site: SiteDefaults = SiteDefaults()):
        super().__init__(folder, site)
        self._connections: dict[str, _Link] = {}

    def run(self, job: Job) -> Result:
        header, rows = self._rows(job, render_query(job))
        return build_result(header, rows, job.interval)

    def is_ready(self, job: Job) -> bool:
        check = job.report.ready_when
        if check is not None and check.query is not None:
            _, rows = self._rows(job, render_query(job, check.query))
            return bool(rows) and truthy(rows[0][0])
        if check is not None and check.partition is not None:
            table, *keys = render_query(job, check.partition).split("/")
            spec = ", ".join(f"{name}={value}" if value.isdigit() else f"{name}='{value}'"
                             for name, value in (key.split("=", 1) for key in keys))
            try:
                _, rows = self._rows(job, f"SHOW PARTITIONS {table} PARTITION ({spec})")
            except EngineError as exc:
                log.info("%s: partition %s/%s not there: %s", job.describe(), table, spec, exc)
                return False
            return bool(rows)
        return super().is_ready(job)

    def _rows(self, job: Job, query: str) -> tuple[list[str], list]:
        """Header and rows (as text) of the last statement of `query`."""
        database = self.folder.databases.get(job.report.db or "")
        try:
            return self._rows_unmasked(job, database, query)
        except EngineError as exc:
            raise EngineError(hide_secrets(str(exc), self._secrets(database))) from None

    def _secrets(self, database: DatabaseConfig | None) -> list[str]:
        """The passwords this database's (or the site's) errors must never show."""
        from sqlalchemy.engine import make_url
        secrets: list[str | None] = []
        for url_text in (database.url if database else None, self.site.hive_url):
            if url_text:
                try:
                    secrets.append(make_url(url_text).password)
                except Exception:  # not a URL: the whole text is unknown ground
                    secrets.append(url_text)
        if database is not None:
            with contextlib.suppress(EngineError):  # its own error says why
                secrets.append(_password(database))
        return [secret for secret in secrets if secret]

    def _rows_unmasked(self, job: Job, database: DatabaseConfig | None,
                       query: str) -> tuple[list[str], list]:
        log.debug("%s: query:\n%s", job.describe(), query)
        if database is not None and database.engine == "hive-cli":
            return self._run_command(job, query, database.options.get("command") or DEFAULT_COMMAND,
                                     job.report.timeout or database.timeout)
        if database is not None:
            key, server = database.key, server_for(database)
            timeout = job.report.timeout or database.timeout
        elif self.site.hive_url:
            key, server = "(site)", _server_from_url(self.site.hive_url, "--hive-url")
            timeout = job.report.timeout
        else:  # no Hive server configured anywhere: the original's `hive -e`
            return self._run_command(job, query, DEFAULT_COMMAND, job.report.timeout)
        return self._run_server(job, key, server, query, timeout or DEFAULT_TIMEOUT_SECONDS)

    # -- HiveServer2

    def _connection(self, key: str, server: HiveServer, timeout: float) -> _Link:
        # A PyHive connection is not shared between threads: one per job thread.
        key = f"{key}@{threading.get_ident()}"
        if key not in self._connections:
            self._connections[key] = _open(_pyhive(server), server,
                                           min(timeout, CONNECT_TIMEOUT_SECONDS))
        return self._connections[key]

    def _run_server(self, job: Job, key: str, server: HiveServer, query: str,
                    timeout: float) -> tuple[list[str], list]:
        statements = split_statements(query)
        if not statements:
            raise EngineError("the template holds no statement")
        link = self._connection(key, server, timeout)
        key = f"{key}@{threading.get_ident()}"
        # Each blocking read is bounded by the socket timeout, the whole
        # exchange (a server trickling bytes too) by the guard.
        answer_within = timeout + ANSWER_MARGIN_SECONDS
        link.socket.setTimeout(answer_within * 1000)
        guard = _SilenceGuard(link.socket, answer_within)
        deadline = time.monotonic() + timeout
        cursor = link.connection.cursor()  # no request yet
        ran_no_query = False
        try:
            try:
                for statement in statements:
                    self._execute(job, cursor, statement, deadline, timeout)
                if not cursor.description:
                    ran_no_query = True  # `USE other` alone, say: it has run
                    raise EngineError("the last statement returned no result set "
                                      "(is it a SELECT?)")
                header = [column[0].rsplit(".", 1)[-1] for column in cursor.description]
                rows = [[hive_cell(value) for value in row] for row in cursor.fetchall()]
            finally:
                _close_quietly(cursor)  # a request too: still under the guard
        except EngineError:
            if guard.disarm():  # the cancel or the close went unanswered
                self._forget(key)
                raise _unanswered(server, answer_within) from None
            if len(statements) > 1 or ran_no_query:  # it may have changed the session (see below)
                self._end_session(key)
            raise
        except Exception as exc:
            fired = guard.disarm()
            self._forget(key)  # the connection may be broken: open a new one next time
            if fired or _timed_out(exc):
                raise _unanswered(server, answer_within) from None
            raise EngineError(f"Hive: {_one_line(exc)}") from None
        if guard.disarm():  # fired after the last answer came: the socket is shut
            self._forget(key)
        elif len(statements) > 1:
            # A `SET` or `USE` before the query changed the session, which is
            # held for the run: later queries (other reports') would run with
            # it, reading another database's table of the same name or with
            # another time zone, without an error. As with `hive -e`, each
            # such template gets a session of its own.
            self._end_session(key)
        return header, rows

    def _execute(self, job: Job, cursor, statement: str, deadline: float, timeout: float) -> None:
        from TCLIService.ttypes import TOperationState

        running = (TOperationState.INITIALIZED_STATE, TOperationState.PENDING_STATE,
                   TOperationState.RUNNING_STATE)
        started = last_progress = time.monotonic()
        cursor.execute(statement, async_=True)
        while True:
            status = cursor.poll()
            state = status.operationState
            if state not in running:
                break
            now = time.monotonic()
            if now >= deadline:
                cursor.cancel()  # a failure here is the connection's, handled by the caller
                raise EngineError(f"Hive query exceeded its timeout of {timeout:g} s "
                                  "and was cancelled on the server")
            if now - last_progress >= PROGRESS_EVERY_SECONDS:
                log.info("%s: Hive query running for %.0f s", job.describe(), now - started)
                last_progress = now
            time.sleep(POLL_SECONDS)
        if state != TOperationState.FINISHED_STATE:
            message = status.errorMessage or TOperationState._VALUES_TO_NAMES.get(state, str(state))
            raise EngineError(f"Hive: {_one_line(message)}")

    def _forget(self, key: str) -> None:
        """Drop a connection that may be broken, without a word to the server
        (which may not answer): its socket is closed."""
        link = self._connections.pop(key, None)
        if link is not None:
            _close_quietly(link.socket)

    # -- command line

    def _run_command(self, job: Job, query: str, command: tuple[str, ...],
                     timeout: float | None) -> tuple[list[str], list]:
        # Comments dropped (beeline prints nothing for a query that starts
        # with one); the header switched on for the hive CLI.
        statements = ["SET hive.cli.print.header=true", *split_statements(query)]
        argv = [*command, ";\n".join(statements) + ";"]
        stdout = run_command(argv, self.query_folder, timeout or DEFAULT_TIMEOUT_SECONDS,
                             job.describe(), command[0])
        header, rows = parse_tsv(_last_result_set(stdout, statements))
        if not header:
            raise EngineError(f"{command[0]} printed no result (a header line is required)")
        return [name.rsplit(".", 1)[-1] for name in header], rows

    def close(self) -> None:
        """Close the sessions on the server."""
        for key in list(self._connections):
            self._end_session(key)

    def _end_session(self, key: str) -> None:
        """Close a connection's session on the server; one that does not
        answer within the connect timeout is left to expire there."""
        link = self._connections.pop(key, None)
        if link is None:
            return
        link.socket.setTimeout(CONNECT_TIMEOUT_SECONDS * 1000)
        guard = _SilenceGuard(link.socket, CONNECT_TIMEOUT_SECONDS + ANSWER_MARGIN_SECONDS)
        _close_quietly(link.connection)
        guard.disarm()
        _close_quietly(link.socket)


_SET = re.compile(r"^SET\s+([^=\s]+)\s*=", re.IGNORECASE)


def _last_result_set(stdout: str, statements: list[str]) -> str:
    """The output of the last statement: beeline prints a `key value` result
    set for every SET before it (the hive CLI prints none), and may echo
    prompt lines (`0: jdbc:hive2://...> ...`)."""
    lines = [line for line in stdout.split("\n")
             if not (line.split(": ", 1)[0].isdigit() and "jdbc:" in line)]
    for statement in statements[:-1]:
        match = _SET.match(statement)
        if (match and len(lines) >= 2 and lines[0].rstrip("\r") == "key\tvalue"
                and lines[1].startswith(match.group(1) + "\t")):
            del lines[:2]
    return "\n".join(lines)


def _one_line(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 500 else text[:497] + "..."


def _close_quietly(thing: Any) -> None:
    with contextlib.suppress(Exception):
        thing.close()
