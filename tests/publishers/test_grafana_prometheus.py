# `reportupdater grafana --datasource prometheus`: the dashboard's PromQL
# targets, their variables set as Grafana sets them, run against a live
# VictoriaMetrics and a live Prometheus after a real run published to it:
# every panel returns the published samples, each value held until the next
# interval starts; each variable's label_values lists the published values.

from __future__ import annotations

import json
import re

import pytest

from test_run_publish import EXPECTED, epoch, folder, run
from testkit import run_cli

DAY = 86400


@pytest.fixture(params=[pytest.param("victoria_metrics", marks=pytest.mark.live),
                        pytest.param("prometheus", marks=pytest.mark.live)])
def store(request):
    return request.getfixturevalue(request.param)


def publishing_folder(tmp_path, store, metric: str):
    query = folder(tmp_path, f'prometheus: {{remote_write_url: "{store.remote_write_url}"}}')
    config = query / "config.yaml"
    config.write_text(config.read_text() + f"    prometheus:\n      metrics: {{{metric}: edits}}\n"
                      "      labels: [wiki, kind]\n")
    return query


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's $variable expansion: "All" is the variable's allValue."""
    return re.sub(r"\$(\w+)", lambda m: values[m.group(1)], expr)


def test_prometheus_panels_return_the_published_samples(tmp_path, store):
    metric = f"grafana_edits_{tmp_path.name[-8:].replace('-', '_')}"
    query = publishing_folder(tmp_path, store, metric)
    code, _, err = run(query)
    assert code == 0, err
    code, out, err = run_cli("grafana", query, "--datasource", "prometheus")
    assert code == 0, err
    board = json.loads(out)
    assert [panel["title"] for panel in board["panels"]] == [f"daily_edits: {metric}"]
    variables = {v["name"]: v for v in board["templating"]["list"] if v["type"] == "query"}
    assert set(variables) == {"wiki", "kind"}
    assert store.label_values("wiki", metric) == ["de", "en"]
    assert variables["wiki"]["definition"] == f"label_values({metric}, wiki)"
    target = board["panels"][0]["targets"][0]
    assert target["legendFormat"] == "{{wiki}} {{kind}}"

    first, last = epoch("2026-01-01"), epoch("2026-01-03")
    published: dict[tuple[str, str], dict[int, float]] = {}
    for date, wiki, edits, kind in EXPECTED:
        published.setdefault((wiki, kind), {})[epoch(date)] = float(edits)

    def panel(values: dict[str, str], step: int) -> dict[tuple[str, str], dict[int, float]]:
        answer = store.query_range(substitute(target["expr"], values), first, last + DAY - 1, step)
        return {(dict(labels)["wiki"], dict(labels)["kind"]): points
                for labels, points in answer.items()}

    everything = {name: variable["allValue"] for name, variable in variables.items()}
    # A step of a day, aligned as Grafana aligns it: one point per published sample.
    assert panel(everything, DAY) == published
    # A finer step: each value holds for its day (no dot a day, no gap).
    held = panel(everything, 6 * 3600)
    assert held[("en", "a")] == {epoch("2026-01-01") + h * 3600: value
                                 for h in range(0, 3 * 24, 6)
                                 for value in [published[("en", "a")][epoch("2026-01-01") + (h // 24) * DAY]]}
    # One wiki picked in the variable.
    assert panel({**everything, "wiki": "de"}, DAY) == {("de", "a"): published[("de", "a")]}


def test_prometheus_dashboard_of_an_hourly_report_without_labels(tmp_path):
    query = tmp_path / "query"
    query.mkdir()
    (query / "config.yaml").write_text("""\
prometheus: {remote_write_url: "http://127.0.0.1:1/api/v1/write"}
reports:
  hourly:
    type: script
    granularity: hours
    starts: 2026-01-01
    explode_by: {wiki: "en, de"}
    prometheus: {metrics: {ru_hourly_edits: edits, ru_hourly_editors: editors}}
  plain:
    type: script
    granularity: months
    starts: 2026-01-01
    prometheus: {metrics: {ru_monthly: edits}, labels: []}
  not_published:
    type: script
    granularity: days
    starts: 2026-01-01
""")
    for name in ("hourly", "plain", "not_published"):
        (query / name).write_text("#!/bin/sh\n")
        (query / name).chmod(0o755)
    code, out, err = run_cli("grafana", query, "--datasource", "prometheus", "--title", "T")
    assert code == 0, err
    board = json.loads(out)
    targets = [(panel["title"], panel["targets"][0]["expr"], panel["targets"][0]["legendFormat"])
               for panel in board["panels"]]
    assert targets == [
        ("hourly: ru_hourly_edits", 'last_over_time(ru_hourly_edits{wiki=~"$wiki"}[3599s])', "{{wiki}}"),
        ("hourly: ru_hourly_editors", 'last_over_time(ru_hourly_editors{wiki=~"$wiki"}[3599s])',
         "{{wiki}}"),
        ("plain: ru_monthly", "last_over_time(ru_monthly[2678399s])", "ru_monthly")]
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "wiki"]
    assert board["title"] == "T"


def test_prometheus_dashboard_without_prometheus_reports_warns(tmp_path):
    query = folder(tmp_path, "")
    code, out, err = run_cli("grafana", query, "--datasource", "prometheus")
    assert code == 0
    assert json.loads(out)["panels"] == []
    assert "no report has a 'prometheus' section" in err
