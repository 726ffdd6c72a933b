# The config keys are declared once (reportupdater/config_keys.py): the
# loader, the JSON Schema that `reportupdater schema` prints and the key
# reference all come from the declarations. Here: the schema accepts the
# demo's config, config.example.yaml and every config of Wikimedia's
# analytics-reportupdater-queries (tests/data/wikimedia-corpus), refuses
# typical mistakes, and agrees with the loader on every one of them.

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from reportupdater import cli, config, config_keys

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "wikimedia-corpus"
CORPUS_FILES = sorted(CORPUS.glob("*/config*.yaml"))


class EditorLoader(yaml.SafeLoader):
    """YAML as an editor's language server reads it for the schema (YAML 1.2
    core schema): `3600` a number, `true` a boolean, `"3600"` and
    `2026-01-01` strings."""


EditorLoader.yaml_implicit_resolvers = {}
for tag, pattern, first in (
        ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
        ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
                  r"|\.(?:nan|NaN|NAN))$", "-+0123456789."),
        ("null", r"^(?:~|null|Null|NULL|)$", "~nN")):
    EditorLoader.add_implicit_resolver(f"tag:yaml.org,2002:{tag}", re.compile(pattern), list(first) or None)
EditorLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])


def schema_errors(text: str) -> list[str]:
    document = yaml.load(text, Loader=EditorLoader)
    validator = jsonschema.Draft202012Validator(config.json_schema())
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in validator.iter_errors(document)]


def test_the_schema_is_a_valid_draft_2020_12_schema():
    schema = config.json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_reportupdater_schema_prints_it(capsys):
    assert cli.main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == config.json_schema()


@pytest.mark.parametrize("path", [ROOT / "queries" / "demo" / "config.yaml", ROOT / "config.example.yaml"],
                         ids=["demo", "config.example"])
def test_our_own_configs_pass(path):
    assert schema_errors(path.read_text()) == []


def test_the_corpus_is_all_there():
    assert len(CORPUS_FILES) == 18


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[str(path.relative_to(CORPUS)) for path in CORPUS_FILES])
def test_every_wikimedia_config_passes(path):
    assert schema_errors(path.read_text()) == []


# --------------------------------------------------- the loader agrees

def folder_for(tmp_path: Path, config_path: Path, text: str) -> tuple[Path, Path]:
    """A query folder holding `text` as its config and a placeholder for each
    file it names (templates, scripts, explode_by value files)."""
    folder = tmp_path / "query"
    folder.mkdir()
    target = folder / config_path.name
    target.write_text(text)
    raw = yaml.load(text, Loader=config.TextLoader) or {}
    defaults = raw.get("defaults") if isinstance(raw.get("defaults"), dict) else {}
    reports = raw.get("reports") if isinstance(raw.get("reports"), dict) else {}
    for key, report in reports.items():
        if not isinstance(report, dict):
            continue
        merged = {**defaults, **report}
        execute = merged.get("execute") if isinstance(merged.get("execute"), str) else key
        kind = merged.get("type", "sql")
        path = folder / (execute + {"sql": ".sql", "hive": ".hql"}.get(kind, ""))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n" if kind == "script" else "SELECT 1\n")
        path.chmod(0o755)
        for values in (merged.get("explode_by") or {}).values() if isinstance(merged.get("explode_by"),
                                                                               dict) else ():
            if isinstance(values, str) and "," not in values and re.search(r"[/.]", values):
                (folder / values).parent.mkdir(parents=True, exist_ok=True)
                (folder / values).write_text("enwiki\ndewiki\n")
    return folder, target


def loader_accepts(tmp_path: Path, config_path: Path, text: str) -> bool:
    folder, target = folder_for(tmp_path, config_path, text)
    loaded = config.load(folder, target)
    return not loaded.errors and not loaded.warnings


# Mistakes an analyst makes, each applied to a config of the corpus.
MISTAKES = {
    "granularity: dayz": (r"granularity: \w+", "granularity: dayz"),
    "lag: true": (r"lag: \d+", "lag: true"),
    'lag: "3600"': (r"lag: \d+", 'lag: "3600"'),
    "lag: -1": (r"lag: \d+", "lag: -1"),
    "unknown report key": (r"starts:", "strats: 2020-01-01\n        starts:"),
    "starts is not a date": (r"starts: [\d-]+", "starts: last week"),
    "type: mysql": (r"type: script", "type: mysql"),
}


def _mistaken(path: Path, mistake: str) -> str | None:
    pattern, replacement = MISTAKES[mistake]
    text = path.read_text()
    if not re.search(pattern, text):
        return None
    # The replacement keeps the indentation of the line it replaces.
    def replace(match: re.Match) -> str:
        line_start = text.rfind("\n", 0, match.start()) + 1
        indent = text[line_start:match.start()]
        return replacement.replace("\n        ", "\n" + indent)
    return re.sub(pattern, replace, text, count=1)


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[str(path.relative_to(CORPUS)) for path in CORPUS_FILES])
def test_the_loader_and_the_schema_agree_on_each_wikimedia_config(tmp_path, path):
    text = path.read_text()
    assert loader_accepts(tmp_path, path, text) == (schema_errors(text) == []) == True  # noqa: E712
    for index, mistake in enumerate(MISTAKES):
        wrong = _mistaken(path, mistake)
        if wrong is None:
            continue
        where = tmp_path / str(index)
        where.mkdir()
        assert loader_accepts(where, path, wrong) is False, mistake
        assert schema_errors(wrong) != [], mistake


@pytest.mark.parametrize("text, fragment", [
    ("reports: {r: {granularity: dayz, starts: 2026-01-01}}", "'dayz' is not one of"),
    ("reports: {r: {granularity: days, starts: 2026-01-01, lag: true}}", "True is not of type 'integer'"),
    ("reports: {r: {granularity: days, starts: 2026-01-01, lag: '3600'}}", "'3600' is not of type 'integer'"),
    ("reports: {r: {granularity: days, starts: 2026-01-01, colour: blue}}", "'colour' was unexpected"),
    ("reports: {r: {starts: 2026-01-01}}", "'granularity' is a required property"),
    ("reportz: {}\nreports: {r: {granularity: days, starts: 2026-01-01}}", "'reportz' was unexpected"),
    ("databases: {d: {host: h, port: 99999}}\nreports: {r: {granularity: days, starts: 2026-01-01}}",
     "99999 is greater than the maximum"),
    ("graphite: {port: 2003}\nreports: {r: {granularity: days, starts: 2026-01-01}}",
     "'host' is a required property"),
])
def test_mistakes_fail_the_schema(text, fragment):
    assert any(fragment in error for error in schema_errors(text)), schema_errors(text)


def test_a_key_in_defaults_is_not_required_of_each_report():
    assert schema_errors("defaults: {granularity: days}\nreports: {r: {starts: 2026-01-01}}") == []


# ---------------------------------------- the loader is strict, as the schema

@pytest.mark.parametrize("line, message", [
    ('lag: "3600"', "key 'lag': '3600' is not an integer >= 0 (it is in quotes: write it without them)"),
    ("lag: true", "key 'lag': true is not an integer >= 0"),
    ("timeout: '60'", "key 'timeout': '60' is not a number of seconds > 0 (it is in quotes: write it "
                      "without them)"),
    ('parallel: "true"', "key 'parallel': 'true' is not true or false (it is in quotes: write it without them)"),
    ('batch: "7"', "key 'batch': '7' is not a number of intervals >= 1 or 'month'"),
])
def test_the_loader_refuses_what_the_schema_refuses(tmp_path, line, message):
    text = f"reports:\n  r:\n    type: script\n    granularity: days\n    starts: 2026-01-01\n    {line}\n"
    folder, target = folder_for(tmp_path, Path("config.yaml"), text)
    assert [str(error) for error in config.load(folder).errors] == [f"{target}: report 'r': {message}"]
    assert schema_errors(text) != []


def test_the_loader_keeps_its_yaml_1_1_hints(tmp_path):
    # Stricter than the schema, on purpose: YAML 1.2 (an editor) reads 010 as
    # 10, YAML 1.1 (the original tool, PyYAML) as 8; which was meant is
    # unclear, so the loader refuses it and says why.
    text = "reports:\n  r:\n    type: script\n    granularity: days\n    starts: 2026-01-01\n    lag: 010\n"
    folder, target = folder_for(tmp_path, Path("config.yaml"), text)
    assert [str(error) for error in config.load(folder).errors] == [
        f"{target}: report 'r': key 'lag': 010 is not an integer >= 0 (YAML 1.1 would read 010 as 8; "
        "write plain decimal digits)"]


# ------------------------------------------------ declared once, used everywhere

def test_key_reference_has_a_row_for_every_key():
    rows = config.key_reference()
    keys = {(row.section, row.key) for row in rows}
    assert len(keys) == len(rows)
    assert {key for section, key in keys if section == "reports"} == config.REPORT_KEYS | config.LEGACY_REPORT_KEYS
    assert {key for section, key in keys if section == "databases"} == config.DATABASE_KEYS
    assert {key for section, key in keys if section == "graphite"} == config.GRAPHITE_KEYS
    assert {key for section, key in keys if section == "top level"} == config.TOP_LEVEL_KEYS
    for row in rows:
        assert row.doc and "\n" not in row.doc and row.type, row
    lag = next(row for row in rows if (row.section, row.key) == ("reports", "lag"))
    assert (lag.type, lag.default) == (f"integer >= 0, <= {config.MAX_LAG_SECONDS}", "0")


def test_every_schema_property_is_a_declared_key():
    schema = config.json_schema()
    assert set(schema["properties"]) == config.TOP_LEVEL_KEYS
    assert set(schema["$defs"]["report"]["properties"]) == config.REPORT_KEYS | config.LEGACY_REPORT_KEYS
    database = schema["properties"]["databases"]["additionalProperties"]
    assert set(database["properties"]) == config.DATABASE_KEYS


# Declared keys that the loader reads into another field (or drops).
_NOT_FIELDS = {"reports": {"explode_value_pattern"} | config.LEGACY_REPORT_KEYS,
               "databases": {"database"}}


@pytest.mark.parametrize("section, dataclass_type", [
    ("reports", config.ReportConfig), ("databases", config.DatabaseConfig), ("graphite", config.GraphiteConfig)])
def test_every_declared_key_is_a_field_of_its_dataclass(section, dataclass_type):
    fields = {field.name for field in dataclasses.fields(dataclass_type)}
    declared = set(config_keys.SECTIONS[section]) - _NOT_FIELDS.get(section, set())
    assert declared - fields == set()


def test_defaults_in_the_declarations_are_the_dataclass_defaults():
    for section, dataclass_type in (("reports", config.ReportConfig), ("databases", config.DatabaseConfig),
                                    ("graphite", config.GraphiteConfig)):
        fields = {field.name: field for field in dataclasses.fields(dataclass_type)}
        for name, key in config_keys.SECTIONS[section].items():
            if (key.default is None or name not in fields or key.kind not in config_keys.PLAIN_KINDS
                    or fields[name].default is dataclasses.MISSING):
                continue
            assert fields[name].default == key.default, (section, name)


# Defaults that auto_find_db_shard applies, not every database.
_CONDITIONAL_DEFAULTS = {"mw_config_path", "srv_template"}


def test_engines_database_key_defaults_are_what_a_database_without_them_reads(tmp_path):
    (tmp_path / "config.yaml").write_text("databases: {d: {url: 'sqlite://'}}\n"
                                          "reports: {r: {db: d, granularity: days, starts: 2026-01-01}}\n")
    (tmp_path / "r.sql").write_text("SELECT 1\n")
    database = config.load(tmp_path).databases["d"]
    engine_keys = {name: key for name, key in config_keys.database_keys().items() if key.owner}
    assert engine_keys
    for name, key in engine_keys.items():
        if key.kind in config_keys.PLAIN_KINDS and name not in _CONDITIONAL_DEFAULTS:
            assert getattr(database, name) == key.default, name
