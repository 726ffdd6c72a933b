# Hostile values in a config: explode values that are paths, SQL or control
# characters; files and scripts reached through `..` or symlinks; template
# fields that reach into Python objects. Each is refused with an error
# naming the config file, the report and the key; nothing is executed for
# that report, no file is created outside the output folder, and the other
# reports still run.

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testkit import NOW, make_folder, run_cli, tsv

# Leaves a mark when it runs: a rejected report must never run.
MARKS = """\
#!/bin/sh
touch "$(dirname "$0")/ran"
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""

DONE = tsv("date\tvalue", "2026-01-03\t1", "2026-01-04\t1")

HOSTILE = {
    "dots": "../../etc",
    "sql": "enwiki'; DROP TABLE x; --",
    "tab": "en\twiki",
    "newline": "en\nwiki",
    "slash": "en/wiki",
    "nul": "en\0wiki",
    "absolute": "/etc/passwd",
    "option": "--help",
}
# A values file cannot hold a line break inside a value (it separates values).
IN_FILE = [name for name in HOSTILE if name != "newline"]


def report(name: str, explode: str, extra: str = "") -> str:
    return f"""\
  {name}:
    type: script
    execute: marks
    granularity: days
    starts: 2026-01-03
    explode_by:
      wiki: {explode}
{extra}"""


def tree(root: Path) -> set[str]:
    """Every path under root (files, folders, links), relative; the version
    records (OUTPUT/.reportupdater-versions/, bookkeeping) left out."""
    return {str(path.relative_to(root)) for path in root.rglob("*")
            if ".reportupdater-versions" not in path.relative_to(root).parts}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("hostile")
    files: dict[str, str] = {}
    reports = [report("fine_first", "enwiki")]
    for name, value in HOSTILE.items():
        reports.append(report(f"inline_{name}", json.dumps([value])))  # YAML reads JSON escapes
    for name in IN_FILE:
        files[f"values_{name}.txt"] = f"enwiki\n{HOSTILE[name]}\ndewiki\n"
        reports.append(report(f"file_{name}", f"values_{name}.txt"))
    reports.append(report("fine_last", "enwiki"))
    folder = make_folder(tmp_path, "reports:\n" + "".join(reports), files=files,
                         scripts={"marks": MARKS})
    before = tree(tmp_path)
    out = tmp_path / "deep" / "er" / "out"
    result = run_cli("run", folder, out, "--now", NOW)
    return {"tmp": tmp_path, "folder": folder, "out": out, "before": before, "run": result,
            "validate": run_cli("validate", folder)}


def test_the_other_reports_run_and_nothing_lands_outside_the_output_folder(hostile_run):
    code, _, stderr = hostile_run["run"]
    out = hostile_run["out"]
    assert code == 2, stderr  # config errors
    assert "Traceback" not in stderr
    assert (out / "fine_first" / "enwiki.tsv").read_text() == DONE
    assert (out / "fine_last" / "enwiki.tsv").read_text() == DONE
    new = tree(hostile_run["tmp"]) - hostile_run["before"]
    outside = sorted(path for path in new if not path.startswith("deep/er/out")
                     and path not in ("deep", "deep/er", "query/ran"))
    assert outside == [], outside
    assert sorted(tree(out)) == [".reportupdater.lock", "fine_first", "fine_first/enwiki.tsv",
                                 "fine_last", "fine_last/enwiki.tsv"]
    assert not Path("/etc/passwd.tsv").exists() and not Path("/etc.tsv").exists()


@pytest.mark.parametrize("key", [f"inline_{name}" for name in HOSTILE] + [f"file_{name}" for name in IN_FILE])
def test_hostile_explode_value_is_rejected_naming_file_report_and_key(hostile_run, key):
    value = HOSTILE[key.split("_", 1)[1]]
    config = hostile_run["folder"] / "config.yaml"
    expected = (f"{config}: report '{key}': key 'explode_by.wiki': value {value!r} is not allowed")
    _, _, stderr = hostile_run["run"]
    assert expected in stderr, stderr
    _, stdout, _ = hostile_run["validate"]
    assert f"report '{key}': key 'explode_by.wiki': value {value!r} is not allowed" in stdout, stdout
    assert not (hostile_run["out"] / key).exists()


def test_permissive_pattern_still_never_writes_outside(tmp_path):
    target = tmp_path / "abs"
    config = "reports:\n" + report("loose", json.dumps(["../x", "..", str(target), "a/../../b", "ok"]),
                                   "    explode_value_pattern: '.*'\n") + """\
  two:
    type: script
    execute: marks
    granularity: days
    starts: 2026-01-03
    explode_value_pattern: '.*'
    explode_by:
      a: ..
      b: x
"""
    folder = make_folder(tmp_path, config, scripts={"marks": MARKS})
    out = tmp_path / "out"
    before = tree(tmp_path)

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 1, stderr
    assert "Traceback" not in stderr
    for value, path in (("../x", out / "loose" / "../x.tsv"), ("..", out / "loose" / "...tsv"),
                        (str(target), Path(f"{target}.tsv")),
                        ("a/../../b", out / "loose" / "a/../../b.tsv")):
        assert f"ERROR loose wiki={value}: {path}: a report name or explode value would leave " \
               "the output folder" in stderr, stderr
    assert "ERROR two a=.. b=x: " in stderr
    assert sorted(tree(out)) == [".reportupdater.lock", "loose", "loose/ok.tsv"]
    new = tree(tmp_path) - before
    assert sorted(new) == ["out", "out/.reportupdater.lock", "out/loose", "out/loose/ok.tsv",
                           "query/ran"], sorted(new)
    # The read-only views say so too, without a traceback.
    for command in (["status", "--json"], ["run", "--dry-run"]):
        code, stdout, stderr = run_cli(command[0], *command[1:], folder, out, "--now", NOW)
        assert code in (1, 0) and "Traceback" not in stderr, stderr
        assert "would leave the output folder" in stdout, stdout


OUTSIDE = """\
#!/bin/sh
touch "$(dirname "$0")/outside-ran"
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""


def test_execute_and_files_outside_the_query_folder_are_rejected(tmp_path):
    # Real files outside the query folder, so that "outside" is the only reason.
    (tmp_path / "outside").write_text(OUTSIDE)
    (tmp_path / "outside").chmod(0o755)
    (tmp_path / "outside.sql").write_text("SELECT '{from_date}' AS date, 1 AS value\n")
    (tmp_path / "wikis.txt").write_text("enwiki\n")
    (tmp_path / "lookups.yaml").write_text("enwiki: en\n")
    config = """\
databases:
  db:
    url: "sqlite:///data.db"
graphite:
  host: 127.0.0.1
  port: 9
  lookups:
    wiki: lookups.yaml
reports:
  dotdot_script:
    type: script
    execute: ../outside
    granularity: days
    starts: 2026-01-03
  dotdot_sql:
    db: db
    execute: ../outside
    granularity: days
    starts: 2026-01-03
  linked_script:
    type: script
    execute: script_link
    granularity: days
    starts: 2026-01-03
  linked_sql:
    db: db
    execute: sql_link
    granularity: days
    starts: 2026-01-03
  fine:
    type: script
    execute: marks
    granularity: days
    starts: 2026-01-03
"""
    folder = make_folder(tmp_path, config, scripts={"marks": MARKS})
    (folder / "script_link").symlink_to(tmp_path / "outside")
    (folder / "sql_link.sql").symlink_to(tmp_path / "outside.sql")
    (folder / "lookups.yaml").symlink_to(tmp_path / "lookups.yaml")
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW, "--no-graphite")

    assert code == 2, stderr
    where = f"{folder / 'config.yaml'}: "
    for key, name in (("dotdot_script", "../outside"), ("dotdot_sql", "../outside"),
                      ("linked_script", "script_link"), ("linked_sql", "sql_link")):
        assert f"{where}report '{key}': key 'execute': {name!r} points outside the query folder" \
            in stderr, stderr
    assert f"{where}graphite: key 'lookups.wiki': 'lookups.yaml' points outside the query folder" \
        in stderr, stderr
    assert not (tmp_path / "outside-ran").exists()
    assert sorted(tree(out)) == [".reportupdater.lock", "fine.tsv"]


def test_explode_values_file_symlinked_outside_is_rejected(tmp_path):
    # The same rule as for templates, scripts and lookups: a values file that
    # resolves outside the query folder is refused, not read, and not taken
    # for the literal value "wikis.txt" either.
    (tmp_path / "wikis.txt").write_text("enwiki\ndewiki\n")
    config = "reports:\n" + report("linked", "wikis.txt") + report("fine", "enwiki")
    folder = make_folder(tmp_path, config, scripts={"marks": MARKS})
    (folder / "wikis.txt").symlink_to(tmp_path / "wikis.txt")
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert sorted(tree(out)) == [".reportupdater.lock", "fine", "fine/enwiki.tsv"], \
        f"the linked report ran with the values {sorted(tree(out / 'linked'))}"
    assert code == 2, stderr
    assert f"{folder / 'config.yaml'}: report 'linked': key 'explode_by.wiki': " in stderr, stderr
    assert "outside the query folder" in stderr, stderr


TEMPLATES = {
    "attribute": "SELECT '{from_date}' AS date, '{wiki.__class__}' AS value\n",
    "index": "SELECT '{from_date}' AS date, '{wiki[0]}' AS value\n",
    "deep": "SELECT '{from_date.__class__.__mro__}' AS date, 1 AS value\n",
    "spec": "SELECT '{from_date:{wiki}}' AS date, 1 AS value\n",
}


def test_template_fields_that_reach_into_objects_are_errors(tmp_path):
    reports = "".join(f"""\
  sql_{name}:
    db: db
    granularity: days
    starts: 2026-01-03
    explode_by:
      wiki: enwiki
""" for name in TEMPLATES)
    graphite_reports = "".join(f"""\
  path_{name}:
    type: script
    execute: marks
    granularity: days
    starts: 2026-01-03
    explode_by:
      wiki: enwiki
    graphite:
      path: "x.{field}.{{_metric}}"
      metrics: {{v: value}}
""" for name, field in (("attribute", "{wiki.__class__}"), ("index", "{wiki[0]}")))
    config = f"""\
databases:
  db:
    url: "sqlite:///data.db"
graphite:
  host: 127.0.0.1
  port: 9
reports:
{reports}{graphite_reports}"""
    folder = make_folder(tmp_path, config, files={f"sql_{name}.sql": text
                                                  for name, text in TEMPLATES.items()},
                         scripts={"marks": MARKS})
    out = tmp_path / "out"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 2, stderr
    assert "Traceback" not in stderr
    for name in TEMPLATES:
        assert f"report 'sql_{name}': key 'execute': {folder / f'sql_{name}.sql'}: placeholder" \
            in stderr, stderr
        assert not (out / f"sql_{name}").exists()
    # A Graphite path is text too: no point is built from it, none queued or sent.
    for _kind, field in (("attribute", "{wiki.__class__}"), ("index", "{wiki[0]}")):
        assert f"placeholder {field} is not a plain name" in stderr, stderr
    assert not list(out.glob(".graphite-queue/*/*.txt"))
    code, stdout, _ = run_cli("validate", folder)
    assert code == 1
    for name in ("attribute", "index"):
        assert f"report 'path_{name}': key 'graphite.path': placeholder" in stdout, stdout
    code, _, stderr = run_cli("smoke", folder, "sql_attribute", "2026-01-03")
    assert code == 2 and "is not a plain name" in stderr, stderr
