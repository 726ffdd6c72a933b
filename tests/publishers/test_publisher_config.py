# The publishers' config keys (declared in publishers/tables.py and
# publishers/prometheus.py): the top-level `tables:` and `prometheus:`
# sections, a report's `table:` and `prometheus:`, one-line errors naming
# file, line, section or report and key, and the schema agreeing.

from __future__ import annotations

import jsonschema
import pytest
import yaml

from reportupdater import config
from testkit import make_folder

HEAD = """\
databases:
  d: {url: "sqlite:///x.db"}
defaults:
  db: d
  granularity: days
  starts: 2026-01-01
  execute: r
"""


def load(tmp_path, text):
    return config.load(make_folder(tmp_path, HEAD + text, {"r.sql": "SELECT 1"}, dedent_text=False))


def messages(folder):
    return [error.located() for error in folder.errors]


def test_sections_and_report_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "s3cret:@")
    folder = load(tmp_path, """\
tables:
  url: "postgresql+psycopg://reports:${PGPASSWORD}@pg.example.org/metrics"
  schema: reportupdater
prometheus:
  remote_write_url: "http://127.0.0.1:8428/api/v1/write"
  basic_auth_user: writer
  basic_auth_password_env: PROM_PASSWORD
  headers: {X-Scope-OrgID: team}
  timeout: 5
  read_url: "http://127.0.0.1:9090/"
reports:
  daily_edits:
    explode_by: {wiki: "enwiki, dewiki"}
    prometheus:
      metrics: {reportupdater_daily_edits: edits}
  renamed:
    table: edits_by_wiki
    prometheus:
      metrics: {edits_total: edits}
      labels: [wiki, bucket]
  hidden:
    table: false
""")
    assert messages(folder) == [] and folder.warnings == []
    assert folder.tables.url == "postgresql+psycopg://reports:s3cret%3A%40@pg.example.org/metrics"
    assert folder.tables.schema == "reportupdater"
    assert folder.prometheus.remote_write_url == "http://127.0.0.1:8428/api/v1/write"
    assert folder.prometheus.headers == {"X-Scope-OrgID": "team"}
    assert folder.prometheus.timeout == 5 and folder.prometheus.basic_auth_user == "writer"
    assert folder.prometheus.read_url == "http://127.0.0.1:9090"  # no trailing slash
    reports = folder.reports
    assert reports["daily_edits"].table_name == "daily_edits"
    assert reports["renamed"].table_name == "edits_by_wiki"
    assert reports["hidden"].table_name is None
    assert reports["daily_edits"].prometheus.metrics == {"reportupdater_daily_edits": "edits"}
    assert reports["daily_edits"].prometheus.labels is None  # every explode key
    assert reports["renamed"].prometheus.labels == ("wiki", "bucket")
    assert reports["hidden"].prometheus is None


def test_a_relative_sqlite_url_is_relative_to_the_output_folder(tmp_path):
    from reportupdater.publishers.tables import TablesPublisher
    folder = load(tmp_path, "tables: {url: \"sqlite:///metrics.db\"}\nreports:\n  a: {}\n")
    assert folder.tables.url == "sqlite:///metrics.db"  # resolved by the publisher
    publisher = TablesPublisher(folder.tables, {}, tmp_path / "out", folder.query_folder)
    assert publisher.settings.url == f"sqlite:///{(tmp_path / 'out' / 'metrics.db').resolve()}"
    absolute = TablesPublisher(folder.tables.__class__("sqlite:////srv/m.db"), {}, tmp_path, tmp_path)
    assert absolute.settings.url == "sqlite:////srv/m.db"


@pytest.mark.parametrize(("text", "message"), [
    ("tables: {schema: x}\n", "config.yaml:8: tables: key 'url': is required"),
    ("tables: {url: \"postgresql://u:${NOT_SET_HERE}@h/db\"}\n",
     "config.yaml:8: tables: key 'url': environment variable ${NOT_SET_HERE} is not set"),
    ("tables: [a]\n", "config.yaml:8: tables: a list (not shown: it may hold a password) is not a mapping"),
    ("prometheus: {remote_write_url: \"ftp://x\"}\n",
     "config.yaml:8: prometheus: key 'remote_write_url': is not an http:// or https:// URL"),
    ("prometheus: {remote_write_url: \"http://x\", read_url: \"127.0.0.1:9090\"}\n",
     "config.yaml:8: prometheus: key 'read_url': is not an http:// or https:// URL (such as "
     "http://127.0.0.1:9090)"),
    ("prometheus: {remote_write_url: \"http://x\", read_url: 9090}\n",
     "config.yaml:8: prometheus: key 'read_url': "),
    ("prometheus: {remote_write_url: \"http://x\", headers: {\"a b\": c}}\n",
     "config.yaml:8: prometheus: key 'headers.a b': is not an HTTP header name"),
    ("prometheus: {remote_write_url: \"http://x\", basic_auth_password_env: P}\n",
     "config.yaml:8: prometheus: key 'basic_auth_password_env': needs basic_auth_user"),
    ("prometheus: {remote_write_url: \"http://x\", timeout: -1}\n",
     "config.yaml:8: prometheus: key 'timeout': a text (not shown: it may hold a password) is not a "
     "number of seconds > 0"),
])
def test_a_broken_section_is_one_line_and_the_reports_still_load(tmp_path, text, message):
    folder = load(tmp_path, text + "reports:\n  a: {}\n")
    assert len(folder.errors) == 1
    assert messages(folder)[0].startswith(f"{tmp_path / 'query'}/{message}")
    assert "a" in folder.reports


@pytest.mark.parametrize(("report", "message"), [
    ("prometheus: {metrics: {bad-name: edits}}",
     "report 'a': key 'prometheus.metrics.bad-name': 'bad-name' is not a Prometheus metric name"),
    ("prometheus: {metrics: {__reserved: edits}}", "'__reserved' is not a Prometheus metric name"),
    ("prometheus: {metrics: {ok: edits}, labels: [wiki, 2x]}",
     "report 'a': key 'prometheus.labels': '2x' is not a Prometheus label name"),
    ("prometheus: {metrics: {ok: edits}, labels: [wiki, wiki]}", "lists 'wiki' twice"),
    ("prometheus: {metrics: {ok: edits}, label: [wiki]}",
     "key 'prometheus.label': is not a key of a report's prometheus section (metrics, labels)"),
    ("prometheus: {labels: [wiki]}", "key 'prometheus': needs 'metrics'"),
    ("prometheus: {metrics: {ok: \"\"}}", "key 'prometheus.metrics.ok': '' is not a non-empty string"),
    ("{explode_by: {__wiki: a}, prometheus: {metrics: {ok: edits}}}",
     "key 'prometheus.labels': explode key '__wiki' is not a Prometheus label name"),
    ("table: \"\"", "report 'a': key 'table': '' is not a non-empty string"),
    ("table: " + "t" * 64, "key 'table': 'tttttttttttttttttttt'...: longer than 63 bytes"),
])
def test_bad_report_keys_name_file_line_report_and_key(tmp_path, report, message):
    body = report if report.startswith("{") else "{" + report + "}"
    folder = load(tmp_path, "tables: {url: \"sqlite:///m.db\"}\n"
                            "prometheus: {remote_write_url: \"http://x\"}\n"
                            f"reports:\n  a: {body}\n")
    assert len(folder.errors) == 1, messages(folder)
    assert messages(folder)[0].startswith(f"{tmp_path / 'query' / 'config.yaml'}:11: ")
    assert message in messages(folder)[0]
    assert "a" in folder.broken_reports


def test_two_reports_in_one_table_is_an_error_for_the_second(tmp_path):
    folder = load(tmp_path, "tables: {url: \"sqlite:///m.db\"}\n"
                            "reports:\n  a: {}\n  b: {table: A}\n  c: {table: false}\n")
    assert messages(folder) == [f"{tmp_path / 'query' / 'config.yaml'}:11: report 'b': key 'table': "
                                "'A' is also the table of report 'a': give one of them another 'table'"]
    assert set(folder.reports) == {"a", "c"}


def test_publisher_keys_without_their_section_are_warned_about(tmp_path):
    folder = load(tmp_path, "reports:\n  a: {table: t, prometheus: {metrics: {ok: edits}}}\n")
    assert folder.errors == []
    assert [warning.split(": ", 2)[2] for warning in folder.warnings] == [
        "has a 'prometheus' section but the config has no top-level 'prometheus' (remote_write_url): "
        "nothing is sent",
        "has a 'table' but the config has no top-level 'tables' (url): nothing is published"]


def test_unknown_section_key_is_warned_about(tmp_path):
    folder = load(tmp_path, "tables: {url: \"sqlite:///m.db\", shema: x}\nreports:\n  a: {}\n")
    assert folder.errors == []
    assert [w.split(": ", 1)[1] for w in folder.warnings] == [
        "tables: unknown key 'shema' (did you mean 'schema'?); ignored"]


def test_the_schema_takes_the_keys_and_refuses_bad_names():
    schema = config.json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    good = yaml.safe_load("""
tables: {url: "sqlite:///m.db", schema: s}
prometheus: {remote_write_url: "https://x/api/v1/write", headers: {A: b}, timeout: 3,
             read_url: "https://x"}
reports:
  a: {granularity: days, starts: "2026-01-01", table: false,
      prometheus: {metrics: {a_b: c}, labels: [wiki]}}
""")
    assert list(validator.iter_errors(good)) == []
    bad = yaml.safe_load("""
prometheus: {remote_write_url: "ftp://x", read_url: "x:9090"}
reports:
  a: {granularity: days, starts: "2026-01-01", table: true, prometheus: {metrics: {a-b: c}}}
""")
    paths = sorted("/".join(map(str, error.absolute_path)) for error in validator.iter_errors(bad))
    assert paths == ["prometheus/read_url", "prometheus/remote_write_url", "reports/a/prometheus/metrics",
                     "reports/a/table"]
