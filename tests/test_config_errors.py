# Structured configuration errors: ConfigError and ConfigWarning carry the
# file, section, report or database, key and line as fields (their text is
# the one-line message users see), and `validate`, `smoke` and `rerun` use
# the fields, never the text. In-process: config.load is a pure function of
# the folder.

from __future__ import annotations

from datetime import date
from pathlib import Path
from textwrap import dedent

import pytest

from reportupdater import config, reruns, smoke, validate


def folder_with(tmp_path: Path, config_text: str, files: dict[str, str] | None = None) -> Path:
    folder = tmp_path / "query"
    folder.mkdir()
    (folder / "config.yaml").write_text(dedent(config_text))
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    return folder


TWO_REPORTS = """\
    databases:
      main:
        url: sqlite:///main.db
    reports:
      good:
        granularity: days
        starts: 2026-01-01
        db: main
      bad:
        granularity: days
        starts: 2026-01-01
        db: main
        lag: -3
"""


def test_a_report_error_names_its_place_in_fields(tmp_path):
    folder = folder_with(tmp_path, TWO_REPORTS, {"good.sql": "SELECT 1", "bad.sql": "SELECT 1"})
    loaded = config.load(folder)
    [error] = loaded.errors
    path = folder / "config.yaml"
    assert str(error) == f"{path}: report 'bad': key 'lag': -3 is not an integer >= 0"
    assert (error.file, error.section, error.report, error.database, error.key, error.line) == (
        path, "reports", "bad", None, "lag", 13)
    assert error.located() == f"{path}:13: report 'bad': key 'lag': -3 is not an integer >= 0"


def test_a_key_from_defaults_gets_the_line_of_its_report(tmp_path):
    folder = folder_with(tmp_path, """\
        defaults:
          lag: -3
        reports:
          r:
            type: script
            granularity: days
            starts: 2026-01-01
        """)
    (folder / "r").write_text("#!/bin/sh\n")
    (folder / "r").chmod(0o755)
    [error] = config.load(folder).errors
    assert (error.report, error.key, error.line) == ("r", "lag", 4)


def test_a_database_error_and_a_warning_carry_fields(tmp_path):
    folder = folder_with(tmp_path, """\
        databases:
          main:
            host: db.example.org
            port: 99999
            creds_file: creds.cnf
            db: wiki
            colour: blue
        reports:
          r:
            granularity: days
            starts: 2026-01-01
            db: main
        """, {"r.sql": "SELECT 1"})
    loaded = config.load(folder)
    database_error = next(error for error in loaded.errors if error.database == "main")
    assert (database_error.section, database_error.key, database_error.line) == ("databases", "port", 4)
    [warning] = loaded.warnings
    assert isinstance(warning, config.ConfigWarning)
    assert warning == f"{folder / 'config.yaml'}: database 'main': unknown key 'colour'; ignored"
    assert (warning.database, warning.line) == ("main", 2)
    report_error = next(error for error in loaded.errors if error.report == "r")
    assert report_error.key == "db"


def test_a_key_given_twice_at_the_top_keeps_its_line_in_the_text_only_once(tmp_path):
    folder = folder_with(tmp_path, """\
        reports:
          r:
            granularity: days
            starts: 2026-01-01
            type: script
        graphite:
          host: a
          host: b
        """)
    (folder / "r").write_text("#!/bin/sh\n")
    (folder / "r").chmod(0o755)
    [error] = config.load(folder).errors
    assert error.line == 8 and error.section == "graphite"
    assert error.located() == str(error)  # "line 8" is in the message already


def test_validate_finds_the_line_of_a_database_whose_name_looks_like_a_message(tmp_path):
    # A database key may hold any text; the old regex over the message lost
    # the line of this one. The fields do not depend on the text.
    folder = folder_with(tmp_path, """\
        databases:
          "main: report 'x'":
            host: db.example.org
            port: -1
            creds_file: creds.cnf
            db: wiki
        reports:
          x:
            granularity: days
            starts: 2026-01-01
            type: script
        """)
    (folder / "x").write_text("#!/bin/sh\n")
    (folder / "x").chmod(0o755)
    findings = validate.validate(folder)
    path = folder / "config.yaml"
    assert findings.problems == [f"{path}:4: database 'main: report 'x'': key 'port': "
                                 "a text (not shown: it may hold a password) is not an integer >= 1"]


def test_find_report_is_the_one_lookup(tmp_path):
    folder = folder_with(tmp_path, TWO_REPORTS, {"good.sql": "SELECT 1", "bad.sql": "SELECT 1"})
    loaded = config.load(folder)
    assert config.find_report(loaded, "good").key == "good"
    with pytest.raises(config.ConfigError) as broken:
        config.find_report(loaded, "bad")
    assert broken.value is loaded.errors[0]
    with pytest.raises(config.ConfigError) as missing:
        config.find_report(loaded, "gone")
    assert str(missing.value) == f"{folder / 'config.yaml'}: report 'gone' is not in 'reports'"
    assert (missing.value.section, missing.value.report) == ("reports", "gone")


def test_smoke_and_rerun_name_the_broken_report_own_error(tmp_path):
    # Report 'b' is broken and comes first; 'bad' is broken too. Each command
    # must name the error of the report asked for, found by its field.
    folder = folder_with(tmp_path, """\
        databases:
          main:
            url: sqlite:///main.db
        reports:
          b:
            granularity: days
            starts: 2026-01-01
            db: nowhere
          bad:
            granularity: days
            starts: 2026-01-01
            db: main
            lag: -3
        """, {"b.sql": "SELECT 1", "bad.sql": "SELECT 1"})
    loaded = config.load(folder)
    with pytest.raises(config.ConfigError, match="report 'bad': key 'lag'"):
        smoke.smoke(loaded, "bad", date(2026, 1, 2), {})
    with pytest.raises(reruns.RerunError, match="report 'bad': key 'lag'"):
        reruns.request_rerun(folder, date(2026, 1, 1), date(2026, 1, 2), ["bad"], today=date(2026, 2, 1))
    with pytest.raises(reruns.RerunError, match="report 'nope' is not in 'reports'"):
        reruns.request_rerun(folder, date(2026, 1, 1), date(2026, 1, 2), ["nope"], today=date(2026, 2, 1))


def test_smoke_selection_errors_name_report_and_key(tmp_path):
    folder = folder_with(tmp_path, """\
        databases:
          main:
            url: sqlite:///main.db
        reports:
          r:
            granularity: days
            starts: 2026-01-01
            db: main
            explode_by:
              wiki: enwiki, dewiki
        """, {"r.sql": "SELECT '{wiki}'"})
    report = config.find_report(config.load(folder), "r")
    with pytest.raises(config.ConfigError) as exc:
        smoke.select_combinations(report, {"wiki": ["frwiki"]})
    assert (exc.value.report, exc.value.key) == ("r", "explode_by.wiki")
