# Stage 1 of 5: configuration (config -> plan -> execute -> store -> publish).
#
# The report types: which engine module computes each `type:` of
# config.yaml, and what that engine declares it reads (its KEYS, an
# EngineKeys). config.py validates a report with its type's declaration and
# config_keys.py builds the schema and the key tables from all of them, so
# neither names a type; engines/__init__.py finds the Engine class here.
# Adding an engine is adding its module (which defines KEYS and its Engine
# subclass) and its line in ENGINES. An engine module is imported on first
# use, by name, so its module must keep its drivers' imports inside the
# functions that use them (tests/test_architecture.py checks that loading a
# config imports none). Standard library only; touches nothing.

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import DatabaseDraft, ReportDraft
    from .config_keys import Key

# Report type -> the module that declares and computes it: one line per engine.
# The first is what a report without `type:` is.
ENGINES: dict[str, str] = {
    "sql": "reportupdater.engines.sql",
    "script": "reportupdater.engines.script",
    "hive": "reportupdater.engines.hive",
}


class UnknownReportType(LookupError):
    """No engine is registered for the type, or its module cannot be imported."""


@dataclass(frozen=True)
class EngineKeys:
    """What one engine reads from config.yaml, declared in its module as KEYS.

    `ready_when` lists the kinds its reports may use; `ready_when_refused`
    says, per kind it cannot check, why (a kind without a reason gets a
    generic one). `report_keys` and `database_keys` are keys only this
    engine reads: config.py parses the plain ones (config_keys.PLAIN_KINDS)
    into ReportConfig.options / DatabaseConfig.options, and `check_report` /
    `check_database` add the engine's own rules (and its keys' shaped values)
    through the draft config.py hands them."""

    type: str
    template_suffix: str | None  # the template's file suffix; None: `execute` names a script
    ready_when: tuple[str, ...]
    ready_when_refused: dict[str, str] = field(default_factory=dict)
    report_keys: dict[str, Key] = field(default_factory=dict)
    database_keys: dict[str, Key] = field(default_factory=dict)
    check_report: Callable[[ReportDraft], None] | None = None
    # Databases: the `engine:` values of the databases it serves, and the URL
    # schemes (prefixes) that make a database its whatever `engine:` says.
    database_engines: tuple[str, ...] = ()
    url_schemes: tuple[str, ...] = ()
    creds_file_with_url: bool = False  # its URLs may take their password from creds_file
    # Its database keys that describe the server too: refused beside `url`.
    not_with_url: tuple[str, ...] = ()
    # Reads its database keys, on every database that gives them.
    parse_database: Callable[[DatabaseDraft], None] | None = None
    # Its rules for a database it serves, once every key is read.
    check_database: Callable[[DatabaseDraft], None] | None = None


_loaded: dict[str, EngineKeys] = {}


def register(report_type: str, module: str) -> None:
    """Make `module` (importable, with KEYS and an Engine subclass for the
    type) the engine of `report_type`; replaces an earlier registration."""
    ENGINES[report_type] = module
    _loaded.pop(report_type, None)


def unregister(report_type: str) -> None:
    ENGINES.pop(report_type, None)
    _loaded.pop(report_type, None)


def names() -> tuple[str, ...]:
    return tuple(ENGINES)


def default_type() -> str:
    return next(iter(ENGINES))


def module(report_type: str) -> Any:
    """The engine's module, imported on first use; raises UnknownReportType."""
    name = ENGINES.get(report_type)
    if name is None:
        raise UnknownReportType(f"no engine for report type {report_type!r}")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            raise UnknownReportType(f"no engine for report type {report_type!r}") from None
        raise UnknownReportType(f"engine {report_type!r} needs {exc.name!r}, "
                                "which is not installed") from None


def declaration(report_type: str) -> EngineKeys:
    """The keys the type's engine declares; raises UnknownReportType."""
    if report_type not in _loaded:
        keys = getattr(module(report_type), "KEYS", None)
        if not isinstance(keys, EngineKeys) or keys.type != report_type:
            raise UnknownReportType(f"engine module {ENGINES[report_type]} declares no KEYS "
                                    f"for report type {report_type!r}")
        _loaded[report_type] = keys
    return _loaded[report_type]


def declarations() -> list[EngineKeys]:
    """Every registered engine's declaration, in registry order."""
    return [declaration(name) for name in ENGINES]


def database_engine(engine: str, url: str | None) -> EngineKeys | None:
    """The engine a database is for: the first whose URL schemes its URL
    has, else the one whose `engine:` values hold its own."""
    engines = declarations()
    by_url = [keys for keys in engines if keys.url_schemes and (url or "").startswith(keys.url_schemes)]
    by_engine = [keys for keys in engines if engine in keys.database_engines]
    found = by_url or by_engine
    return found[0] if found else None


def ready_when_kinds() -> tuple[str, ...]:
    """Every kind some engine checks, each engine's order kept (a kind new
    to the list goes right after the one before it in its engine's list)."""
    kinds: list[str] = []
    for keys in declarations():
        previous = None
        for kind in keys.ready_when:
            if kind not in kinds:
                kinds.insert(kinds.index(previous) + 1 if previous is not None else 0, kind)
            previous = kind
    return tuple(kinds)
