# A live MariaDB server for the tests in this folder, started once per session.
#
# mariadb-install-db into a temp datadir, then mariadbd bound to 127.0.0.1 on
# a free port with its own socket; stopped by its PID at the end (the launch
# code is tests/live_servers.py, shared with the benchmarks). It never
# touches a system-wide server. Tests skip (with the reason) only when
# mariadbd is not installed; ./run-tests installs it.

from __future__ import annotations

import pytest

from live_servers import MariaDB, mariadb_missing, start_mariadb

PASSWORD = "s3cret-Pa55word"


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory) -> MariaDB:
    reason = mariadb_missing()
    if reason:
        pytest.skip(reason)
    server = start_mariadb(tmp_path_factory.mktemp("mariadb"), PASSWORD,
                           options=["--innodb-buffer-pool-size=64M"])
    try:
        yield server
    finally:
        server.stop()
