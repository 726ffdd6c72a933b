# Publishing, for people: a Grafana dashboard for a query folder.
#
# Builds the dashboard JSON (importable through Grafana's UI or file
# provisioning) from the reports' `graphite:` sections: one panel per metric,
# a Graphite datasource variable, and a template variable for every
# placeholder in the metric paths (wiki, editor, bucket ...); or, for the
# SQL tables publisher, one panel per number column of each report's table;
# or, for the Prometheus publisher, one PromQL panel per metric of each
# report's `prometheus:` section, with a variable per label.
# Pure: reads the config objects (and the column kinds it is given) only
# and returns a dict.

from __future__ import annotations

import hashlib
import re
import string
from typing import Any

from .config import FolderConfig, ReportConfig

PANEL_WIDTH, PANEL_HEIGHT = 12, 8
_FIELD = re.compile(r"\{(\w+)\}")


def _components(report: ReportConfig, prefix: str) -> list[str]:
    assert report.graphite is not None
    path = report.graphite.path
    if prefix:
        path = f"{prefix.rstrip('.')}.{path}"
    return path.split(".")


def _placeholders(component: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(component) if name]


def _target(components: list[str], metric: str) -> str:
    """The Graphite target of one metric: placeholders become $variables."""
    parts = []
    for component in components:
        parts.append(_FIELD.sub(lambda m: metric if m.group(1) == "_metric" else f"${m.group(1)}",
                                component))
    return ".".join(parts)


def _variable(name: str, components: list[str], index: int) -> dict[str, Any]:
    """A multi-value query variable listing the values found at that path position."""
    before = [_FIELD.sub(lambda m: "*" if m.group(1) == "_metric" else f"${m.group(1)}", part)
              for part in components[:index]]
    component = components[index]
    query = ".".join(before + [_FIELD.sub("*", component)])
    variable: dict[str, Any] = {
        "name": name, "label": name, "type": "query",
        "datasource": {"type": "graphite", "uid": "${datasource}"},
        "query": query, "definition": query, "refresh": 1,
        "multi": True, "includeAll": True, "allValue": "*", "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }
    if component != f"{{{name}}}":
        # The node also holds literal text ("edits_{wiki}"): keep only the value.
        pattern = re.escape(component).replace(re.escape(f"{{{name}}}"), "(.*)")
        pattern = _FIELD.sub(".*", pattern.replace("\\{", "{").replace("\\}", "}"))
        variable["regex"] = f"/^{pattern}$/"
    return variable


def build(folder: FolderConfig, title: str | None = None) -> dict[str, Any]:
    prefix = folder.graphite.prefix if folder.graphite else ""
    variables: dict[str, dict[str, Any]] = {}
    panels: list[dict[str, Any]] = []
    for report in folder.reports.values():
        if report.graphite is None:
            continue
        components = _components(report, prefix)
        for index, component in enumerate(components):
            for name in _placeholders(component):
                if name != "_metric" and name not in variables:
                    variables[name] = _variable(name, components, index)
        nodes = [i for i, component in enumerate(components)
                 if any(name != "_metric" for name in _placeholders(component))]
        for metric in report.graphite.metrics:
            target = _target(components, metric)
            if nodes:
                target = f"aliasByNode({target}, {', '.join(str(i) for i in nodes)})"
            position = len(panels)
            panels.append({
                "id": position + 1,
                "type": "timeseries",
                "title": f"{report.key}: {metric}",
                "datasource": {"type": "graphite", "uid": "${datasource}"},
                "targets": [{"refId": "A", "target": target}],
                "gridPos": {"x": (position % 2) * PANEL_WIDTH, "y": (position // 2) * PANEL_HEIGHT,
                            "w": PANEL_WIDTH, "h": PANEL_HEIGHT},
                "fieldConfig": {"defaults": {"custom": {"drawStyle": "line", "spanNulls": False}},
                                "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            })
    title = title or f"reportupdater: {folder.query_folder.resolve().name}"
    return {
        "uid": hashlib.sha1(title.encode()).hexdigest()[:12],
        "title": title,
        "tags": ["reportupdater"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1y", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Graphite", "type": "datasource", "query": "graphite",
             "current": {}, "hide": 0},
            *variables.values(),
        ]},
        "panels": panels,
    }


# ------------------------------------------------------------- SQL tables
#
# `grafana --datasource postgres`: panels whose queries read the tables the
# tables publisher fills (Grafana's PostgreSQL data source and its
# $__timeFilter macro). Which result columns are numbers is known only from
# the results: the caller says, per report, its text and number columns.


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_query(table: str, schema: str | None, labels: list[str], value: str) -> str:
    """One panel's query: time, the label (text) columns, one number column."""
    source = (f"{_quoted(schema)}." if schema else "") + _quoted(table)
    columns = ", ".join([f'{_quoted("date")} AS "time"', *map(_quoted, labels), _quoted(value)])
    return (f"SELECT {columns} FROM {source} WHERE $__timeFilter({_quoted('date')}) "
            f"AND {_quoted(value)} IS NOT NULL ORDER BY 1")


def build_sql(folder: FolderConfig, columns: dict[str, tuple[list[str], list[str]]],
              title: str | None = None) -> dict[str, Any]:
    """columns: report key -> (its text result columns, its number result columns)."""
    schema = folder.tables.schema if folder.tables else None
    panels: list[dict[str, Any]] = []
    for report in folder.reports.values():
        table = report.table_name
        if table is None or report.key not in columns:
            continue
        texts, numbers = columns[report.key]
        labels = [*report.explode_by, *texts]
        for value in numbers:
            position = len(panels)
            panels.append({
                "id": position + 1, "type": "timeseries", "title": f"{report.key}: {value}",
                "datasource": {"type": "grafana-postgresql-datasource", "uid": "${datasource}"},
                "targets": [{"refId": "A", "format": "time_series", "rawQuery": True,
                             "editorMode": "code", "rawSql": sql_query(table, schema, labels, value)}],
                "gridPos": {"x": (position % 2) * PANEL_WIDTH, "y": (position // 2) * PANEL_HEIGHT,
                            "w": PANEL_WIDTH, "h": PANEL_HEIGHT},
                "fieldConfig": {"defaults": {"custom": {"drawStyle": "line", "spanNulls": False}},
                                "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            })
    title = title or f"reportupdater: {folder.query_folder.resolve().name} (tables)"
    return {
        "uid": hashlib.sha1(title.encode()).hexdigest()[:12], "title": title,
        "tags": ["reportupdater"], "timezone": "utc", "schemaVersion": 39, "version": 1,
        "editable": True, "time": {"from": "now-1y", "to": "now"},
        "templating": {"list": [{"name": "datasource", "label": "PostgreSQL", "type": "datasource",
                                 "query": "grafana-postgresql-datasource", "current": {}, "hide": 0}]},
        "panels": panels,
    }


# ------------------------------------------------------------- Prometheus
#
# `grafana --datasource prometheus`: one panel per metric of each report's
# `prometheus:` section, through a Prometheus data source variable (which
# VictoriaMetrics, Mimir and Thanos serve too), and one multi-value variable
# per label. A report has one sample per interval, at its start, while
# PromQL looks back only 5 minutes for an instant: a bare selector would
# show a dot a day. last_over_time over the report's interval length holds
# each value until the next interval starts.

# The longest interval of each granularity (a month's window must reach
# back to its first day from its last), less a second: Prometheus's range
# includes its start (VictoriaMetrics's does not), and a full day would show
# a day's value again at the next midnight when that day has no sample.
PROMQL_WINDOWS = {granularity: f"{days * 86400 - 1}s" for granularity, days in
                  {"days": 1, "weeks": 7, "months": 31, "quarters": 92, "years": 366}.items()}
PROMQL_WINDOWS["hours"] = "3599s"


def promql_target(metric: str, labels: list[str], window: str) -> str:
    """A panel's PromQL: the metric, each label matched by its $variable."""
    matchers = ",".join(f'{label}=~"${label}"' for label in labels)
    selector = f"{metric}{{{matchers}}}" if matchers else metric
    return f"last_over_time({selector}[{window}])"


def _prometheus_variable(name: str, metric: str) -> dict[str, Any]:
    query = f"label_values({metric}, {name})"
    return {
        "name": name, "label": name, "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "definition": query, "refresh": 2,
        # ".*": "All" also matches series without the label (an empty cell).
        "multi": True, "includeAll": True, "allValue": ".*", "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def build_prometheus(folder: FolderConfig, title: str | None = None) -> dict[str, Any]:
    variables: dict[str, dict[str, Any]] = {}
    panels: list[dict[str, Any]] = []
    for report in folder.reports.values():
        target = report.prometheus
        if target is None:
            continue
        labels = list(target.labels) if target.labels is not None else list(report.explode_by)
        window = PROMQL_WINDOWS[report.granularity.value]
        for metric in target.metrics:
            for label in labels:
                variables.setdefault(label, _prometheus_variable(label, metric))
            position = len(panels)
            legend = " ".join(f"{{{{{label}}}}}" for label in labels) or metric
            panels.append({
                "id": position + 1, "type": "timeseries", "title": f"{report.key}: {metric}",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "targets": [{"refId": "A", "expr": promql_target(metric, labels, window),
                             "legendFormat": legend, "range": True, "editorMode": "code"}],
                "gridPos": {"x": (position % 2) * PANEL_WIDTH, "y": (position // 2) * PANEL_HEIGHT,
                            "w": PANEL_WIDTH, "h": PANEL_HEIGHT},
                "fieldConfig": {"defaults": {"custom": {"drawStyle": "line", "lineInterpolation":
                                                        "stepAfter", "spanNulls": False}},
                                "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            })
    title = title or f"reportupdater: {folder.query_folder.resolve().name} (prometheus)"
    return {
        "uid": hashlib.sha1(title.encode()).hexdigest()[:12], "title": title,
        "tags": ["reportupdater"], "timezone": "utc", "schemaVersion": 39, "version": 1,
        "editable": True, "time": {"from": "now-1y", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            *variables.values(),
        ]},
        "panels": panels,
    }
