"""config.yaml as a hostile or careless user writes it: YAML 1.1's coercions
(`no` -> False, `07` -> 7, `0x1F` -> 31, `1:30` -> 90), keys given twice,
tabs, aliases that expand to millions of values, passwords in values of the
wrong shape, out-of-range dates and counts, and in-memory SQLite. Each is
either kept exactly as written or refused with one line naming the file, the
report (or database) and the key; the other reports still run, and no
password ever reaches a message or a file."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml
from testkit import NOW, make_folder, run_cli, tsv

from reportupdater import config, publish
from reportupdater.config import ConfigError, GraphiteConfig

# Prints the interval's start and its arguments: what the script was given.
ECHO_ARGS = """\
#!/bin/sh
printf 'date\\targs\\n%s\\t%s\\n' "$1" "$(echo "$@" | cut -d' ' -f3- | sed 's| [^ ]*$||')"
"""
GOOD = """\
#!/bin/sh
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""

SCRIPT_REPORT = """\
    type: script
    granularity: days
    starts: 2026-01-04
"""


def load(tmp_path: Path, text: str, files: dict[str, str] | None = None,
         scripts: dict[str, str] | None = None) -> config.FolderConfig:
    return config.load(make_folder(tmp_path, text, files, scripts))


def messages(loaded: config.FolderConfig) -> list[str]:
    found = [str(error) for error in loaded.errors]
    assert all("\n" not in message for message in found), found
    return found


# ------------------------------------------------ YAML 1.1 coercions (item 7)


def test_explode_values_keep_the_text_written(tmp_path):
    # Unquoted, YAML 1.1 makes these False, 7, 31, 1.5, True, 90: file names
    # and script arguments must be what the analyst wrote.
    folder = make_folder(tmp_path, """\
        reports:
          langs:
            type: script
            execute: echo_args
            granularity: days
            starts: 2026-01-04
            explode_by:
              lang: [en, de, no, off, yes]
          codes:
            type: script
            execute: echo_args
            granularity: days
            starts: 2026-01-04
            explode_by:
              code: [07, 0x1F, 1.50, 1e3, 1_000, 010]
          version:
            type: script
            execute: echo_args
            granularity: days
            starts: 2026-01-04
            explode_by:
              version: 1.30
        """, scripts={"echo_args": ECHO_ARGS})
    out = tmp_path / "out"
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)
    assert code == 0, stderr
    assert sorted(path.name for path in (out / "langs").iterdir()) == sorted(
        f"{value}.tsv" for value in ("en", "de", "no", "off", "yes"))
    assert (out / "langs" / "no.tsv").read_text() == tsv("date\targs", "2026-01-04\tno")
    assert sorted(path.name for path in (out / "codes").iterdir()) == sorted(
        f"{value}.tsv" for value in ("07", "0x1F", "1.50", "1e3", "1_000", "010"))
    assert (out / "codes" / "0x1F.tsv").read_text() == tsv("date\targs", "2026-01-04\t0x1F")
    assert (out / "version" / "1.30.tsv").read_text() == tsv("date\targs", "2026-01-04\t1.30")


def test_text_keys_keep_the_text_written(tmp_path):
    loaded = load(tmp_path, """\
        databases:
          no:
            url: "sqlite:///data.db"
          hive:
            engine: hive
            host: hive.example.org
            port: 10000
            username: on
            configuration:
              mapreduce.job.reduces: 010
              hive.exec.dynamic.partition: True
        reports:
          yes:
            db: no
            granularity: days
            starts: 2026-01-04
            execute: "07"
            group: 0775
            pivot: {index: date, columns: kind, values: n, fill: 0.50}
            graphite:
              path: "a.{_metric}"
              metrics: {true: off}
        """, files={"07.sql": "SELECT '{from_date}' AS date, 1 AS n"})
    assert messages(loaded) == []
    report = loaded.reports["yes"]  # YAML 1.1: the report key True, shown as 'True'
    assert (report.db, report.execute, report.group) == ("no", "07", "0775")
    assert report.pivot is not None and report.pivot.fill == "0.50"
    assert report.graphite is not None and report.graphite.metrics == {"true": "off"}
    hive = loaded.databases["hive"]
    assert hive.username == "on"
    assert hive.configuration == {"mapreduce.job.reduces": "010", "hive.exec.dynamic.partition": "True"}


# (YAML text of one report key, key named in the error, what the error says)
AMBIGUOUS = {
    "lag octal": ("lag: 010", "lag", "YAML 1.1 would read 010 as 8"),
    "lag hexadecimal": ("lag: 0x1F", "lag", "YAML 1.1 would read 0x1F as 31"),
    "lag sexagesimal": ("lag: 1:30", "lag", "YAML 1.1 would read 1:30 as 90"),
    "lag underscores": ("lag: 3_600", "lag", "YAML 1.1 would read 3_600 as 3600"),
    "lag float": ("lag: 36.0e+2", "lag", "36.0e+2 is not an integer"),
    "max_data_points octal": ("max_data_points: 0o17", "max_data_points", "'0o17' is not an integer"),
    "parallel yes": ("parallel: yes", "parallel", "yes is not true or false (YAML 1.1 would read yes as True"),
    "parallel off": ("parallel: off", "parallel", "off is not true or false"),
    "backfill_new_columns on": ("backfill_new_columns: on", "backfill_new_columns", "on is not true or false"),
    "timeout infinite": ("timeout: .inf", "timeout", ".inf is not a number of seconds > 0"),
    "timeout not a number": ("timeout: .nan", "timeout", ".nan is not a number of seconds > 0"),
    "ready_timeout exponent": ("ready_timeout: 1.0e+3", "ready_timeout", "1.0e+3 is not a number of seconds"),
    "explode null value": ("explode_by: {lang: [en, ~]}", "explode_by.lang", "is not a value"),
    "explode nested list": ("explode_by: {lang: [en, [de]]}", "explode_by.lang", "is not a value"),
}


@pytest.mark.parametrize("line, key, says", list(AMBIGUOUS.values()), ids=list(AMBIGUOUS))
def test_ambiguous_yaml11_values_are_refused_naming_the_key(tmp_path, line, key, says):
    loaded = load(tmp_path, f"reports:\n  bad:\n{SCRIPT_REPORT}    {line}\n  good:\n{SCRIPT_REPORT}",
                  scripts={"bad": GOOD, "good": GOOD})
    [message] = messages(loaded)
    assert message.startswith(f"{tmp_path / 'query' / 'config.yaml'}: report 'bad': key '{key}': "), message
    assert says in message
    assert list(loaded.reports) == ["good"]


@pytest.mark.parametrize("line, value", [("port: 0x0CEA", "0x0CEA"), ("port: 3_306", "3_306"),
                                         ("port: 99999", "99999")])
def test_database_port_must_be_a_plain_port_number(tmp_path, line, value):
    loaded = load(tmp_path, f"""\
databases:
  db: {{host: h, {line}, creds_file: my.cnf, db: log}}
reports:
  good:
{SCRIPT_REPORT}""", scripts={"good": GOOD})
    [message] = messages(loaded)
    assert message.startswith(f"{tmp_path / 'query' / 'config.yaml'}: database 'db': key 'port': "
                              "a text (not shown: it may hold a password) is ")
    assert value not in message
    assert list(loaded.reports) == ["good"]


def test_typed_keys_accept_what_is_unambiguous(tmp_path):
    loaded = load(tmp_path, f"""\
databases:
  db: {{host: h, port: 3306, creds_file: my.cnf, db: log, auto_find_db_shard: False, timeout: 0.5}}
reports:
  good:
{SCRIPT_REPORT}    lag: 3600
    max_data_points: +30
    parallel: TRUE
    timeout: 90.5
    batch: 7
""", scripts={"good": GOOD})
    assert messages(loaded) == []
    report = loaded.reports["good"]
    assert (report.lag, report.max_data_points, report.parallel, report.timeout, report.batch) == (
        3600, 30, True, 90.5, 7)
    assert loaded.databases["db"].port == 3306 and loaded.databases["db"].timeout == 0.5


def test_keys_are_the_text_written(tmp_path):
    # YAML 1.1 makes the keys `1`/`yes`/`null` 1, True and None: the
    # placeholder name and the report names keep the text.
    loaded = load(tmp_path, f"""\
reports:
  null:
{SCRIPT_REPORT}  on:
{SCRIPT_REPORT}    explode_by: {{1: a}}
""", scripts={"null": GOOD, "on": GOOD})
    assert list(loaded.reports) == ["null"]
    assert messages(loaded) == [f"{tmp_path / 'query' / 'config.yaml'}: report 'on': key 'explode_by': "
                                "'1' cannot be a placeholder name"]


def test_merge_keys_and_anchors_still_work(tmp_path):
    loaded = load(tmp_path, """\
        defaults: &base
          type: script
          granularity: days
          starts: 2026-01-04
        reports:
          weekly:
            <<: *base
            granularity: weeks
          daily:
            <<: *base
        """, scripts={"weekly": GOOD, "daily": GOOD})
    assert messages(loaded) == []
    assert [r.granularity.value for r in loaded.reports.values()] == ["weeks", "days"]


def test_wikimedia_query_folder_configs_load_unchanged(tmp_path):
    # The shapes of the original analytics-reportupdater-queries configs.
    loaded = load(tmp_path, """\
        graphite:
          host: graphite.eqiad.wmnet
          port: 2003
        databases:
          mediawiki:
            auto_find_db_shard: true
            wiki_db_placeholder: wiki_db
            creds_file: /etc/mysql/conf.d/stats-research-client.cnf
          wikishared:
            auto_find_db_shard: true
            use_x1: true
            creds_file: /etc/mysql/conf.d/stats-research-client.cnf
            db: wikishared
          dbstore:
            host: "analytics-store.eqiad.wmnet"
            port: 3306
            creds_file: /a/.my.cnf.research
            db: log
        defaults:
          db: mediawiki
        reports:
          all_sites_by_browser_family:
            type: script
            frequency: weeks
            granularity: weeks
            timeboxed: true
            funnel: true
            starts: 2015-06-07
            lag: 86400 # wait 1 day to compute last week
          php_drilldown:
            type: script
            granularity: weeks
            starts: 2019-09-15
            explode_by:
              MediaWiki_Version: 1.28, 1.29, 1.30, 1.31
          users:
            granularity: days
            starts: 2021-04-16
            type: sql
            execute: sql/users
            explode_by:
              wiki_db: sql/wiki_dbs.txt
            graphite:
              path: "{_metric}.byEditCount.{edit_count_bucket}.byWiki.{wiki_db}"
              metrics:
                MediaWiki.CodeMirror.preferences.byEnabled.true: users_wikitext_2010
          translations:
            granularity: weeks
            starts: 2018-01-01
            lag: 86400
            db: wikishared
          pagecreations:
            db: dbstore
            granularity: days
            starts: 2017-07-21
            lag: 3600
            explode_by:
              wiki_db: enwiki
        """, files={"sql/users.sql": "SELECT '{from_date}' AS date, '{wiki_db}' AS w",
                    "sql/wiki_dbs.txt": "enwiki\ndewiki\n",
                    "translations.sql": "SELECT '{from_date}' AS date",
                    "pagecreations.sql": "SELECT '{from_date}' AS date, '{wiki_db}' AS w"},
        scripts={"all_sites_by_browser_family": GOOD, "php_drilldown": GOOD})
    assert messages(loaded) == [] and loaded.warnings == []
    reports = loaded.reports
    assert reports["all_sites_by_browser_family"].starts == date(2015, 6, 7)
    assert reports["all_sites_by_browser_family"].lag == 86400
    assert reports["php_drilldown"].explode_by == {"MediaWiki_Version": ("1.28", "1.29", "1.30", "1.31")}
    assert reports["users"].explode_by == {"wiki_db": ("enwiki", "dewiki")}
    assert reports["users"].graphite.metrics == {
        "MediaWiki.CodeMirror.preferences.byEnabled.true": "users_wikitext_2010"}
    assert loaded.databases["wikishared"].use_x1 is True
    assert loaded.databases["dbstore"].port == 3306
    assert loaded.graphite is not None and loaded.graphite.port == 2003


# -------------------------------------------- duplicates and syntax (item 15)


def test_a_report_defined_twice_is_an_error_and_the_others_run(tmp_path):
    folder = make_folder(tmp_path, """\
        reports:
          twice:
            type: script
            granularity: days
            starts: 2026-01-04
          good:
            type: script
            granularity: days
            starts: 2026-01-04
          twice:
            type: script
            granularity: weeks
            starts: 2026-01-04
        """, scripts={"twice": GOOD, "good": GOOD})
    out = tmp_path / "out"
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)
    assert code == 2, stderr
    path = folder / "config.yaml"
    assert f"{path}: report 'twice': is defined twice in 'reports' (lines 2 and 10); keep one" in stderr
    assert (out / "good.tsv").read_text() == tsv("date\tvalue", "2026-01-04\t1")
    assert not (out / "twice.tsv").exists()
    code, stdout, _ = run_cli("validate", folder)
    assert code == 1 and f"{path}:10: report 'twice': is defined twice" in stdout


@pytest.mark.parametrize("text, expected", [
    # a key of a report
    ("reports:\n  r:\n    type: script\n    lag: 60\n    granularity: days\n    starts: 2026-01-04\n"
     "    lag: 3600\n",
     "{path}: report 'r': key 'lag': is given twice (lines 4 and 7); keep one"),
    # deeper: a metric of a report's graphite section
    ("reports:\n  r:\n    type: script\n    granularity: days\n    starts: 2026-01-04\n"
     "    graphite:\n      path: 'a.{_metric}'\n      metrics:\n        edits: n\n        edits: m\n",
     "{path}: report 'r': key 'graphite.metrics.edits': is given twice (lines 9 and 10); keep one"),
    # a database defined twice breaks it and its reports
    ("databases:\n  db: {url: 'sqlite:///a.db'}\n  db: {url: 'sqlite:///b.db'}\n"
     "reports:\n  r: {db: db, granularity: days, starts: 2026-01-04}\n",
     "{path}: database 'db': is defined twice in 'databases' (lines 2 and 3); keep one"),
])
def test_a_key_given_twice_at_any_depth_is_an_error(tmp_path, text, expected):
    loaded = load(tmp_path, text + f"  good:\n{SCRIPT_REPORT}", files={"r.sql": "SELECT '{from_date}' AS date"},
                  scripts={"r": GOOD, "good": GOOD})
    path = tmp_path / "query" / "config.yaml"
    assert expected.format(path=path) in messages(loaded)
    assert "r" in loaded.broken_reports and "r" not in loaded.reports
    assert list(loaded.reports) == ["good"]


@pytest.mark.parametrize("text, lines, key", [
    ("reports:\n  r: {type: script}\nreports:\n  s: {type: script}\n", (1, 3), "reports"),
    ("defaults:\n  lag: 1\n  lag: 2\nreports:\n  r: {type: script}\n", (2, 3), "defaults.lag"),
])
def test_a_top_level_key_given_twice_stops_the_folder(tmp_path, text, lines, key):
    folder = make_folder(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.load(folder)
    assert str(caught.value) == (f"{folder / 'config.yaml'}: line {lines[1]}: key '{key}' is given twice "
                                 f"(lines {lines[0]} and {lines[1]}); keep one")


@pytest.mark.parametrize("text, line", [
    ("reports:\n  r:\n\ttype: script\n", 3),
    ("reports:\n  r:\n    type: script\n\tgranularity: days\n", 4),
    ("reports:\n  r:\n    type: script\n  \t  granularity: days\n", 4),
])
def test_a_tab_in_the_indentation_is_named_with_its_line(tmp_path, text, line):
    folder = make_folder(tmp_path, "")
    (folder / "config.yaml").write_text(text)  # make_folder would dedent the tabs away
    with pytest.raises(ConfigError) as caught:
        config.load(folder)
    assert str(caught.value) == (f"{folder / 'config.yaml'}: line {line}: invalid YAML: a tab in the "
                                 "indentation: tabs are not allowed in YAML indentation, use spaces")


@pytest.mark.parametrize("text", [
    "reports:\n  r: {type: script\n",          # unclosed flow mapping
    "reports:\n  r: 'unclosed\n",              # unclosed quote
    "reports:\n  r: *nowhere\n",              # undefined alias
    "reports:\n  ? [a, b]\n  : x\n",           # a list as a key
    "reports:\n  r: !!python/object:os.system x\n",  # an unsafe tag
    "reports:\n  r: \x00\n",                   # a control character
])
def test_any_yaml_error_is_one_line_with_file_and_line(tmp_path, text):
    folder = make_folder(tmp_path, "")
    (folder / "config.yaml").write_text(text)
    code, stdout, stderr = run_cli("validate", folder)
    assert code == 1 and "Traceback" not in stderr
    [line] = stdout.splitlines()
    assert line.startswith(f"{folder / 'config.yaml'}: line ") and ": invalid YAML: " in line


BOMB = """\
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
reports:
  r:
    type: script
    granularity: days
    starts: 2026-01-04
    explode_by: {x: *h}
"""


def _limit_memory() -> None:
    # The old code expanded the aliases (10^8 values) into text: keep a
    # failure of this test from taking the machine's memory with it.
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.parametrize("text, says", [
    (BOMB, "its aliases expand to more than 1000000 values"),
    ("reports:\n  r: &r {type: script, explode_by: {x: *r}}\n", "an alias refers to the value that holds it"),
])
def test_aliases_cannot_expand_without_bound(tmp_path, text, says):
    folder = make_folder(tmp_path, text, scripts={"r": GOOD})
    done = subprocess.run([sys.executable, "-m", "reportupdater", "validate", str(folder)],
                          capture_output=True, text=True, timeout=120, preexec_fn=_limit_memory)
    assert done.returncode == 1, done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith(f"{folder / 'config.yaml'}: ") and line.endswith(says)


# ------------------------------------------------ dates and counts (item 10)


@pytest.mark.parametrize("line, key, says", [
    ("starts: 0001-01-01", "starts", "0001-01-01 is not between 1900-01-01 and 9000-01-01"),
    ("starts: 0999-12-31", "starts", "0999-12-31 is not between 1900-01-01 and 9000-01-01"),
    ("starts: 9999-12-31", "starts", "9999-12-31 is not between 1900-01-01 and 9000-01-01"),
    ("max_data_points: 1000000", "max_data_points", "1000000 days span more than 1000 years; at most 365242"),
    ("lag: 100000000000000", "lag", "100000000000000 is more than"),
    ("timeout: 99999999999999999999", "timeout", "99999999999999999999 seconds is more than 31622400"),
])
def test_out_of_range_dates_and_counts_are_config_errors(tmp_path, line, key, says):
    text = f"reports:\n  bad:\n    type: script\n    granularity: days\n    {line}\n"
    if not line.startswith("starts"):
        text += "    starts: 2026-01-04\n"
    folder = make_folder(tmp_path, text + f"  good:\n{SCRIPT_REPORT}", scripts={"bad": GOOD, "good": GOOD})
    out = tmp_path / "out"
    code, stdout, _ = run_cli("validate", folder)
    assert code == 1
    [problem] = stdout.splitlines()
    assert f"report 'bad': key '{key}': {says}" in problem, problem
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)
    assert code == 2 and "Traceback" not in stderr and "CRITICAL" not in stderr, stderr
    assert (out / "good.tsv").read_text() == tsv("date\tvalue", "2026-01-04\t1")


def test_starts_with_weeks_at_the_earliest_date_runs(tmp_path):
    # 1900-01-01 is a Monday: its week starts on Sunday 1899-12-31.
    folder = make_folder(tmp_path, """\
        reports:
          weekly:
            type: script
            granularity: weeks
            starts: 1900-01-01
            max_data_points: 2
        """, scripts={"weekly": GOOD})
    out = tmp_path / "out"
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)
    assert code == 0, stderr
    assert (out / "weekly.tsv").read_text() == tsv("date\tvalue", "2025-12-21\t1", "2025-12-28\t1")


SEED = """\
CREATE TABLE edits (day TEXT, n INTEGER);
INSERT INTO edits VALUES ('2026-01-01', 1), ('2026-01-02', 2), ('2026-01-03', 3), ('2026-01-04', 4);
"""


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_with_several_jobs(tmp_path, url):
    folder = make_folder(tmp_path, f"""\
        databases:
          memory:
            url: "{url}"
            seed: seed.sql
        reports:
          edits:
            db: memory
            granularity: days
            starts: 2026-01-01
          twice:
            db: memory
            granularity: days
            starts: 2026-01-01
        """, files={"seed.sql": SEED,
                    "edits.sql": "SELECT day AS date, n FROM edits WHERE day = '{from_date}'",
                    "twice.sql": "SELECT day AS date, 2 * n AS n FROM edits WHERE day = '{from_date}'"})
    out = tmp_path / "out"
    code, _, stderr = run_cli("run", folder, out, "--now", NOW, "--jobs", "4")
    assert code == 0, stderr
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr
    assert (out / "edits.tsv").read_text() == tsv("date\tn", *(f"2026-01-0{d}\t{d}" for d in range(1, 5)))
    assert (out / "twice.tsv").read_text() == tsv("date\tn", *(f"2026-01-0{d}\t{2 * d}" for d in range(1, 5)))
    # No database file was made in the query folder (sqlite:///:memory: is no file name).
    assert sorted(path.name for path in folder.iterdir() if not path.name.startswith(".")) == [
        "config.yaml", "edits.sql", "seed.sql", "twice.sql"]


# ------------------------------------------------------ secrets (item 12)

SECRET = "Cfg-S3cret-Zq81x"


# Database entries where a password is in the wrong place or of the wrong shape
# (the secret searched for is SECRET unless the entry names its own).
NUMBER_SECRET = "86753091234"
AT_TAIL = "Tail-Zq81x-Kp"  # the part after an unencoded @ of a password: taken for the host
LEAKY_DATABASES = {
    "url a mapping": f"url: {{drivername: mysql, password: {SECRET}}}",
    "url a list": f"url: ['mysql+pymysql://u:{SECRET}@h/db']",
    "url a number": f"url: {NUMBER_SECRET}",
    "url with a bad port": f"url: 'mysql+pymysql://u:{SECRET}@h:port/db'",
    "url with an @ in the password": f"url: 'mysql+pymysql://u:Pw-Head@{AT_TAIL}@127.0.0.1:1/db'",
    "url with an unknown option": f"url: 'mysql+pymysql://u:{SECRET}@127.0.0.1:1/db?charset={SECRET}'",
    "url from a variable, bad port": "url: 'mysql+pymysql://u:${CFG_SECRET}@h:port/db'",
    # PyMySQL's own ValueError quotes the option's value: here the password.
    "url quoted by the driver": "url: 'mysql+pymysql://u:${CFG_SECRET}@127.0.0.1:1/db?connect_timeout=${CFG_SECRET}'",
    "shards holding a URL": (f"{{auto_find_db_shard: true, creds_file: my.cnf, wiki_db_placeholder: wiki,"
                             f" shards: {{s1: 'mysql://u:{SECRET}@h:3306'}}}}"),
    "shards a list": f"{{auto_find_db_shard: true, creds_file: my.cnf, shards: ['u:{SECRET}@h:1']}}",
    "host holding credentials": f"{{host: {{user: u, password: {SECRET}}}, port: 3306, creds_file: x, db: d}}",
    "username a list": f"{{engine: hive, host: h, username: [u, {SECRET}]}}",
    "hive configuration a list": f"{{engine: hive, host: h, configuration: [{SECRET}]}}",
    "command with a password": f"{{engine: hive-cli, command: [beeline, -u, 'jdbc:hive2://h', -p, {SECRET}]}}",
    "the entry a URL": f"'mysql+pymysql://u:{SECRET}@h/db'",
    "the entry a list": f"['mysql+pymysql://u:{SECRET}@h/db']",
    "unknown key a URL": f"{{url: 'sqlite:///a.db', 'mysql://u:{SECRET}@h/db': 1}}",
}


@pytest.mark.parametrize("entry", list(LEAKY_DATABASES.values()), ids=list(LEAKY_DATABASES))
def test_no_password_in_any_message_whatever_the_shape(tmp_path, entry):
    body = entry if entry.startswith(("{", "'", "[")) else "{" + entry + "}"
    folder = make_folder(tmp_path, f"""\
databases:
  leaky: {body}
reports:
  uses_it:
    db: leaky
    granularity: days
    starts: 2026-01-04
    explode_by: {{wiki: enwiki}}
  good:
{SCRIPT_REPORT}""", files={"uses_it.sql": "SELECT '{from_date}' AS date, '{wiki}' AS w"},
        scripts={"good": GOOD})
    (folder / "my.cnf").write_text(f"[client]\nuser = u\npassword = {SECRET}\n")
    out = tmp_path / "out"
    env = {"CFG_SECRET": SECRET}
    outputs = []
    for args in (("run", folder, out, "--now", NOW, "-l", "debug"),
                 ("validate", folder, out, "-l", "debug"),
                 ("status", folder, out, "--json", "-v", "--now", NOW),
                 ("status", folder, out, "-v", "--now", NOW),
                 ("smoke", folder, "uses_it", "2026-01-04", "--show-query", "-l", "debug")):
        code, stdout, stderr = run_cli(*args, env=env)
        assert "Traceback" not in stderr, stderr
        outputs.append((args[0], stdout + stderr))
    secret = next((own for own in (NUMBER_SECRET, AT_TAIL) if own in entry), SECRET)
    for command, text in outputs:
        assert secret not in text, f"{command}: {text}"
    for path in out.rglob("*"):
        assert not path.is_file() or secret.encode() not in path.read_bytes(), path
    assert (out / "good.tsv").read_text() == tsv("date\tvalue", "2026-01-04\t1")


def test_status_json_lists_the_config_error_without_the_password(tmp_path):
    folder = make_folder(tmp_path, f"""\
databases:
  leaky:
    url: {{password: {SECRET}}}
reports:
  good:
{SCRIPT_REPORT}""", scripts={"good": GOOD})
    code, stdout, _ = run_cli("status", folder, tmp_path / "out", "--json", "--now", NOW)
    assert SECRET not in stdout
    assert ("database 'leaky': key 'url': a mapping (not shown: it may hold a password) is not a URL"
            in json.dumps(json.loads(stdout)))


def test_creds_file_syntax_error_never_quotes_its_lines(tmp_path):
    folder = make_folder(tmp_path, """\
        databases:
          db:
            host: 127.0.0.1
            port: 1
            creds_file: my.cnf
            db: log
        reports:
          r:
            db: db
            granularity: days
            starts: 2026-01-04
        """, files={"r.sql": "SELECT '{from_date}' AS date"})
    # No section header; a line without a key; an indented line after a bare key.
    texts = (f"password = {SECRET}\n", f"[client]\n= {SECRET}\n", f"[client]\nuser\n  {SECRET}\n")
    for number, text in enumerate(texts):
        (folder / "my.cnf").write_text(text)
        code, _, stderr = run_cli("run", folder, tmp_path / f"out{number}", "--now", NOW)
        assert code == 1 and SECRET not in stderr, stderr
        assert f"creds file {folder / 'my.cnf'} is not a my.cnf file" in stderr


@pytest.mark.parametrize("text, shown", [
    (f"http://u:{SECRET}@h/x failed", "http://u:***@h/x failed"),
    (f"('mysql://u:{SECRET}@h:1/db',)", "('mysql://u:***@h:1/db',)"),
    (f"login {SECRET} refused", "login *** refused"),
])
def test_hide_secrets(text, shown):
    assert config.hide_secrets(text, [SECRET]) == shown


def test_config_error_names_with_line_breaks_stay_one_line(tmp_path):
    loaded = load(tmp_path, 'reports:\n  "a\\nb": 1\n')
    assert messages(loaded) == [f"{tmp_path / 'query' / 'config.yaml'}: report 'a\\nb': 1 is not a "
                                "mapping of keys"]


# ------------------------------------------------- other members of the class


def test_graphite_lookups_keep_the_text_written(tmp_path):
    # YAML 1.1 made these keys False, 7 and True: the explode values `no`,
    # `07` and `on` then found no friendly name, and their metrics went out
    # under the raw value.
    (tmp_path / "names.yaml").write_text("no: Norwegian\n07: July\non: Ontario\n1.50: one and a half\n")
    lookups = publish.load_lookups(GraphiteConfig(host="h", lookups={"lang": tmp_path / "names.yaml"}))
    assert lookups == {"lang": {"no": "Norwegian", "07": "July", "on": "Ontario", "1.50": "one and a half"}}


@pytest.mark.parametrize("entry, key, says", [
    # Two names for the database: one silently won.
    ("{host: h, port: 3306, creds_file: my.cnf, db: log, database: other}", "database",
     "and 'db' are the same key: give one"),
    # Two descriptions of the server: the URL silently won.
    ("{url: 'sqlite:///a.db', host: h}", "host", "cannot be given with 'url'"),
    ("{url: 'mysql+pymysql://u@h/log', db: other}", "db", "cannot be given with 'url'"),
    ("{engine: hive, url: 'hive://u@h:10000/default', database: other}", "database",
     "cannot be given with 'url'"),
    # A password on a command line is in `ps` for every user of the machine.
    ("{engine: hive-cli, command: \"beeline -u 'jdbc:hive2://h:10000/;user=u;password=pw' -e\"}", "command",
     "holds a password option"),
    ("{engine: hive-cli, command: [beeline, '--password=pw', -e]}", "command", "holds a password option"),
])
def test_contradicting_or_unsafe_database_keys_are_refused(tmp_path, entry, key, says):
    loaded = load(tmp_path, f"databases:\n  db: {entry}\nreports:\n  good:\n{SCRIPT_REPORT}",
                  scripts={"good": GOOD})
    [message] = messages(loaded)
    assert message.startswith(f"{tmp_path / 'query' / 'config.yaml'}: database 'db': key '{key}': {says}")
    assert list(loaded.reports) == ["good"]


def test_a_hive_url_may_take_its_password_from_a_creds_file(tmp_path):
    loaded = load(tmp_path, f"databases:\n  db: {{engine: hive, url: 'hive://u@h:10000/default', "
                            f"creds_file: my.cnf, auth: LDAP}}\nreports:\n  good:\n{SCRIPT_REPORT}",
                  scripts={"good": GOOD})
    assert messages(loaded) == []


# Every key of a database entry, with values of every shape a mistake gives.
SHAPES = [None, "", [], [None], {}, {"a": None}, [[]], "0x1F", "yes", "-1", "9" * 30, "1:30", ".inf",
          f"mysql://u:{SECRET}@h/db", [f"mysql://u:{SECRET}@h/db"], {"password": SECRET}, [{"pw": SECRET}],
          SECRET, f"{SECRET}@h:1", "{x.y}"]


@pytest.mark.parametrize("engine", ["sql", "hive", "hive-cli"])
def test_every_database_key_with_every_shape_gives_one_line_without_the_password(tmp_path, engine):
    folder = make_folder(tmp_path, "reports: {}\n", files={"r.sql": "SELECT 1"})
    for key in sorted(config.DATABASE_KEYS):
        for value in SHAPES:
            entry = {"engine": engine, key: value} if key != "engine" else {key: value}
            (folder / "config.yaml").write_text(yaml.safe_dump(
                {"databases": {"d": entry}, "reports": {"r": {"db": "d", "granularity": "days",
                                                               "starts": "2026-01-01"}}}))
            try:
                loaded = config.load(folder)
            except ConfigError as exc:
                found = [str(exc)]
            else:
                found = [str(error) for error in loaded.errors] + loaded.warnings
            for message in found:
                assert "\n" not in message and SECRET not in message, (key, value, message)


def test_metrics_that_would_share_one_graphite_path_are_refused(tmp_path):
    # Without {_metric} every metric of a row goes to the same path: Graphite
    # keeps only the last point sent.
    loaded = load(tmp_path, f"""\
graphite: {{host: h}}
reports:
  bad:
{SCRIPT_REPORT}    graphite:
      path: "analytics.edits"
      metrics: {{edits: edits, editors: editors}}
  good:
{SCRIPT_REPORT}    graphite:
      path: "analytics.edits"
      metrics: {{edits: edits}}
""", scripts={"bad": GOOD, "good": GOOD})
    assert messages(loaded) == [f"{tmp_path / 'query' / 'config.yaml'}: report 'bad': key 'graphite.path': "
                                "'analytics.edits' has no {_metric}: its 2 metrics would all be sent to "
                                "the same path"]
    assert list(loaded.reports) == ["good"]


def test_validate_warns_of_two_reports_sending_to_the_same_graphite_path(tmp_path):
    folder = make_folder(tmp_path, f"""\
graphite: {{host: h}}
reports:
  first:
{SCRIPT_REPORT}    graphite: {{path: "analytics.{{_metric}}", metrics: {{edits: value}}}}
  second:
{SCRIPT_REPORT}    graphite: {{path: "analytics.{{_metric}}", metrics: {{edits: value}}}}
""", scripts={"first": GOOD, "second": GOOD})
    code, stdout, stderr = run_cli("validate", folder)
    assert code == 0, stdout
    assert ("report 'second': key 'graphite.path': metric 'edits' goes to the same path as in report "
            "'first'") in stdout + stderr
