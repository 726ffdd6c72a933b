# The command line's own grammar: options before or after the command word,
# the original's form without a command word, unknown commands, help, usage
# errors on one line, options given twice, `python -m` and the installed
# command being the same; what `pip install` brings for Hive reports; and the
# docs linking only to files inside the repository. Everything runs the real
# CLI in a subprocess (tests/conftest.py's run_cli).

from __future__ import annotations

import importlib.metadata
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from testkit import NOW, assert_failed, files_under, make_folder, run_cli, tsv

REPO = Path(__file__).resolve().parent.parent
COMMANDS = ("run", "rerun", "status", "changes", "smoke", "validate", "publish-backfill",
            "graphite-backfill", "grafana", "schema", "view")

CONFIG = """\
graphite:
  host: 127.0.0.1
  port: {port}
reports:
  daily:
    type: script
    granularity: days
    starts: 2026-01-02
    graphite:
      path: "test.daily.{{_metric}}"
      metrics:
        value: value
"""

SCRIPT = """\
#!/bin/sh
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""

EXPECTED = tsv(("date", "value"), ("2026-01-02", 1), ("2026-01-03", 1), ("2026-01-04", 1))


def closed_port() -> int:
    """A loopback port nothing listens on (Graphite and Hive are "down")."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def folder_with_config_elsewhere(tmp_path: Path) -> tuple[Path, Path]:
    """A query folder whose config is outside it: only `--config-path` finds it,
    so a command that ignored the option would fail to load the folder."""
    folder = make_folder(tmp_path, CONFIG.format(port=closed_port()), scripts={"daily": SCRIPT})
    config = tmp_path / "elsewhere.yaml"
    shutil.move(folder / "config.yaml", config)
    return folder, config


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr and "usage:" not in stderr
    return lines[0]


# --------------------------------------------- options before the command word

# Per command: its arguments, and what its standard output must hold.
COMMAND_ARGS = {
    "run": (["{folder}", "{out}", "--no-graphite"], ""),
    "status": (["{folder}", "{out}"], "daily"),
    "changes": (["{folder}", "{out}"], "no report has more than one version"),
    "smoke": (["{folder}", "daily", "2026-01-03"], "2026-01-03\t1"),
    "validate": (["{folder}"], ": OK"),
    "rerun": (["{folder}", "2026-01-02", "2026-01-03"], "daily: marked to be recomputed"),
    "publish-backfill": (["{folder}", "{out}", "--to", "graphite"], "points queued"),
    "graphite-backfill": (["{folder}", "{out}"], "points queued"),
    "grafana": (["{folder}"], '"title"'),
    "schema": ([], '"$schema"'),
    "view": (["{folder}", "{out}", "-o", "{out}/report.html"], "wrote "),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_options_before_the_command_word_work_for_every_command(tmp_path, command):
    results = {}
    for form in ("before", "after"):  # each in a folder of its own, from scratch
        base = tmp_path / form
        folder, config = folder_with_config_elsewhere(base)
        out = base / "out"
        if command not in ("run", "rerun"):  # something to look at
            assert run_cli("run", folder, out, "--config-path", config, "--no-graphite",
                           "--now", NOW)[0] == 0
        args, shown = COMMAND_ARGS[command]
        args = [arg.format(folder=folder, out=out) for arg in args]
        options = ["-l", "info", "--config-path", str(config), "--now", NOW]
        line = [*options, command, *args] if form == "before" else [command, *args, *options]
        code, stdout, stderr = run_cli(*line)
        results[form] = (code, stdout.replace(str(base), "BASE"),
                         without_times(stderr).replace(str(base), "BASE"))
        if command == "run":
            assert files_under(out) == {"daily.tsv": EXPECTED}

    before, after = results["before"], results["after"]
    assert before[0] in (0, 1), before  # 1: graphite-backfill finds Graphite down
    assert shown in before[1]
    if command == "rerun":  # its line names the request file, new each time
        before, after = before[0], after[0]
    elif command == "run":
        assert "INFO report daily: 3 computed" in before[2]
    assert before == after


def without_times(log: str) -> str:
    """A log without what differs from run to run: times, durations, ports, queue names."""
    log = re.sub(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", "", log, flags=re.M)
    log = re.sub(r"\d+\.\d+ s\b", "N s", log)
    return re.sub(r"127\.0\.0\.1:\d+|query-[0-9a-f]+", "X", log)


def test_every_option_of_a_command_may_come_before_it(tmp_path):
    folder, config = folder_with_config_elsewhere(tmp_path)
    out = tmp_path / "out"
    code, _, stderr = run_cli("-j", "1", "-r", "daily", "--no-graphite", "--config-path", config,
                              "-l", "info", "run", folder, out, "--now", NOW)
    assert code == 0, stderr
    assert files_under(out) == {"daily.tsv": EXPECTED}

    code, stdout, stderr = run_cli("--json", "-v", "--now", NOW, "--config-path", config,
                                   "status", folder, out)
    assert code == 0, stderr
    assert stdout.startswith("{")

    # An option the command does not take is refused, before or after it.
    code, _, stderr = run_cli("--json", "run", folder, out, "--now", NOW)
    assert code == 2
    assert one_line(stderr) == ("reportupdater run: error: unrecognized arguments: --json "
                                "(see 'reportupdater run --help')")


def test_abbreviated_and_attached_option_values_before_the_command(tmp_path):
    folder, config = folder_with_config_elsewhere(tmp_path)
    out = tmp_path / "out"
    code, _, stderr = run_cli("--log=info", "--config", config, "-linfo", "--no-g",
                              "run", folder, out, "--now", NOW)
    assert code == 0, stderr
    assert " INFO " in stderr
    assert files_under(out) == {"daily.tsv": EXPECTED}


def test_the_original_command_line_without_a_command_word_takes_any_run_option(tmp_path):
    folder, config = folder_with_config_elsewhere(tmp_path)
    out = tmp_path / "out"
    code, _, stderr = run_cli("--config-path", config, "--no-graphite", "-l", "info", "-j", "1",
                              folder, out, "--now", NOW)
    assert code == 0, stderr
    assert "report daily: 3 computed" in stderr
    assert files_under(out) == {"daily.tsv": EXPECTED}


def test_a_query_folder_named_like_a_command_is_written_as_a_path(tmp_path):
    make_folder(tmp_path, CONFIG.format(port=closed_port()), scripts={"daily": SCRIPT}, name="status")
    code, _, stderr = run_cli("./status", "out", "--no-graphite", "--now", NOW, cwd=tmp_path)
    assert code == 0, stderr
    assert files_under(tmp_path / "out") == {"daily.tsv": EXPECTED}


# ------------------------------------------------------------ unknown commands

def test_a_misspelt_command_before_a_query_folder_is_an_unknown_command(tmp_path):
    folder, _ = folder_with_config_elsewhere(tmp_path)
    code, stdout, stderr = run_cli("-l", "info", "stauts", folder, tmp_path / "out")

    assert code == 2 and stdout == ""
    assert one_line(stderr) == (
        "reportupdater: error: unknown command 'stauts' (did you mean 'status'?); commands: "
        f"{', '.join(COMMANDS)} (see 'reportupdater --help')")
    assert not (tmp_path / "out").exists()


def test_a_first_word_that_is_neither_a_command_nor_a_directory(tmp_path):
    code, stdout, stderr = run_cli("nosuch", tmp_path / "out", cwd=tmp_path)

    assert code == 2 and stdout == ""
    assert one_line(stderr) == (
        "reportupdater: error: unknown command or missing query folder 'nosuch': no command has "
        f"this name ({', '.join(COMMANDS)}) and no directory nosuch exists "
        "(see 'reportupdater --help')")
    assert "query folder does not exist" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_a_file_is_not_a_query_folder(tmp_path):
    (tmp_path / "config.yaml").write_text("reports: {}\n")
    code, _, stderr = run_cli("config.yaml", "out", cwd=tmp_path)
    assert code == 2
    assert "unknown command or missing query folder 'config.yaml'" in one_line(stderr)


def test_options_without_a_command_or_query_folder(tmp_path):
    code, _, stderr = run_cli("-l", "info", "--now", NOW, cwd=tmp_path)
    assert code == 2
    assert one_line(stderr).startswith("reportupdater: error: no command and no QUERY_FOLDER given")


def test_no_arguments_prints_the_help_on_stderr_and_exits_2(tmp_path):
    code, stdout, stderr = run_cli(cwd=tmp_path)
    assert code == 2 and stdout == ""
    assert stderr.startswith("usage: reportupdater")


# ------------------------------------------------------------------------ help

@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command_after_or_before_it(tmp_path, command):
    after = run_cli(command, "--help", cwd=tmp_path)
    before = run_cli("-h", command, cwd=tmp_path)
    with_options = run_cli("-l", "info", "--help", command, "Q", cwd=tmp_path)

    assert after[0] == 0 and after[2] == ""
    assert after[1].startswith(f"usage: reportupdater {command} ")
    assert before == after == with_options


def test_main_help_lists_every_command_and_the_options_before_them(tmp_path):
    code, stdout, stderr = run_cli("--help", cwd=tmp_path)
    assert code == 0 and stderr == ""
    for command in COMMANDS:
        assert re.search(rf"^\s+{re.escape(command)}\s", stdout, re.M), command
    assert "--log-level" in stdout and "--config-path" in stdout
    assert "Options may come before the command word" in " ".join(stdout.split())
    assert run_cli("-l", "info", "--version", cwd=tmp_path) == run_cli("--version", cwd=tmp_path)
    assert run_cli("--version", cwd=tmp_path)[1].startswith("reportupdater ")


def test_python_m_is_the_installed_command(tmp_path):
    command = Path(sys.executable).parent / "reportupdater"
    if not command.exists():
        pytest.skip(f"{command} is not installed")
    folder, config = folder_with_config_elsewhere(tmp_path)
    for args in (["--help"], ["-h", "status"], ["nosuch"], ["-l", "info", "stauts", str(folder)],
                 ["--config-path", str(config), "validate", str(folder)], ["run"], ["--version"]):
        installed = subprocess.run([str(command), *args], capture_output=True, text=True,
                                   timeout=60, cwd=tmp_path)
        assert run_cli(*args, cwd=tmp_path) == (installed.returncode, installed.stdout,
                                                installed.stderr), args


# ------------------------------------------------------------ usage errors

@pytest.mark.parametrize("args, message", [
    (["run"], "reportupdater run: error: the following arguments are required: QUERY_FOLDER"),
    (["status", "{folder}", "-l", "loud"], "reportupdater status: error: argument -l/--log-level: "
                                            "'loud' is not one of"),
    (["-l", "loud", "status", "{folder}"], "reportupdater status: error: argument -l/--log-level: "
                                            "'loud' is not one of"),
    (["--now", "yesterday", "{folder}", "{out}"], "reportupdater run: error: argument --now: "
                                                   "'yesterday' is not an ISO date-time"),
    (["rerun", "{folder}", "2026-01-01"], "reportupdater rerun: error: the following arguments are "
                                          "required: END"),
    (["smoke", "{folder}", "daily", "3 Jan"], "reportupdater smoke: error: argument DATE: "
                                              "'3 Jan' is not a date YYYY-MM-DD"),
    (["validate", "{folder}", "{out}", "extra"], "reportupdater validate: error: unrecognized "
                                                 "arguments: extra"),
    (["graphite-backfill", "{folder}", "--since", "x"], "reportupdater graphite-backfill: error: "
                                                         "argument --since: 'x' is not a date"),
    (["grafana", "--bogus", "{folder}"], "reportupdater grafana: error: unrecognized arguments: "
                                         "--bogus"),
    (["--bogus", "status", "{folder}"], "reportupdater status: error: unrecognized arguments: "
                                        "--bogus"),
    (["{folder}", "{out}", "-j", "0"], "reportupdater run: error: argument -j/--jobs: '0' is not "
                                       "a whole number >= 1"),
])
def test_usage_errors_are_one_line_and_exit_2(tmp_path, args, message):
    folder, _ = folder_with_config_elsewhere(tmp_path)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(*[arg.format(folder=folder, out=out) for arg in args])

    assert code == 2 and stdout == ""
    line = one_line(stderr)
    assert line.startswith(message), line
    assert line.endswith("--help')")
    assert not out.exists()


# --------------------------------------------------------- options given twice

def test_an_option_that_changes_the_work_given_twice_is_refused(tmp_path):
    folder, config = folder_with_config_elsewhere(tmp_path)
    other = tmp_path / "other.yaml"
    other.write_text(config.read_text().replace("2026-01-02", "2026-01-03"))
    out = tmp_path / "out"

    code, _, stderr = run_cli("--config-path", config, "run", folder, out, "--config-path", other,
                              "--now", NOW)
    assert code == 2
    assert one_line(stderr) == (
        f"reportupdater run: error: --config-path given twice (--config-path {config}, "
        f"--config-path {other}): give it once (see 'reportupdater run --help')")
    assert not out.exists()

    for twice in (["--now", NOW, "--now", "2026-01-04T05:00"], ["-j", "1", "--jobs", "2"],
                  ["--max-intervals", "1", "--max-intervals", "2"]):
        code, _, stderr = run_cli("run", folder, out, "--config-path", config, *twice)
        assert code == 2 and "given twice" in one_line(stderr), twice
    assert not out.exists()

    # The same value twice is no contradiction.
    code, _, stderr = run_cli("--config-path", config, "--no-graphite", "run", folder, out,
                              "--config-path", config, "--now", NOW)
    assert code == 0, stderr
    assert files_under(out) == {"daily.tsv": EXPECTED}


def test_log_level_given_twice_the_last_wins(tmp_path):
    # It changes only what is printed; `./run-demo -l debug` appends to a
    # command line that already has `-l info`.
    folder, config = folder_with_config_elsewhere(tmp_path)
    code, _, stderr = run_cli("-l", "warning", "run", folder, tmp_path / "out", "--no-graphite",
                              "--config-path", config, "--now", NOW, "-l", "info")
    assert code == 0, stderr
    assert "report daily: 3 computed" in stderr


# ----------------------------------------------------------- broken pipes

def test_output_into_a_closed_pipe_is_no_internal_error(tmp_path):
    # `reportupdater grafana Q | head -1`: the reader stops reading early.
    folder, config = folder_with_config_elsewhere(tmp_path)
    process = subprocess.Popen(
        f"{sys.executable} -m reportupdater grafana {folder} --config-path {config} | head -c 1",
        shell=True, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0  # head's
    assert stdout == "{"
    assert "internal error" not in stderr and "Traceback" not in stderr and "Broken" not in stderr


def test_a_diff_reader_that_goes_away_does_not_stop_the_run(tmp_path):
    folder, config = folder_with_config_elsewhere(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", folder, out, "--config-path", config, "--no-graphite", "--now", NOW)[0] == 0
    script = folder / "daily"
    script.write_text(SCRIPT.replace("\\t1", "\\t2"))
    assert run_cli("rerun", folder, "2026-01-02", "2026-01-05", "--config-path", config,
                   "--now", NOW)[0] == 0
    process = subprocess.run(
        f"{sys.executable} -m reportupdater run {folder} {out} --config-path {config} "
        f"--no-graphite --now {NOW} --diff -j 1 | head -c 1; echo \" ${{PIPESTATUS[0]}}\"",
        shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=60)
    assert process.stdout.endswith(" 0\n"), process  # the run's own exit status
    assert "internal error" not in process.stderr and "Traceback" not in process.stderr
    assert files_under(out) == {"daily.tsv": EXPECTED.replace("\t1", "\t2")}


# ----------------------------------------------------------- Hive packaging

def _requirement_name(text: str) -> str:
    return re.split(r"[\s\[<>=!~;]", text, maxsplit=1)[0].lower().replace("_", "-")


def test_pip_install_brings_every_package_hive_reports_import():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dependencies = {_requirement_name(item) for item in project["dependencies"]}
    # The modules the hive engine and PyHive import to reach HiveServer2
    # (PyHive imports thrift_sasl, and thrift_sasl pure-sasl, when it connects).
    distributions = importlib.metadata.packages_distributions()
    for module in ("pyhive", "TCLIService", "thrift", "thrift_sasl", "puresasl"):
        names = {_requirement_name(name) for name in distributions[module]}
        assert names & dependencies, f"module {module} ({names}) is not in dependencies"
    # `pip install 'reportupdater[hive]'` of older instructions still works.
    extras = project["optional-dependencies"]
    assert "hive" in extras
    assert {_requirement_name(item) for item in extras["kerberos"]} == {"kerberos"}


HIVE_CONFIG = """\
databases:
  warehouse:
    engine: hive
    host: 127.0.0.1
    port: {port}
    auth: {auth}
    {extra}
reports:
  sessions:
    type: hive
    db: warehouse
    granularity: days
    starts: 2026-01-04
"""


def _hive_folder(tmp_path: Path, auth: str, extra: str = "") -> Path:
    return make_folder(tmp_path, HIVE_CONFIG.format(port=closed_port(), auth=auth, extra=extra),
                       files={"sessions.hql": "SELECT '{from_date}' AS date, 1 AS n\n"})


def test_a_hive_report_without_pyhive_names_the_missing_package(tmp_path):
    # A broken install cannot be made for real inside the shared venv:
    # `sys.modules["pyhive"] = None` makes `import pyhive` fail as if it were
    # not installed (the one simulated fault here).
    folder = _hive_folder(tmp_path, "NONE")
    code = ("import sys; sys.modules['pyhive'] = None; from reportupdater.cli import main; "
            "sys.argv[0] = 'reportupdater'; raise SystemExit(main())")
    done = subprocess.run([sys.executable, "-c", code, "run", str(folder), str(tmp_path / "out"),
                           "--now", NOW], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert_failed(done.stderr, "sessions 2026-01-04",
                  "hive reports need the Python package 'PyHive' (module pyhive), a dependency of "
                  "reportupdater missing from this installation: reinstall reportupdater")


def test_a_kerberos_hive_database_without_the_kerberos_package_says_so(tmp_path):
    for module in ("kerberos", "sasl"):
        try:
            __import__(module)
            pytest.skip(f"the {module} module is installed here")
        except ImportError:
            pass
    folder = _hive_folder(tmp_path, "KERBEROS", "kerberos_service_name: hive")
    code, _, stderr = run_cli("run", folder, tmp_path / "out", "--now", NOW)
    assert code == 1, stderr
    assert_failed(stderr, "sessions 2026-01-04",
                  "auth: KERBEROS needs the Python package 'kerberos': "
                  "pip install 'reportupdater[kerberos]' (it compiles against libkrb5-dev)")
