# Fixtures and hooks for every test folder. The helpers are in testkit.py
# (`from testkit import ...`); live servers' fixtures in the conftest.py of
# tests/hive, tests/mariadb and tests/graphite.
#
# The `live` marker: tests that start a real server (Spark Thrift Server,
# MariaDB, carbon + graphite-web) are marked here, at collection, so that
# `pytest -m "not live"` is the fast suite. A test is live when it uses,
# directly or through other fixtures, a fixture defined in one of those
# folders (tests/faults borrows the MariaDB and carbon ones); the pure unit
# tests of those folders are not. A test that starts a server by other means
# says so itself (`@pytest.mark.live`).

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest

import testkit

HERE = Path(__file__).resolve().parent
LIVE_FOLDERS = tuple(HERE / name for name in ("hive", "mariadb", "graphite"))
LIVE_MODULES = (HERE / "live_servers.py", HERE / "live_publish_servers.py")


def _in_live_folder(path: Path) -> bool:
    return path in LIVE_MODULES or any(path.is_relative_to(folder) for folder in LIVE_FOLDERS)


def _uses_live_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)  # the closure of fixtures the test uses
    for definitions in (info.name2fixturedefs.values() if info else ()):
        for definition in definitions:
            try:
                source = inspect.getsourcefile(definition.func)
            except TypeError:  # a built-in
                continue
            if source and _in_live_folder(Path(source).resolve()):
                return True
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _uses_live_fixture(item):
            item.add_marker(pytest.mark.live)


def pytest_configure(config: pytest.Config) -> None:
    # testkit's hang guard prints a stuck call's stacks here: the terminal
    # pytest started on, not the capture pytest discards when the process ends.
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            testkit.hang_report_fd = os.dup(2)


def pytest_unconfigure(config: pytest.Config) -> None:
    if testkit.hang_report_fd is not None:
        os.close(testkit.hang_report_fd)
        testkit.hang_report_fd = None


def pytest_terminal_summary(terminalreporter) -> None:
    calls = testkit.CLI_CALLS
    if calls["in-process"] or calls["subprocess"]:
        terminalreporter.write_line(f"CLI calls through testkit: {calls['in-process']} in-process, "
                                    f"{calls['subprocess']} in a subprocess")
