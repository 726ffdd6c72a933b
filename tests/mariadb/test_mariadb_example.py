"""queries/mediawiki-users against a live MariaDB: per-wiki databases found by
shard (dblists), shards reached through the `shards:` map, one pool per server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime, UTC
from pathlib import Path

import yaml

from live_servers import USER
from reportupdater import config as config_stage
from reportupdater.datatypes import Interval, Job
from reportupdater.engines.sql import SqlEngine

EXAMPLE = Path(__file__).resolve().parents[2] / "queries" / "mediawiki-users"

SCHEMA = [
    "CREATE TABLE user (user_id INT UNSIGNED PRIMARY KEY, user_name VARBINARY(255), "
    "user_registration VARBINARY(14), user_editcount INT)",
    "CREATE TABLE user_properties (up_user INT UNSIGNED, up_property VARBINARY(255), up_value BLOB, "
    "PRIMARY KEY (up_user, up_property))",
]
# (id, name, registered, edits, codemirror preference or None)
USERS = {
    "enwiki": [(1, "Ada", "20250101000000", 0, None), (2, "Bo", "20250101120000", 3, "1"),
               (3, "Ćirić", "20250102080000", 250, "0"), (4, "Dee", "20250102090000", 250, "1")],
    "dewiki": [(1, "Jörg", "20250101050000", 42, "1")],
    "frwiki": [],
}


def load_wikis(mariadb) -> None:
    for wiki, users in USERS.items():
        statements = [f"DROP DATABASE IF EXISTS {wiki}", f"CREATE DATABASE {wiki}"]
        statements += [f"CREATE TABLE {wiki}.{table[len('CREATE TABLE '):]}" for table in SCHEMA]
        for user_id, name, registered, edits, pref in users:
            statements.append(f"INSERT INTO {wiki}.user VALUES ({user_id}, '{name}', '{registered}', {edits})")
            if pref is not None:
                statements.append(f"INSERT INTO {wiki}.user_properties VALUES "
                                  f"({user_id}, 'usecodemirror', '{pref}')")
        mariadb.execute(*statements)


def folder_for(mariadb, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the example folder whose config points its shards at the live server."""
    folder = tmp_path / "mediawiki-users"
    shutil.copytree(EXAMPLE, folder)
    mw_config = tmp_path / "mediawiki-config"
    (mw_config / "dblists").mkdir(parents=True)
    (mw_config / "dblists" / "s1.dblist").write_text("# section s1\nenwiki\ndewiki\n")
    (mw_config / "dblists" / "s2.dblist").write_text("frwiki\n")
    (mw_config / "dblists" / "all.dblist").write_text("enwiki\ndewiki\nfrwiki\n")  # not a shard
    config = yaml.safe_load((folder / "config.yaml").read_text())
    database = config["databases"]["mediawiki"]
    database["mw_config_path"] = str(mw_config)
    database["creds_file"] = str(mariadb.creds_file(tmp_path))
    # Two "shards" on one server, reached through different host names: two pools.
    database["shards"] = {"s1": f"127.0.0.1:{mariadb.port}", "s2": f"localhost:{mariadb.port}"}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder, mw_config


def test_example_folder_per_wiki_over_two_shards(mariadb, tmp_path):
    load_wikis(mariadb)
    folder, _ = folder_for(mariadb, tmp_path)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "reportupdater", "run", str(folder), str(out),
                           "--now", "2025-01-04T02:00"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = out / "codemirror_users"
    assert (report / "enwiki.tsv").read_text() == (
        "date\tedit_bucket\tcodemirror\tusers\n"
        "2025-01-01\t0\tdefault\t1\n"
        "2025-01-01\t1-4\t1\t1\n"
        "2025-01-02\t0\tdefault\t1\n"
        "2025-01-02\t1-4\t1\t1\n"
        "2025-01-02\t100+\t0\t1\n"
        "2025-01-02\t100+\t1\t1\n"
        "2025-01-03\t0\tdefault\t1\n"
        "2025-01-03\t1-4\t1\t1\n"
        "2025-01-03\t100+\t0\t1\n"
        "2025-01-03\t100+\t1\t1\n")
    assert (report / "dewiki.tsv").read_text() == (
        "date\tedit_bucket\tcodemirror\tusers\n"
        "2025-01-01\t5-99\t1\t1\n2025-01-02\t5-99\t1\t1\n2025-01-03\t5-99\t1\t1\n")
    assert (report / "frwiki.tsv").read_text() == (
        "date\tedit_bucket\tcodemirror\tusers\n"
        "2025-01-01\t\t\t\n2025-01-02\t\t\t\n2025-01-03\t\t\t\n")


def test_one_pool_per_server_not_per_wiki(mariadb, tmp_path):
    load_wikis(mariadb)
    folder, _ = folder_for(mariadb, tmp_path)
    loaded = config_stage.load(folder)
    report = loaded.reports["codemirror_users"]
    engine = SqlEngine(loaded)
    start = datetime(2025, 1, 2, tzinfo=UTC)
    interval = Interval(start, datetime(2025, 1, 3, tzinfo=UTC))
    before = _analyst_connections(mariadb)
    try:
        for _ in range(3):
            for wiki in ("enwiki", "dewiki", "frwiki"):
                engine.run(Job(report, interval, (("wiki_db", wiki),)))
        # enwiki and dewiki share s1's pool; frwiki is on s2: two connections, not three.
        assert _analyst_connections(mariadb) - before == 2
    finally:
        engine.close()


def test_wiki_in_no_dblist_fails_only_that_wiki(mariadb, tmp_path):
    load_wikis(mariadb)
    folder, _ = folder_for(mariadb, tmp_path)
    (folder / "wikis.txt").write_text("enwiki\nnosuchwiki\n")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "reportupdater", "run", str(folder), str(out),
                           "--now", "2025-01-02T02:00"], capture_output=True, text=True)
    assert done.returncode == 1
    assert "'nosuchwiki' is in no dblists/s*.dblist" in done.stderr
    assert (out / "codemirror_users" / "enwiki.tsv").exists()
    assert not (out / "codemirror_users" / "nosuchwiki.tsv").exists()


def _analyst_connections(mariadb) -> int:
    return mariadb.execute(
        f"SELECT COUNT(*) FROM information_schema.processlist WHERE user = '{USER}'")[0][0]
