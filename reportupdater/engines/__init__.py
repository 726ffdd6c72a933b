# Stage 3 of 5: execution. The engine registry.
#
# An engine for report type `T` is the Engine subclass in module
# `engines/T.py` (`-` becomes `_`): adding an engine means adding a file.
# Modules are imported on first use, so an optional driver (PyHive) only
# matters to the reports that need it.

from __future__ import annotations

import importlib

from ..datatypes import EngineError
from .base import Engine, SiteDefaults, build_result, cell_text, split_result

__all__ = ["Engine", "SiteDefaults", "build_result", "cell_text", "engine_class", "split_result"]


def engine_class(report_type: str) -> type[Engine]:
    """The Engine subclass for a report type; raises EngineError when none."""
    module_name = report_type.replace("-", "_")
    if not module_name.isidentifier() or module_name == "base":
        raise EngineError(f"no engine for report type {report_type!r}")
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{module_name}":
            raise EngineError(f"no engine for report type {report_type!r}") from None
        raise EngineError(f"engine {report_type!r} needs {exc.name!r}, which is not installed") from None
    for value in vars(module).values():
        if (isinstance(value, type) and issubclass(value, Engine)
                and getattr(value, "type", None) == report_type):
            return value
    raise EngineError(f"no engine for report type {report_type!r}")
