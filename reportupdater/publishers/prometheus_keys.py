# Stage 1 of 5 for stage 5: the Prometheus publisher's configuration
# (config -> plan -> execute -> store -> publish).
#
# Publishers own their keys, as engines do: the Prometheus publisher
# (prometheus.py) declares here, as plain data, its top-level section's keys
# and its report key, and the naming rules config checks at load;
# config_keys.py makes them Key declarations and config.py parses them into
# the settings below. A module of its own, importing nothing of the package,
# because config imports it: loading a config must reach no writer.
# May touch: nothing.

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 30.0
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

SECTION_DOC = ("Publish reports' prometheus sections with remote write: remote_write_url, auth, "
               "headers, read_url")
SECTION_KEYS: dict[str, dict[str, Any]] = {
    "remote_write_url": {"kind": "other", "required": True, "null_is_unset": False,
                         "doc": "The store's remote-write endpoint (${VAR} from the environment)",
                         "schema": {"type": "string", "pattern": r"^\s*[Hh][Tt][Tt][Pp][Ss]?://"}},
    "basic_auth_user": {"kind": "text", "doc": "HTTP basic authentication: the user"},
    "basic_auth_password_env": {"kind": "text",
                                "doc": "The environment variable holding the basic-auth password"},
    "headers": {"kind": "other", "doc": "HTTP headers sent with every request: name -> value",
                "schema": {"type": "object", "additionalProperties": {"type": "string"}}},
    "timeout": {"kind": "seconds", "doc": "Seconds one request may take",
                "default": DEFAULT_TIMEOUT_SECONDS},
    "read_url": {"kind": "other",
                 "doc": "The store's query API base (http://127.0.0.1:9090): every request "
                        "is read back and compared (${VAR} from the environment)",
                 "schema": {"type": "string", "pattern": r"^\s*[Hh][Tt][Tt][Pp][Ss]?://"}},
}
REPORT_KEYS: dict[str, dict[str, Any]] = {
    "prometheus": {
        "kind": "other", "doc": "Send columns to the prometheus store: metrics (name -> column), labels",
        "schema": {"type": "object", "required": ["metrics"], "additionalProperties": False,
                   "properties": {
                       "metrics": {"type": "object", "minProperties": 1,
                                   "propertyNames": {"pattern": r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
                                   "additionalProperties": {"type": "string", "pattern": r"\S"}},
                       "labels": {"type": "array", "items": {
                           "type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}}}}},
}


def metric_name_problem(name: str) -> str | None:
    """Why `name` is not a Prometheus metric name, or None."""
    if not _METRIC_NAME.match(name) or name.startswith("__"):
        return f"{name!r} is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*, no leading __)"
    return None


def label_name_problem(name: str) -> str | None:
    """Why `name` is not a Prometheus label name, or None."""
    if not _LABEL_NAME.match(name) or name.startswith("__"):
        return f"{name!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)"
    return None


@dataclass(frozen=True)
class PrometheusSettings:
    remote_write_url: str
    basic_auth_user: str | None = None
    basic_auth_password_env: str | None = None  # the name of the variable holding the password
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    read_url: str | None = None  # the query API base: read every request back, compare


@dataclass(frozen=True)
class PrometheusTarget:
    metrics: Mapping[str, str]          # metric name -> result column
    labels: Sequence[str] | None = None  # explode keys and/or result columns; None: every explode key
