# Secrets never leave the process: known passwords (a MariaDB creds file, a
# ${VAR} in a mysql URL, a Hive password_env) are used by succeeding and
# failing reports at `-l debug`, then by every read-only command; the
# passwords are searched for in every stdout and stderr and in every file
# written under the output and query folders. The secrets themselves live
# outside both folders (creds files beside them, environment variables).

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

# Against a live MariaDB, as cron runs it: a subprocess (live tests stay there).
from testkit import NOW, run_cli_process

SECRET = "Fault-S3cret-q7Zx9"        # the right password, in a creds file and in ${FAULT_DB_PW}
WRONG = "Wr0ng-Fault-Pw-k2Lm"        # a wrong one, in a creds file and in ${FAULT_WRONG_PW}
HIVE_SECRET = "Hive-S3cret-Pw-8fG"   # in ${FAULT_HIVE_PW}
USER = "faults_secret"

SQL = """\
SELECT DATE('{from_date}') AS date, COUNT(*) AS events, COALESCE(SUM(n), 0) AS total
FROM events WHERE day >= '{from_date}' AND day < '{to_date}'
"""

CONFIG = """\
databases:
  classic:
    host: 127.0.0.1
    port: {port}
    creds_file: {secrets}/good.cnf
    db: faults_secret
  classic_wrong:
    host: 127.0.0.1
    port: {port}
    creds_file: {secrets}/wrong.cnf
    db: faults_secret
  by_url:
    url: "mysql+pymysql://{user}:${{FAULT_DB_PW}}@127.0.0.1:{port}/faults_secret"
  by_url_wrong:
    url: "mysql+pymysql://{user}:${{FAULT_WRONG_PW}}@127.0.0.1:{port}/faults_secret"
  hive:
    engine: hive
    host: 127.0.0.1
    port: {closed}
    username: {user}
    auth: LDAP
    password_env: FAULT_HIVE_PW
reports:
  ok_classic:
    db: classic
    execute: events
    granularity: days
    starts: 2026-01-01
  bad_classic:
    db: classic_wrong
    execute: events
    granularity: days
    starts: 2026-01-01
  ok_url:
    db: by_url
    execute: events
    granularity: days
    starts: 2026-01-01
  bad_url:
    db: by_url_wrong
    execute: events
    granularity: days
    starts: 2026-01-01
  bad_query:
    db: by_url
    execute: missing_table
    granularity: days
    starts: 2026-01-01
  hive_report:
    type: hive
    db: hive
    execute: events
    granularity: days
    starts: 2026-01-01
"""

ENV = {"FAULT_DB_PW": SECRET, "FAULT_WRONG_PW": WRONG, "FAULT_HIVE_PW": HIVE_SECRET}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def secret_db(mariadb):
    mariadb.execute(
        "DROP DATABASE IF EXISTS faults_secret", "CREATE DATABASE faults_secret",
        "CREATE TABLE faults_secret.events (day DATE, n INT)",
        "INSERT INTO faults_secret.events VALUES ('2026-01-01', 3), ('2026-01-02', 4)",
        f"DROP USER IF EXISTS '{USER}'@'%'",
        f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{SECRET}'",
        f"GRANT ALL ON faults_secret.* TO '{USER}'@'%'")
    return mariadb


def everything_written(*folders: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for folder in folders if folder.exists()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def assert_nowhere(secrets: list[str], outputs: list[tuple[str, str]], files: dict[str, bytes]) -> None:
    for secret in secrets:
        for what, text in outputs:
            leaks = [line for line in text.splitlines() if secret in line]
            assert not leaks, f"{secret!r} in {what}: {leaks[0][:300]}"
        for path, data in files.items():
            assert secret.encode() not in data, f"{secret!r} in {path}"


def test_passwords_never_appear_in_output_logs_or_files(tmp_path, secret_db):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "good.cnf").write_text(f"[client]\nuser = {USER}\npassword = \"{SECRET}\"\n")
    (secrets / "wrong.cnf").write_text(f"[client]\nuser = {USER}\npassword = {WRONG}\n")
    folder = tmp_path / "query"
    folder.mkdir()
    (folder / "config.yaml").write_text(CONFIG.format(port=secret_db.port, secrets=secrets, user=USER,
                                                      closed=closed_port()))
    (folder / "events.sql").write_text(SQL)
    (folder / "events.hql").write_text(SQL)
    (folder / "missing_table.sql").write_text(SQL.replace("FROM events", "FROM no_such_table"))
    out = tmp_path / "out"
    env = ENV

    outputs: list[tuple[str, str]] = []

    def cli(*args) -> tuple[int, str, str]:
        code, stdout, stderr = run_cli_process(*args, env=env)
        name = " ".join(map(str, args))
        outputs.extend([(f"stdout of {name}", stdout), (f"stderr of {name}", stderr)])
        return code, stdout, stderr

    code, _, stderr = cli("run", folder, out, "--now", NOW, "-l", "debug",
                          "--metrics-file", out / "metrics.prom")
    assert code == 1, stderr
    # Every path was taken: successes, wrong passwords, a failing query, an unreachable Hive.
    assert (out / "ok_classic.tsv").read_text().splitlines()[1:3] == ["2026-01-01\t1\t3",
                                                                     "2026-01-02\t1\t4"]
    assert (out / "ok_url.tsv").read_text() == (out / "ok_classic.tsv").read_text()
    assert re.search(r"ERROR bad_classic 2026-01-01: failed: .*Access denied for user 'faults_secret'", stderr)
    assert re.search(r"ERROR bad_url 2026-01-01: failed: .*Access denied for user 'faults_secret'", stderr)
    assert re.search(r"ERROR bad_query 2026-01-01: failed: .*no_such_table", stderr)
    assert re.search(r"ERROR hive_report 2026-01-01: failed: .*cannot connect to Hive", stderr)
    assert " DEBUG " in stderr and "query:" in stderr

    cli("run", folder, out, "--now", NOW, "-l", "debug", "--retry-failed-now")
    cli("run", "--dry-run", folder, out, "--now", NOW, "-l", "debug")
    code, stdout, _ = cli("status", folder, out, "--json", "-v", "--now", NOW, "-l", "debug")
    assert code == 1 and "Access denied" in stdout  # the failures are shown, their passwords not
    cli("status", folder, out, "-v", "--now", NOW, "-l", "debug")
    cli("validate", folder, out, "-l", "debug")
    for report in ("ok_classic", "bad_classic", "ok_url", "bad_url", "bad_query", "hive_report"):
        cli("smoke", folder, report, "2026-01-02", "--show-query", "--show-graphite", "-l", "debug")

    assert_nowhere([SECRET, WRONG, HIVE_SECRET], outputs, everything_written(out, folder))


# Characters that mean something in a URL: a ${VAR} holding them must still be
# the password, all of it, and no part of it may show in an error.
SPECIAL = "Qz8Ab@Kx7Cd/Wv6Ef:Jq5Gh#Pm4Ij?Rt3Kl%Ls2Mn"
FRAGMENTS = re.split(r"[@/:#?%]", SPECIAL)


def test_password_with_url_characters_in_a_variable_never_leaks(tmp_path, secret_db):
    secret_db.execute("DROP USER IF EXISTS 'faults_special'@'%'",
                      f"CREATE USER 'faults_special'@'%' IDENTIFIED BY '{SPECIAL}'",
                      "GRANT ALL ON faults_secret.* TO 'faults_special'@'%'")
    folder = tmp_path / "query"
    folder.mkdir()
    (folder / "config.yaml").write_text(f"""\
databases:
  by_url:
    url: "mysql+pymysql://faults_special:${{FAULT_SPECIAL_PW}}@127.0.0.1:{secret_db.port}/faults_secret"
reports:
  events:
    db: by_url
    granularity: days
    starts: 2026-01-01
""")
    (folder / "events.sql").write_text(SQL)
    out = tmp_path / "out"
    outputs = []
    for args in (("run", folder, out, "--now", NOW, "-l", "debug"),
                 ("status", folder, out, "--json", "--now", NOW),
                 ("smoke", folder, "events", "2026-01-02", "--show-query", "-l", "debug")):
        code, stdout, stderr = run_cli_process(*args, env={"FAULT_SPECIAL_PW": SPECIAL})
        outputs += [(f"stdout of {args[0]}", stdout), (f"stderr of {args[0]}", stderr)]
        if args[0] == "run":
            run_code, run_stderr = code, stderr

    assert_nowhere([SPECIAL, *FRAGMENTS], outputs, everything_written(out, folder))
    assert run_code == 0, run_stderr  # the variable is the password, whatever it holds
