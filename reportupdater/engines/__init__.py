# Stage 3 of 5: execution. The engine for a report type.
#
# An engine for report type `T` is the Engine subclass of the module that
# report_types.ENGINES names for `T`; that module also declares the config
# keys the engine reads (its KEYS). Adding an engine means adding its file
# and its line there. Modules are imported on first use, so an optional
# driver (PyHive) only matters to the reports that need it.

from __future__ import annotations

from .. import report_types
from ..datatypes import EngineError
from .base import Engine, SiteDefaults, Started, build_result, cell_text, split_result

__all__ = ["Engine", "SiteDefaults", "Started", "build_result", "cell_text", "engine_class", "split_result"]


def engine_class(report_type: str) -> type[Engine]:
    """The Engine subclass for a report type; raises EngineError when none."""
    try:
        module = report_types.module(report_type)
    except report_types.UnknownReportType as exc:
        raise EngineError(str(exc)) from None
    for value in vars(module).values():
        if (isinstance(value, type) and issubclass(value, Engine)
                and getattr(value, "type", None) == report_type):
            return value
    raise EngineError(f"no engine for report type {report_type!r}")
