"""reportupdater.config.load: one test per validation rule, plus the CLI's handling of config errors."""

from __future__ import annotations

import os
from datetime import date
from functools import partial
from pathlib import Path

import pytest
import yaml

import testkit
from testkit import run_cli

from reportupdater import config
from reportupdater.config import ConfigError
from reportupdater.datatypes import Granularity

GOOD_SCRIPT = "#!/bin/sh\nprintf 'date\\tvalue\\n%s\\t1\\n' \"$1\"\n"
SQL_TEMPLATE = "SELECT '{from_date}' AS date, COUNT(*) AS n FROM t WHERE ts < '{to_timestamp}'\n"


# ---------------------------------------------------------------- helpers


# Texts written exactly as given: messages name their lines.
make_folder = partial(testkit.make_folder, name="queries", dedent_text=False)


def config_yaml(reports: dict, **top) -> str:
    return yaml.safe_dump({**top, "reports": reports}, sort_keys=False)


DATABASES = {"analytics": {"url": "sqlite:///demo.db"}}
BASE_SQL = {"type": "sql", "db": "analytics", "granularity": "days", "starts": "2026-01-01"}
BASE_SCRIPT = {"type": "script", "granularity": "days", "starts": "2026-01-01"}


def load_one(root: Path, report: dict, files: dict[str, str] | None = None,
             scripts: dict[str, str] | None = None, databases: dict | None = None):
    """Load a folder whose only report is 'bad'; returns (folder config, config path)."""
    text = config_yaml({"bad": report}, databases=DATABASES if databases is None else databases)
    folder = make_folder(root, text, files, scripts)
    return config.load(folder), folder / "config.yaml"


def only_error(loaded: config.FolderConfig) -> str:
    assert len(loaded.errors) == 1, loaded.errors
    message = str(loaded.errors[0])
    assert "\n" not in message
    return message


def without(mapping: dict, key: str) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


# ----------------------------------------------------- folder-level errors


def test_bad_yaml_names_the_file_and_line(tmp_path):
    folder = make_folder(tmp_path, "reports:\n  r:\n    type: script\n    granularity: [days\n")
    with pytest.raises(ConfigError) as caught:
        config.load(folder)
    message = str(caught.value)
    assert message.startswith(f"{folder / 'config.yaml'}: line 5: invalid YAML: ")
    assert "\n" not in message


def test_bad_yaml_indentation_names_the_line(tmp_path):
    folder = make_folder(tmp_path, "reports:\n  r:\n    type: script\n   granularity: days\n")
    with pytest.raises(ConfigError, match=r": line 4: invalid YAML: ") as caught:
        config.load(folder)
    assert str(caught.value).startswith(str(folder / "config.yaml"))


@pytest.mark.parametrize("text", ["defaults:\n  lag: 0\n", "reports: {}\n", "reports:\n",
                                  "reports: [a, b]\n", "", "- a\n"])
def test_reports_is_required(tmp_path, text):
    folder = make_folder(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.load(folder)
    message = str(caught.value)
    assert message.startswith(f"{folder / 'config.yaml'}: ")
    assert "'reports'" in message


def test_missing_config_file_names_the_path(tmp_path):
    (tmp_path / "q").mkdir()
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path / "q")
    assert str(caught.value) == f"{tmp_path / 'q' / 'config.yaml'}: cannot read config: No such file or directory"


def test_config_path_elsewhere(tmp_path):
    folder = make_folder(tmp_path, "not: used\n", scripts={"bad": GOOD_SCRIPT})
    other = tmp_path / "elsewhere.yaml"
    other.write_text(config_yaml({"bad": BASE_SCRIPT}))
    loaded = config.load(folder, other)
    assert loaded.config_path == other
    assert list(loaded.reports) == ["bad"]
    assert loaded.reports["bad"].script_path == (folder / "bad").resolve()


# ------------------------------------------------------ report-level rules


# (report settings, key named in the error, text of the bad value or problem)
REPORT_RULES = {
    "type not in sql/script/hive": ({**BASE_SQL, "type": "mysql"}, "type", "'mysql'"),
    "type null": ({**BASE_SQL, "type": None}, "type", "None"),
    "granularity missing": (without(BASE_SQL, "granularity"), "granularity", "is required"),
    "granularity invalid": ({**BASE_SQL, "granularity": "daily"}, "granularity", "'daily'"),
    "granularity wrong case": ({**BASE_SQL, "granularity": "Days"}, "granularity", "'Days'"),
    "starts missing": (without(BASE_SQL, "starts"), "starts", "is required"),
    "starts invalid text": ({**BASE_SQL, "starts": "yesterday"}, "starts", "'yesterday'"),
    "starts impossible date": ({**BASE_SQL, "starts": "2026-13-01"}, "starts", "'2026-13-01'"),
    "starts a number": ({**BASE_SQL, "starts": 20260101}, "starts", "20260101"),
    "lag negative": ({**BASE_SQL, "lag": -1}, "lag", "-1 is not an integer >= 0"),
    "lag not int": ({**BASE_SQL, "lag": "2h"}, "lag", "'2h' is not an integer"),
    "lag float": ({**BASE_SQL, "lag": 1.5}, "lag", "1.5 is not an integer"),
    "lag bool": ({**BASE_SQL, "lag": True}, "lag", "true is not an integer"),  # shown as written
    "max_data_points 0": ({**BASE_SQL, "max_data_points": 0}, "max_data_points", "0 is not an integer >= 1"),
    "timeout 0": ({**BASE_SQL, "timeout": 0}, "timeout", "0 is not a number of seconds > 0"),
    "timeout negative": ({**BASE_SQL, "timeout": -5}, "timeout", "-5 is not a number of seconds > 0"),
    "explode_by not a mapping": ({**BASE_SQL, "explode_by": "wiki"}, "explode_by", "'wiki'"),
    "explode_by a list": ({**BASE_SQL, "explode_by": ["wiki"]}, "explode_by", "['wiki']"),
    "explode placeholder name reserved": ({**BASE_SQL, "explode_by": {"from_date": "a"}},
                                          "explode_by", "'from_date'"),
    "explode value ../etc": ({**BASE_SQL, "explode_by": {"wiki": "../etc"}}, "explode_by.wiki", "'../etc'"),
    "explode value with space": ({**BASE_SQL, "explode_by": {"wiki": "a b"}}, "explode_by.wiki", "'a b'"),
    "explode value .hidden": ({**BASE_SQL, "explode_by": {"wiki": ".hidden"}}, "explode_by.wiki", "'.hidden'"),
    "explode value in a list": ({**BASE_SQL, "explode_by": {"wiki": "enwiki, de/wiki"}},
                                "explode_by.wiki", "'de/wiki'"),
    "explode value empty": ({**BASE_SQL, "explode_by": {"wiki": "enwiki,,dewiki"}},
                            "explode_by.wiki", "'enwiki,,dewiki'"),
    # With hundreds of values in a file, the error must say which one is twice.
    "explode value duplicate": ({**BASE_SQL, "explode_by": {"wiki": "enwiki, dewiki, enwiki"}},
                                "explode_by.wiki", "'enwiki'"),
    "sql without db": (without(BASE_SQL, "db"), "db", "is required for sql reports"),
    "db not in databases": ({**BASE_SQL, "db": "analytic"}, "db",
                            "'analytic' is not a key of 'databases' (did you mean 'analytics'?)"),
    "execute outside the folder (sql)": ({**BASE_SQL, "execute": "../x"}, "execute",
                                         "'../x' points outside the query folder"),
    "execute outside the folder (script)": ({**BASE_SCRIPT, "execute": "../x"}, "execute",
                                            "'../x' points outside the query folder"),
    "execute absolute path": ({**BASE_SCRIPT, "execute": "/bin/true"}, "execute",
                              "'/bin/true' points outside the query folder"),
    "execute empty": ({**BASE_SCRIPT, "execute": ""}, "execute", "'' is not a non-empty string"),
}


@pytest.mark.parametrize("report, key, shown", list(REPORT_RULES.values()), ids=list(REPORT_RULES))
def test_report_rule(tmp_path, report, key, shown):
    files = {"bad.sql": SQL_TEMPLATE, "x.sql": SQL_TEMPLATE}
    (tmp_path / "x").write_text(GOOD_SCRIPT)  # exists, but outside the folder
    (tmp_path / "x").chmod(0o755)
    loaded, path = load_one(tmp_path, report, files=files, scripts={"bad": GOOD_SCRIPT})
    message = only_error(loaded)
    assert message.startswith(f"{path}: report 'bad': key '{key}': ")
    assert shown in message.split(f"key '{key}': ", 1)[1]
    assert loaded.reports == {}
    assert loaded.broken_reports == {"bad"}


def test_starts_impossible_date_unquoted_in_yaml(tmp_path):
    # YAML parses `2026-02-30` as a timestamp and PyYAML raises a plain
    # ValueError for it. That must be a config error naming the file (ideally
    # only this report is broken), not an exception that crashes the run.
    text = ("reports:\n"
            "  good:\n    type: script\n    granularity: days\n    starts: 2026-01-01\n"
            "  bad:\n    type: script\n    granularity: days\n    starts: 2026-02-30\n")
    folder = make_folder(tmp_path, text, scripts={"good": GOOD_SCRIPT, "bad": GOOD_SCRIPT})
    path = folder / "config.yaml"
    try:
        loaded = config.load(folder)
    except ConfigError as exc:  # refusing the whole file is acceptable, if it says where
        assert str(exc).startswith(f"{path}: line 9: ")
    else:
        assert list(loaded.reports) == ["good"]
        assert loaded.broken_reports == {"bad"}
        message = only_error(loaded)
        assert message.startswith(f"{path}: report 'bad': key 'starts': ")
        assert "2026-02-30" in message


def test_starts_accepts_a_yaml_date_and_a_string(tmp_path):
    text = ("reports:\n"
            "  a:\n    type: script\n    granularity: days\n    starts: 2026-01-05\n"
            "  b:\n    type: script\n    granularity: weeks\n    starts: '2026-01-06'\n"
            "  c:\n    type: script\n    granularity: months\n    starts: 2026-01-07 10:30:00\n")
    folder = make_folder(tmp_path, text, scripts={"a": GOOD_SCRIPT, "b": GOOD_SCRIPT, "c": GOOD_SCRIPT})
    loaded = config.load(folder)
    assert loaded.errors == []
    assert [(r.starts, r.granularity) for r in loaded.reports.values()] == [
        (date(2026, 1, 5), Granularity.DAYS), (date(2026, 1, 6), Granularity.WEEKS),
        (date(2026, 1, 7), Granularity.MONTHS)]


def test_sql_template_missing(tmp_path):
    loaded, path = load_one(tmp_path, BASE_SQL)
    message = only_error(loaded)
    missing = (path.parent / "bad.sql").resolve()
    assert message == (f"{path}: report 'bad': key 'execute': cannot read template {missing}: "
                       "No such file or directory")


def test_hive_template_missing(tmp_path):
    loaded, path = load_one(tmp_path, {**BASE_SCRIPT, "type": "hive"}, files={"bad.sql": SQL_TEMPLATE})
    message = only_error(loaded)
    assert message.startswith(f"{path}: report 'bad': key 'execute': cannot read template "
                              f"{(path.parent / 'bad.hql').resolve()}: ")


def test_template_with_unknown_placeholder(tmp_path):
    report = {**BASE_SQL, "explode_by": {"wiki": "enwiki"}}
    loaded, path = load_one(tmp_path, report, files={"bad.sql": "SELECT 1 FROM {wikii}.t WHERE '{from_date}'"})
    message = only_error(loaded)
    template = (path.parent / "bad.sql").resolve()
    assert message == (f"{path}: report 'bad': key 'execute': {template}: unknown placeholder {{wikii}} "
                       "(did you mean 'wiki'?)")


@pytest.mark.parametrize("field", ["{from_date.year}", "{from_date[0]}", "{from_date.__class__}"])
def test_template_with_attribute_or_index_placeholder(tmp_path, field):
    loaded, path = load_one(tmp_path, BASE_SQL, files={"bad.sql": f"SELECT '{field}'"})
    message = only_error(loaded)
    assert message.startswith(f"{path}: report 'bad': key 'execute': ")
    assert f"placeholder {field} is not a plain name" in message


def test_template_in_a_subfolder(tmp_path):
    report = {**BASE_SCRIPT, "type": "hive", "execute": "hive/toggles"}
    loaded, _ = load_one(tmp_path, report, files={"hive/toggles.hql": "SELECT '{year}-{month}-{day}'"})
    assert loaded.errors == []
    assert loaded.reports["bad"].template == "SELECT '{year}-{month}-{day}'"
    assert loaded.reports["bad"].execute == "hive/toggles"


def test_script_missing(tmp_path):
    loaded, path = load_one(tmp_path, BASE_SCRIPT)
    message = only_error(loaded)
    assert message == (f"{path}: report 'bad': key 'execute': script "
                       f"{(path.parent / 'bad').resolve()} does not exist")


def test_script_not_executable(tmp_path):
    loaded, path = load_one(tmp_path, BASE_SCRIPT, files={"bad": GOOD_SCRIPT})
    message = only_error(loaded)
    assert message == (f"{path}: report 'bad': key 'execute': script "
                       f"{(path.parent / 'bad').resolve()} is not executable (chmod +x)")


def test_script_report_gets_its_absolute_path(tmp_path):
    loaded, path = load_one(tmp_path, {**BASE_SCRIPT, "execute": "bin/share"},
                            scripts={"bin/share": GOOD_SCRIPT})
    assert loaded.errors == []
    report = loaded.reports["bad"]
    assert report.script_path == (path.parent / "bin" / "share").resolve()
    assert report.type == "script" and report.template is None


def test_valid_sql_report_values(tmp_path):
    report = {**BASE_SQL, "lag": 3600, "max_data_points": 7, "timeout": 90, "group": "wikidev",
              "explode_by": {"wiki": "enwiki, dewiki", "editor": "bot"}}
    loaded, _ = load_one(tmp_path, report, files={"bad.sql": SQL_TEMPLATE + "{wiki}{editor}"})
    assert loaded.errors == [] and loaded.warnings == []
    r = loaded.reports["bad"]
    assert (r.key, r.type, r.db, r.execute) == ("bad", "sql", "analytics", "bad")
    assert (r.granularity, r.starts, r.lag) == (Granularity.DAYS, date(2026, 1, 1), 3600)
    assert (r.max_data_points, r.timeout, r.group) == (7, 90.0, "wikidev")
    assert r.explode_by == {"editor": ("bot",), "wiki": ("enwiki", "dewiki")}
    assert r.placeholders == ("editor", "wiki")  # sorted by placeholder name
    assert r.template == SQL_TEMPLATE + "{wiki}{editor}"


def test_type_defaults_to_sql(tmp_path):
    loaded, _ = load_one(tmp_path, without(BASE_SQL, "type"), files={"bad.sql": SQL_TEMPLATE})
    assert loaded.errors == []
    assert loaded.reports["bad"].type == "sql"


# ------------------------------------------------------------ explode_by


def test_explode_by_token_naming_a_file_gives_its_lines(tmp_path):
    report = {**BASE_SCRIPT, "explode_by": {"wiki": "wikis.txt"}}
    loaded, _ = load_one(tmp_path, report, files={"wikis.txt": "enwiki\n\n  dewiki  \r\nfrwiki"},
                         scripts={"bad": GOOD_SCRIPT})
    assert loaded.errors == []
    assert loaded.reports["bad"].explode_by == {"wiki": ("enwiki", "dewiki", "frwiki")}


def test_explode_by_token_naming_a_file_in_a_subfolder(tmp_path):
    report = {**BASE_SCRIPT, "explode_by": {"wiki": "lists/wikis.txt"}}
    loaded, _ = load_one(tmp_path, report, files={"lists/wikis.txt": "enwiki\ndewiki\n"},
                         scripts={"bad": GOOD_SCRIPT})
    assert loaded.reports["bad"].explode_by == {"wiki": ("enwiki", "dewiki")}


def test_explode_by_token_naming_no_file_is_the_value(tmp_path):
    report = {**BASE_SCRIPT, "explode_by": {"wiki": "enwiki", "n": 7}}
    loaded, _ = load_one(tmp_path, report, scripts={"bad": GOOD_SCRIPT})
    assert loaded.errors == []
    assert loaded.reports["bad"].explode_by == {"n": ("7",), "wiki": ("enwiki",)}


def test_explode_by_comma_list_and_yaml_list(tmp_path):
    report = {**BASE_SCRIPT, "explode_by": {"wiki": "enwiki, dewiki,frwiki ", "bucket": ["a", "b_2"]}}
    loaded, _ = load_one(tmp_path, report, scripts={"bad": GOOD_SCRIPT})
    assert loaded.errors == []
    assert loaded.reports["bad"].explode_by == {"bucket": ("a", "b_2"),
                                                "wiki": ("enwiki", "dewiki", "frwiki")}


def test_explode_by_file_outside_the_folder_is_not_read(tmp_path):
    (tmp_path / "wikis.txt").write_text("enwiki\n")
    report = {**BASE_SCRIPT, "explode_by": {"wiki": "../wikis.txt"}}
    loaded, path = load_one(tmp_path, report, scripts={"bad": GOOD_SCRIPT})
    message = only_error(loaded)
    assert message.startswith(f"{path}: report 'bad': key 'explode_by.wiki': value '../wikis.txt' ")


def test_explode_by_file_with_a_bad_value_names_it(tmp_path):
    report = {**BASE_SCRIPT, "explode_by": {"wiki": "wikis.txt"}}
    loaded, path = load_one(tmp_path, report, files={"wikis.txt": "enwiki\nde wiki\n"},
                            scripts={"bad": GOOD_SCRIPT})
    message = only_error(loaded)
    assert message.startswith(f"{path}: report 'bad': key 'explode_by.wiki': value 'de wiki' is not allowed")


def test_explode_value_pattern_can_be_widened(tmp_path):
    report = {**BASE_SCRIPT, "explode_by": {"wiki": "a b, c"}, "explode_value_pattern": "[a-z ]+"}
    loaded, _ = load_one(tmp_path, report, scripts={"bad": GOOD_SCRIPT})
    assert loaded.errors == []
    assert loaded.reports["bad"].explode_by == {"wiki": ("a b", "c")}


# ------------------------------------------------------------- databases


@pytest.mark.parametrize("entry, key", [
    ({"port": 3306, "creds_file": "my.cnf", "db": "log"}, "host"),
    ({"host": "db.example.org", "creds_file": "my.cnf", "db": "log"}, "port"),
    ({"host": "db.example.org", "port": 3306, "db": "log"}, "creds_file"),
    ({"host": "db.example.org", "port": 3306, "creds_file": "my.cnf"}, "db"),
])
def test_classic_database_missing_a_key(tmp_path, entry, key):
    loaded, path = load_one(tmp_path, BASE_SQL, files={"bad.sql": SQL_TEMPLATE},
                            databases={"analytics": entry})
    assert [str(e) for e in loaded.errors] == [
        f"{path}: database 'analytics': key '{key}': is required (or give 'url')",
        f"{path}: report 'bad': key 'db': database 'analytics' is broken (see its own error)",
    ]
    assert loaded.databases == {}
    assert loaded.broken_reports == {"bad"}


def test_database_with_a_bad_port(tmp_path):
    entry = {"host": "db.example.org", "port": "3306x", "creds_file": "my.cnf", "db": "log"}
    loaded, path = load_one(tmp_path, BASE_SQL, files={"bad.sql": SQL_TEMPLATE},
                            databases={"analytics": entry})
    # Database values are never shown: any of them may be a misplaced password.
    assert str(loaded.errors[0]) == (f"{path}: database 'analytics': key 'port': "
                                     "a text (not shown: it may hold a password) is not an integer >= 1")


def test_classic_database(tmp_path):
    entry = {"host": "db.example.org", "port": 3306, "creds_file": "my.cnf", "db": "log"}
    loaded, path = load_one(tmp_path, BASE_SQL, files={"bad.sql": SQL_TEMPLATE},
                            databases={"analytics": entry})
    assert loaded.errors == []
    database = loaded.databases["analytics"]
    assert (database.host, database.port, database.db) == ("db.example.org", 3306, "log")
    assert database.creds_file == path.parent / "my.cnf"
    assert database.url is None


def test_url_with_an_unset_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("RU_TEST_UNSET_PASSWORD", raising=False)
    databases = {"analytics": {"url": "mysql+pymysql://u:${RU_TEST_UNSET_PASSWORD}@h/db"}}
    loaded, path = load_one(tmp_path, BASE_SQL, files={"bad.sql": SQL_TEMPLATE}, databases=databases)
    assert str(loaded.errors[0]) == (f"{path}: database 'analytics': key 'url': "
                                     "environment variable ${RU_TEST_UNSET_PASSWORD} is not set")
    assert loaded.broken_reports == {"bad"}


def test_url_with_a_set_variable_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("RU_TEST_PASSWORD", "s3cret")
    databases = {"analytics": {"url": "mysql+pymysql://u:${RU_TEST_PASSWORD}@h:3307/db"}}
    loaded, _ = load_one(tmp_path, BASE_SQL, files={"bad.sql": SQL_TEMPLATE}, databases=databases)
    assert loaded.errors == []
    assert loaded.databases["analytics"].url == "mysql+pymysql://u:s3cret@h:3307/db"
    assert "s3cret" not in repr(loaded.databases["analytics"])


@pytest.mark.parametrize("url, expected", [
    ("sqlite:///demo.db", "sqlite:///{folder}/demo.db"),
    ("sqlite:///data/demo.db?mode=ro", "sqlite:///{folder}/data/demo.db?mode=ro"),
    ("sqlite:////var/lib/demo.db", "sqlite:////var/lib/demo.db"),
    ("sqlite://", "sqlite://"),
])
def test_sqlite_url_is_resolved_against_the_query_folder(tmp_path, url, expected):
    loaded, path = load_one(tmp_path, BASE_SQL, files={"bad.sql": SQL_TEMPLATE},
                            databases={"analytics": {"url": url}})
    assert loaded.errors == []
    assert loaded.databases["analytics"].url == expected.format(folder=path.parent.resolve())


def test_database_not_a_mapping(tmp_path):
    loaded, path = load_one(tmp_path, BASE_SQL, files={"bad.sql": SQL_TEMPLATE},
                            databases={"analytics": "sqlite:///x.db"})
    # The value is not shown: a database written as one URL may hold its password.
    assert str(loaded.errors[0]) == (f"{path}: database 'analytics': "
                                     "a text (not shown: it may hold a password) is not a mapping of keys")


# ------------------------------------------------ defaults, warnings, isolation


def test_defaults_are_merged_and_the_report_key_wins(tmp_path):
    text = config_yaml(
        {"a": {"lag": 120}, "b": {"granularity": "months", "max_data_points": 3}},
        defaults={"type": "script", "granularity": "days", "starts": "2026-01-01", "lag": 60})
    folder = make_folder(tmp_path, text, scripts={"a": GOOD_SCRIPT, "b": GOOD_SCRIPT})
    loaded = config.load(folder)
    assert loaded.errors == []
    a, b = loaded.reports["a"], loaded.reports["b"]
    assert (a.type, a.granularity, a.starts, a.lag, a.max_data_points) == (
        "script", Granularity.DAYS, date(2026, 1, 1), 120, None)
    assert (b.type, b.granularity, b.starts, b.lag, b.max_data_points) == (
        "script", Granularity.MONTHS, date(2026, 1, 1), 60, 3)


def test_a_bad_default_breaks_only_the_reports_that_use_it(tmp_path):
    text = config_yaml({"a": {}, "b": {"lag": 5}},
                       defaults={"type": "script", "granularity": "days", "starts": "2026-01-01", "lag": -3})
    folder = make_folder(tmp_path, text, scripts={"a": GOOD_SCRIPT, "b": GOOD_SCRIPT})
    loaded = config.load(folder)
    assert list(loaded.reports) == ["b"]
    assert [str(e) for e in loaded.errors] == [
        f"{folder / 'config.yaml'}: report 'a': key 'lag': -3 is not an integer >= 0"]


def test_unknown_report_key_warns_with_the_nearest_key(tmp_path):
    loaded, path = load_one(tmp_path, {**BASE_SCRIPT, "granularty": "weeks"}, scripts={"bad": GOOD_SCRIPT})
    assert loaded.errors == []
    assert loaded.warnings == [
        f"{path}: report 'bad': unknown key 'granularty' (did you mean 'granularity'?); ignored"]
    assert loaded.reports["bad"].granularity is Granularity.DAYS


def test_unknown_key_far_from_any_known_key_has_no_suggestion(tmp_path):
    loaded, path = load_one(tmp_path, {**BASE_SCRIPT, "zzzzzz": 1}, scripts={"bad": GOOD_SCRIPT})
    assert loaded.warnings == [f"{path}: report 'bad': unknown key 'zzzzzz'; ignored"]


def test_unknown_keys_in_defaults_top_level_and_databases_warn(tmp_path):
    text = config_yaml({"bad": BASE_SQL}, defaults={"starst": "2026-01-01"},
                       databases={"analytics": {"url": "sqlite://", "hots": "x"}}, graphit={})
    folder = make_folder(tmp_path, text, files={"bad.sql": SQL_TEMPLATE})
    loaded = config.load(folder)
    path = folder / "config.yaml"
    assert loaded.errors == []
    assert sorted(loaded.warnings) == sorted([
        f"{path}: defaults: unknown key 'starst' (did you mean 'starts'?); ignored",
        f"{path}: database 'analytics': unknown key 'hots' (did you mean 'host'?); ignored",
        f"{path}: unknown top-level key 'graphit' (did you mean 'graphite'?); ignored",
    ])


def test_legacy_keys_give_no_warning(tmp_path):
    report = {**BASE_SCRIPT, "frequency": "days", "timeboxed": True, "funnel": True}
    text = config_yaml({"bad": report}, defaults={"frequency": "hours", "timeboxed": False})
    folder = make_folder(tmp_path, text, scripts={"bad": GOOD_SCRIPT})
    loaded = config.load(folder)
    assert loaded.errors == []
    assert loaded.warnings == []
    assert list(loaded.reports) == ["bad"]


def test_one_broken_report_does_not_stop_the_others(tmp_path):
    text = config_yaml({
        "first": BASE_SCRIPT,
        "broken": {**BASE_SCRIPT, "granularity": "hourly"},
        "not_a_mapping": None,
        "last": {**BASE_SQL},
    }, databases=DATABASES)
    folder = make_folder(tmp_path, text, files={"last.sql": SQL_TEMPLATE},
                         scripts={"first": GOOD_SCRIPT, "broken": GOOD_SCRIPT})
    loaded = config.load(folder)
    path = folder / "config.yaml"
    assert list(loaded.reports) == ["first", "last"]
    assert loaded.broken_reports == {"broken", "not_a_mapping"}
    assert [str(e) for e in loaded.errors] == [
        f"{path}: report 'broken': key 'granularity': 'hourly' is not one of hours, days, weeks, months, quarters, years",
        f"{path}: report 'not_a_mapping': None is not a mapping of keys",
    ]
    assert all(isinstance(e, ConfigError) for e in loaded.errors)


# ------------------------------------------------------------------- CLI


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line or " CRITICAL " in line]


def test_cli_broken_report_exit_2_and_the_good_report_is_written(tmp_path):
    text = config_yaml({
        "good": BASE_SCRIPT,
        "bad": {**BASE_SCRIPT, "lag": "soon"},
    })
    folder = make_folder(tmp_path, text, scripts={"good": GOOD_SCRIPT, "bad": GOOD_SCRIPT})
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-05T00:00", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert (out / "good.tsv").read_text() == ("date\tvalue\n2026-01-01\t1\n2026-01-02\t1\n"
                                              "2026-01-03\t1\n2026-01-04\t1\n")
    assert not (out / "bad.tsv").exists()
    errors = error_lines(done.stderr)
    assert len(errors) == 1, done.stderr
    assert errors[0].endswith(f"{folder / 'config.yaml'}: report 'bad': key 'lag': "
                              "'soon' is not an integer >= 0")
    assert "Traceback" not in done.stderr


def test_cli_missing_config_file(tmp_path):
    (tmp_path / "q").mkdir()
    done = run_cli("run", str(tmp_path / "q"), str(tmp_path / "out"), "--now", "2026-01-05T00:00",
                   cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert f"{tmp_path / 'q' / 'config.yaml'}: cannot read config" in lines[0]
    # Nothing but the run's lock (OUTPUT/.reportupdater.lock, taken first).
    assert os.listdir(tmp_path / "out") == [".reportupdater.lock"]


def test_cli_bad_yaml(tmp_path):
    folder = make_folder(tmp_path, "reports:\n  r: {type: script\n")
    done = run_cli("run", str(folder), str(tmp_path / "out"), "--now", "2026-01-05T00:00", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert f"{folder / 'config.yaml'}: line " in lines[0] and "invalid YAML" in lines[0]
    assert "Traceback" not in done.stderr


def test_cli_unknown_report_name(tmp_path):
    folder = make_folder(tmp_path, config_yaml({"good": BASE_SCRIPT}), scripts={"good": GOOD_SCRIPT})
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-05T00:00", "-r", "godo", cwd=tmp_path)
    assert done.returncode == 2
    errors = error_lines(done.stderr)
    assert len(errors) == 1, done.stderr
    assert errors[0].endswith(f"{folder / 'config.yaml'}: report 'godo' is not in 'reports'")
    assert not (out / "good.tsv").exists()
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("now", ["yesterday", "2026-13-01T00:00", "2026-01-05T25:00"])
def test_cli_bad_now(tmp_path, now):
    folder = make_folder(tmp_path, config_yaml({"good": BASE_SCRIPT}), scripts={"good": GOOD_SCRIPT})
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", now, cwd=tmp_path)
    assert done.returncode == 2
    assert f"{now!r} is not an ISO date-time" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()
