"""Engines own their keys: an engine declares the config keys it reads in
its own module, and adding an engine is adding that file (and registering
it). Here a tests-only engine (tests/greeting_engine.py) is registered
through the public registry and used through the public API only."""

from __future__ import annotations

import pytest
from testkit import make_folder, run_cli, tsv

from reportupdater import config, report_types

CONFIG = """
reports:
  hello:
    type: greeting
    granularity: days
    starts: 2026-01-01
    greeting: {greeting}
    execute: say_hello
"""
SCRIPT = {"say_hello": "#!/bin/sh\nexit 1\n"}  # `execute` names a script for template-less engines


@pytest.fixture
def greeting_type():
    report_types.register("greeting", "greeting_engine")
    try:
        yield
    finally:
        report_types.unregister("greeting")


def test_without_the_engine_its_type_and_key_are_unknown(tmp_path):
    folder = config.load(make_folder(tmp_path, CONFIG.format(greeting="hi"), scripts=SCRIPT))
    assert [str(error).split(": ", 2)[2] for error in folder.errors] == [
        "key 'type': 'greeting' is not one of sql, script, hive"]
    assert [warning.split(": ", 2)[2] for warning in folder.warnings] == ["unknown key 'greeting'; ignored"]
    assert "greeting" not in config.REPORT_KEYS


def test_a_registered_engine_brings_its_type_and_key(tmp_path, greeting_type):
    folder = config.load(make_folder(tmp_path, CONFIG.format(greeting="hi"), scripts=SCRIPT))
    assert (folder.errors, folder.warnings) == ([], [])
    assert folder.reports["hello"].options == {"greeting": "hi"}
    assert "greeting" in config.REPORT_KEYS
    assert ("reports", "greeting", "text") in {(row.section, row.key, row.type) for row in config.key_reference()}
    report_schema = config.json_schema()["$defs"]["report"]["properties"]
    assert "greeting" in report_schema["type"]["enum"]
    assert report_schema["greeting"]["description"] == "What the report says, each interval"


def test_the_engine_key_is_validated_as_declared(tmp_path, greeting_type):
    folder = config.load(make_folder(tmp_path, CONFIG.format(greeting="[1, 2]"), scripts=SCRIPT))
    assert [error.key for error in folder.errors] == ["greeting"]
    assert "report 'hello': key 'greeting': " in str(folder.errors[0])


def test_the_engine_refuses_ready_when_kinds_it_cannot_check(tmp_path, greeting_type):
    text = CONFIG.format(greeting="hi") + "    ready_when: {query: SELECT 1}\n"
    folder = config.load(make_folder(tmp_path, text, scripts=SCRIPT))
    assert [str(error).split(": ", 2)[2] for error in folder.errors] == [
        "key 'ready_when.query': greeting reports cannot check ready_when query"]


def test_a_registered_engine_runs(tmp_path, greeting_type):
    folder = make_folder(tmp_path, CONFIG.format(greeting="hello there"), scripts=SCRIPT)
    output = tmp_path / "output"
    code, _, err = run_cli("run", folder, output, "--now", "2026-01-03T00:00:00")
    assert code == 0, err
    assert (output / "hello.tsv").read_text() == tsv(["date", "greeting"], ["2026-01-01", "hello there"],
                                                     ["2026-01-02", "hello there"])
